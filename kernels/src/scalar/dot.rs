//! Scalar dot products of a weight row with an activation row quantized to the weight type's
//! `vec_dot_type`. The integer sums and float accumulation order follow ggml's generic C kernels
//! (`ggml-cpu/quants.c`, `vec.cpp`), so these are the specification every SIMD kernel is tested
//! against.

use crate::blocks::*;

pub fn f32(x: &[[u8; 4]], y: &[[u8; 4]]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (f32::from_le_bytes(*a) * f32::from_le_bytes(*b)) as f64;
    }
    sum as f32
}

pub fn f16(x: &[F16Bits], y: &[F16Bits]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a.to_f32() * b.to_f32()) as f64;
    }
    sum as f32
}

pub fn bf16(x: &[[u8; 2]], y: &[[u8; 2]]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        let a = bf16_bits_to_f32(u16::from_le_bytes(*a));
        let b = bf16_bits_to_f32(u16::from_le_bytes(*b));
        sum += (a * b) as f64;
    }
    sum as f32
}

pub fn q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut s0 = 0i32;
        let mut s1 = 0i32;
        for j in 0..QK / 2 {
            s0 += ((bx.qs[j] & 0x0F) as i32 - 8) * by.qs[j] as i32;
            s1 += ((bx.qs[j] >> 4) as i32 - 8) * by.qs[j + QK / 2] as i32;
        }
        sumf += (s0 + s1) as f32 * bx.d.to_f32() * by.d.to_f32();
    }
    sumf
}

pub fn q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut s0 = 0i32;
        let mut s1 = 0i32;
        for j in 0..QK / 2 {
            s0 += (bx.qs[j] & 0x0F) as i32 * by.qs[j] as i32;
            s1 += (bx.qs[j] >> 4) as i32 * by.qs[j + QK / 2] as i32;
        }
        sumf += (bx.d.to_f32() * by.d.to_f32()) * (s0 + s1) as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

pub fn q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(bx.qh);
        let mut s0 = 0i32;
        let mut s1 = 0i32;
        for j in 0..QK / 2 {
            let h0 = (((qh >> j) & 1) << 4) as u8;
            let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
            let x0 = ((bx.qs[j] & 0x0F) | h0) as i32 - 16;
            let x1 = ((bx.qs[j] >> 4) | h1) as i32 - 16;
            s0 += x0 * by.qs[j] as i32;
            s1 += x1 * by.qs[j + QK / 2] as i32;
        }
        sumf += (bx.d.to_f32() * by.d.to_f32()) * (s0 + s1) as f32;
    }
    sumf
}

pub fn q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(bx.qh);
        let mut s0 = 0i32;
        let mut s1 = 0i32;
        for j in 0..QK / 2 {
            let h0 = (((qh >> j) & 1) << 4) as u8;
            let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
            s0 += ((bx.qs[j] & 0x0F) | h0) as i32 * by.qs[j] as i32;
            s1 += ((bx.qs[j] >> 4) | h1) as i32 * by.qs[j + QK / 2] as i32;
        }
        sumf += (bx.d.to_f32() * by.d.to_f32()) * (s0 + s1) as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

pub fn q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut s = 0i32;
        for j in 0..QK {
            s += bx.qs[j] as i32 * by.qs[j] as i32;
        }
        sumf += s as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

