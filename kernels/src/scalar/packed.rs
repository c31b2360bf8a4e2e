//! Scalar twin of the packed (interleaved) kernels: the specification the SIMD versions match
//! bit for bit. See `crate::packed` for the layout and the arithmetic.

use crate::blocks::F16Bits;
use crate::packed::{PackedArgs, PACK_ROWS};

/// The step that adds a block's `scale · dot` to a row's accumulator: one rounding (`fma`,
/// the arithmetic of every level with FMA) or two (`acc + scale · dot`, the SSSE3 level's: CPUs
/// without AVX2 have no FMA, and emulating it exactly would cost more than the dot itself).
#[inline(always)]
fn accumulate<const FUSED: bool>(scale: f32, dot: f32, acc: f32) -> f32 {
    if FUSED {
        scale.mul_add(dot, acc)
    } else {
        acc + scale * dot
    }
}

/// Packed Q4_0 (`Q4_0x8`) times Q8_0 activations.
///
/// # Safety
/// Safe to call with arguments checked by `crate::packed::matmul_packed_at`; `unsafe` only to
/// share the kernel table's function type.
pub(crate) unsafe fn matmul_q4_0x8(args: &PackedArgs<'_>, out: &mut [f32]) {
    q4_0x8::<true>(args, out)
}

/// [`matmul_q4_0x8`] with the unfused accumulate step (the SSSE3 level's twin).
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q4_0x8_unfused(args: &PackedArgs<'_>, out: &mut [f32]) {
    q4_0x8::<false>(args, out)
}

fn q4_0x8<const FUSED: bool>(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 32;
    let group_bytes = nb * 144;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let ab = nb * 34;
    for (g, wg) in args.w.chunks_exact(group_bytes).enumerate() {
        for t in 0..args.n_tokens {
            let act = &args.acts[t * ab..(t + 1) * ab];
            let mut acc = [0f32; PACK_ROWS];
            for b in 0..nb {
                let blk = &wg[b * 144..(b + 1) * 144];
                let y = &act[b * 34 + 2..(b + 1) * 34];
                let d_a = args.act_d[t * nb + b];
                let zero_point = args.act_s[t * nb + b];
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let mut dot = 0i32;
                    for c in 0..4 {
                        for k in 0..4 {
                            let q = blk[16 + 32 * c + 4 * r + k];
                            dot += (q & 0x0F) as i32 * y[4 * c + k] as i8 as i32;
                            dot += (q >> 4) as i32 * y[16 + 4 * c + k] as i8 as i32;
                        }
                    }
                    let d_w = F16Bits([blk[2 * r], blk[2 * r + 1]]).to_f32();
                    *acc_r = accumulate::<FUSED>(d_w * d_a, (dot - zero_point) as f32, *acc_r);
                }
            }
            out[t * n_rows + g * PACK_ROWS..t * n_rows + (g + 1) * PACK_ROWS].copy_from_slice(&acc);
        }
    }
}

/// Packed Q4_K (`Q4_Kx8`) times Q8_K activations.
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q4_kx8(args: &PackedArgs<'_>, out: &mut [f32]) {
    q4_kx8::<true>(args, out)
}

/// [`matmul_q4_kx8`] with the unfused accumulate step (the SSSE3 level's twin).
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q4_kx8_unfused(args: &PackedArgs<'_>, out: &mut [f32]) {
    q4_kx8::<false>(args, out)
}

fn q4_kx8<const FUSED: bool>(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 256;
    let group_bytes = nb * 1152;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let ab = nb * 292;
    for (g, wg) in args.w.chunks_exact(group_bytes).enumerate() {
        for t in 0..args.n_tokens {
            let act = &args.acts[t * ab..(t + 1) * ab];
            let mut acc = [0f32; PACK_ROWS];
            for b in 0..nb {
                let col = &wg[b * 1152..(b + 1) * 1152];
                let a = &act[b * 292..(b + 1) * 292];
                let d_a = f32::from_le_bytes(a[0..4].try_into().expect("4 bytes"));
                let y = &a[4..260];
                let bsum = |i: usize| i16::from_le_bytes([a[260 + 2 * i], a[261 + 2 * i]]) as i32;
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let (mut isum, mut msum) = (0i32, 0i32);
                    for sb in 0..8 {
                        let (j, high) = (sb / 2, sb % 2 == 1);
                        let mut dot = 0i32;
                        for k in 0..8 {
                            for i in 0..4 {
                                let q = col[128 + 256 * j + 32 * k + 4 * r + i];
                                let q = if high { q >> 4 } else { q & 15 };
                                dot += q as i32 * y[32 * sb + 4 * k + i] as i8 as i32;
                            }
                        }
                        let (sc, m) = crate::packed::q4_kx8_scale_min(col, sb, r);
                        isum += sc as i32 * dot;
                        msum += m as i32 * (bsum(2 * sb) + bsum(2 * sb + 1));
                    }
                    let d = F16Bits([col[2 * r], col[2 * r + 1]]).to_f32();
                    let dmin = F16Bits([col[16 + 2 * r], col[17 + 2 * r]]).to_f32();
                    *acc_r = accumulate::<FUSED>(d * d_a, isum as f32, *acc_r);
                    *acc_r = accumulate::<FUSED>(-(dmin * d_a), msum as f32, *acc_r);
                }
            }
            out[t * n_rows + g * PACK_ROWS..t * n_rows + (g + 1) * PACK_ROWS].copy_from_slice(&acc);
        }
    }
}

/// Packed Q6_K (`Q6_Kx8`) times Q8_K activations.
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q6_kx8(args: &PackedArgs<'_>, out: &mut [f32]) {
    q6_kx8::<true>(args, out)
}

/// [`matmul_q6_kx8`] with the unfused accumulate step (the SSSE3 level's twin).
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q6_kx8_unfused(args: &PackedArgs<'_>, out: &mut [f32]) {
    q6_kx8::<false>(args, out)
}

fn q6_kx8<const FUSED: bool>(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 256;
    let group_bytes = nb * 1680;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let ab = nb * 292;
    for (g, wg) in args.w.chunks_exact(group_bytes).enumerate() {
        for t in 0..args.n_tokens {
            let act = &args.acts[t * ab..(t + 1) * ab];
            let mut acc = [0f32; PACK_ROWS];
            for b in 0..nb {
                let col = &wg[b * 1680..(b + 1) * 1680];
                let a = &act[b * 292..(b + 1) * 292];
                let d_a = f32::from_le_bytes(a[0..4].try_into().expect("4 bytes"));
                let y = &a[4..260];
                let bsum = |s: usize| i16::from_le_bytes([a[260 + 2 * s], a[261 + 2 * s]]) as i32;
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let mut isum = 0i32;
                    for s in 0..16 {
                        let sub = &col[144 + 96 * s..144 + 96 * (s + 1)];
                        let mut dot = 0i32;
                        for c in 0..4 {
                            for i in 0..4 {
                                let lo = sub[32 * (c / 2) + 4 * r + i] >> (4 * (c % 2)) & 15;
                                let hi = sub[64 + 4 * r + i] >> (2 * c) & 3;
                                let q = (lo | hi << 4) as i32;
                                dot += q * y[16 * s + 4 * c + i] as i8 as i32;
                            }
                        }
                        let scale = col[16 + 16 * (s / 2) + 2 * r + s % 2] as i8 as i32;
                        isum += scale * (dot - 32 * bsum(s));
                    }
                    let d = F16Bits([col[2 * r], col[2 * r + 1]]).to_f32();
                    *acc_r = accumulate::<FUSED>(d * d_a, isum as f32, *acc_r);
                }
            }
            out[t * n_rows + g * PACK_ROWS..t * n_rows + (g + 1) * PACK_ROWS].copy_from_slice(&acc);
        }
    }
}

/// Packed Q8_0 (`Q8_0x8`) times Q8_0 activations.
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q8_0x8(args: &PackedArgs<'_>, out: &mut [f32]) {
    q8_0x8::<true>(args, out)
}

/// [`matmul_q8_0x8`] with the unfused accumulate step (the SSSE3 level's twin).
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q8_0x8_unfused(args: &PackedArgs<'_>, out: &mut [f32]) {
    q8_0x8::<false>(args, out)
}