/// Not a ggml kernel (ggml never multiplies Q8_1 weights); same shape as `q8_0`.
pub fn q8_1(x: &[BlockQ8_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut s = 0i32;
        for j in 0..QK {
            s += bx.qs[j] as i32 * by.qs[j] as i32;
        }
        sumf += s as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

/// Not a ggml kernel (ggml never multiplies Q8_K weights).
pub fn q8_k(x: &[BlockQ8K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut s = 0i32;
        for j in 0..QK_K {
            s += bx.qs[j] as i32 * by.qs[j] as i32;
        }
        sumf += s as f32 * (bx.d() * by.d());
    }
    sumf
}

pub fn q2_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut summs = 0i32;
        for j in 0..16 {
            summs += by.bsum(j) as i32 * (bx.scales[j] >> 4) as i32;
        }
        let dall = by.d() * bx.d.to_f32();
        let dmin = by.d() * bx.dmin.to_f32();
        let mut isum = 0i32;
        let mut is = 0;
        let mut q8 = 0;
        for half in 0..2 {
            let q2 = &bx.qs[32 * half..32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let d = (bx.scales[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = 0i32;
                    for l in 16 * part..16 * part + 16 {
                        isuml += by.qs[q8 + l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                }
                q8 += 32;
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Expands the 256 weights of a Q3_K block to signed levels −4..3.
#[inline(always)]
pub(crate) fn q3_k_levels(b: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    let mut m = 1u8;
    for half in 0..2 {
        let q3 = &b.qs[32 * half..32 * half + 32];
        for (k, shift) in [0u32, 2, 4, 6].into_iter().enumerate() {
            let out = &mut a[128 * half + 32 * k..128 * half + 32 * k + 32];
            for l in 0..32 {
                let low = ((q3[l] >> shift) & 3) as i8;
                out[l] = low - if b.hmask[l] & m != 0 { 0 } else { 4 };
            }
            m <<= 1;
        }
    }
    a
}

/// The 8-lane integer accumulation ggml's generic K-quant kernels use: lane `l` gathers
/// `scale(group) * a[i] * q8[i]` for every `i ≡ l (mod 8)`; `group_len` is 16 or 32.
#[inline(always)]
fn lanes8(
    a: &[i8; QK_K],
    q8: &[i8; QK_K],
    group_len: usize,
    scale: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut acc = [0i32; 8];
    for (g, (ag, qg)) in a
        .chunks_exact(group_len)
        .zip(q8.chunks_exact(group_len))
        .enumerate()
    {
        let s = scale(g);
        for (a8, q8) in ag.chunks_exact(8).zip(qg.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += s * (a8[l] as i16 * q8[l] as i16) as i32;
            }
        }
    }
    acc
}

pub fn q3_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let a = q3_k_levels(bx);
        let scales = q3k_scales(&bx.scales);
        let acc = lanes8(&a, &by.qs, 16, |g| scales[g] as i32 - 32);
        let d = bx.d.to_f32() * by.d();
        for l in 0..8 {
            sums[l] += d * acc[l] as f32;
        }
    }
    sums.iter().fold(0.0f32, |s, v| s + v)
}

/// Unpacked Q4_K/Q5_K scales and mins, 8 each.
#[inline(always)]
pub(crate) fn k4_scales_mins(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = scale_min_k4(j, packed);
    }
    (sc, mn)
}

pub fn q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut a = [0i8; QK_K];
        for j in 0..4 {
            for l in 0..32 {
                a[64 * j + l] = (bx.qs[32 * j + l] & 0xF) as i8;
                a[64 * j + l + 32] = (bx.qs[32 * j + l] >> 4) as i8;
            }
        }
        let (sc, mn) = k4_scales_mins(&bx.scales);
        let mut summ = 0i32;
        for j in 0..16 {
            summ += by.bsum(j) as i32 * mn[j / 2] as i32;
        }
        let acc = lanes8(&a, &by.qs, 32, |g| sc[g] as i32);
        let d = bx.d.to_f32() * by.d();
        for l in 0..8 {
            sums[l] += d * acc[l] as f32;
        }
        let dmin = bx.dmin.to_f32() * by.d();
        sumf -= dmin * summ as f32;
    }
    sums.iter().fold(sumf, |s, v| s + v)
}

pub fn q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut a = [0i8; QK_K];
        for j in 0..4 {
            let (m1, m2) = (1u8 << (2 * j), 2u8 << (2 * j));
            for l in 0..32 {
                let q = bx.qs[32 * j + l];
                let h = bx.qh[l];
                a[64 * j + l] = ((q & 0xF) + if h & m1 != 0 { 16 } else { 0 }) as i8;
                a[64 * j + l + 32] = ((q >> 4) + if h & m2 != 0 { 16 } else { 0 }) as i8;
            }
        }
        let (sc, mn) = k4_scales_mins(&bx.scales);
        let mut summ = 0i32;
        for j in 0..16 {
            summ += by.bsum(j) as i32 * mn[j / 2] as i32;
        }
        let acc = lanes8(&a, &by.qs, 32, |g| sc[g] as i32);
        let d = bx.d.to_f32() * by.d();
        for l in 0..8 {
            sums[l] += d * acc[l] as f32;
        }
        let dmin = bx.dmin.to_f32() * by.d();
        sumf -= dmin * summ as f32;
    }
    sums.iter().fold(sumf, |s, v| s + v)
}

/// Expands the 256 weights of a Q6_K block to signed levels −32..31.
#[inline(always)]
pub(crate) fn q6_k_levels(b: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for half in 0..2 {
        let ql = &b.ql[64 * half..64 * half + 64];
        let qh = &b.qh[32 * half..32 * half + 32];
        let a = &mut a[128 * half..128 * half + 128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

pub fn q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let a = q6_k_levels(bx);
        let acc = lanes8(&a, &by.qs, 16, |g| bx.scales[g] as i32);
        let d = bx.d.to_f32() * by.d();
        for l in 0..8 {
            sums[l] += d * acc[l] as f32;
        }
    }
    sums.iter().fold(0.0f32, |s, v| s + v)
}