fn q8_0x8<const FUSED: bool>(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 32;
    let group_bytes = nb * 272;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let ab = nb * 34;
    for (g, wg) in args.w.chunks_exact(group_bytes).enumerate() {
        for t in 0..args.n_tokens {
            let act = &args.acts[t * ab..(t + 1) * ab];
            let mut acc = [0f32; PACK_ROWS];
            for b in 0..nb {
                let col = &wg[b * 272..(b + 1) * 272];
                let y = &act[b * 34 + 2..(b + 1) * 34];
                let d_a = args.act_d[t * nb + b];
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let mut dot = 0i32;
                    for c in 0..8 {
                        for k in 0..4 {
                            let q = col[16 + 32 * c + 4 * r + k] as i8 as i32;
                            dot += q * y[4 * c + k] as i8 as i32;
                        }
                    }
                    let d_w = F16Bits([col[2 * r], col[2 * r + 1]]).to_f32();
                    *acc_r = accumulate::<FUSED>(d_w * d_a, dot as f32, *acc_r);
                }
            }
            out[t * n_rows + g * PACK_ROWS..t * n_rows + (g + 1) * PACK_ROWS].copy_from_slice(&acc);
        }
    }
}

/// Packed Q5_K (`Q5_Kx8`) times Q8_K activations (Q4_K's arithmetic with 5-bit quants).
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q5_kx8(args: &PackedArgs<'_>, out: &mut [f32]) {
    q5_kx8::<true>(args, out)
}

/// [`matmul_q5_kx8`] with the unfused accumulate step (the SSSE3 level's twin).
///
/// # Safety
/// As for [`matmul_q4_0x8`].
pub(crate) unsafe fn matmul_q5_kx8_unfused(args: &PackedArgs<'_>, out: &mut [f32]) {
    q5_kx8::<false>(args, out)
}

fn q5_kx8<const FUSED: bool>(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 256;
    let group_bytes = nb * 1408;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let ab = nb * 292;
    for (g, wg) in args.w.chunks_exact(group_bytes).enumerate() {
        for t in 0..args.n_tokens {
            let act = &args.acts[t * ab..(t + 1) * ab];
            let mut acc = [0f32; PACK_ROWS];
            for b in 0..nb {
                let col = &wg[b * 1408..(b + 1) * 1408];
                let a = &act[b * 292..(b + 1) * 292];
                let d_a = f32::from_le_bytes(a[0..4].try_into().expect("4 bytes"));
                let y = &a[4..260];
                let bsum = |i: usize| i16::from_le_bytes([a[260 + 2 * i], a[261 + 2 * i]]) as i32;
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let (mut isum, mut msum) = (0i32, 0i32);
                    for sb in 0..8 {
                        let mut dot = 0i32;
                        for c in 0..8 {
                            for i in 0..4 {
                                let (lo_at, lo_shift, hi_at, bit) =
                                    crate::packed::q5_kx8_place(sb, c, r, i);
                                let q =
                                    (col[lo_at] >> lo_shift) & 15 | ((col[hi_at] >> bit) & 1) << 4;
                                dot += q as i32 * y[32 * sb + 4 * c + i] as i8 as i32;
                            }
                        }
                        let (sc, m) = crate::packed::q4_kx8_scale_min(col, sb, r);
                        isum += sc as i32 * dot;
                        msum += m as i32 * (bsum(2 * sb) + bsum(2 * sb + 1));
                    }
                    let d = F16Bits([col[2 * r], col[2 * r + 1]]).to_f32();
                    let dmin = F16Bits([col[16 + 2 * r], col[17 + 2 * r]]).to_f32();
                    *acc_r = accumulate::<FUSED>(d * d_a, isum as f32, *acc_r);
                    *acc_r = accumulate::<FUSED>(-(dmin * d_a), msum as f32, *acc_r);
                }
            }
            out[t * n_rows + g * PACK_ROWS..t * n_rows + (g + 1) * PACK_ROWS].copy_from_slice(&acc);
        }
    }
}
