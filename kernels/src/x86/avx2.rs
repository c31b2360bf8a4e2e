//! AVX2 + FMA + F16C kernels.
//!
//! Every function here is `#[target_feature(enable = "avx2,fma,f16c")]` and only reached through
//! the AVX2-or-above kernel table, which exists only when run-time detection found those
//! features. Slice lengths are checked by the public API (`lib.rs`) before any call, so the raw
//! block pointers below stay inside their slices: each loop touches blocks `0..n/block_size` of
//! rows that are exactly `row_bytes(n)` long.

use crate::blocks::*;
use crate::dispatch::{KernelTable, TypeKernels};
use crate::types::GgmlType;
use std::arch::x86_64::*;

// ---------------------------------------------------------------------------------------------
// Helpers

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_ps(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn abs_ps(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// Σ x·y over 32 signed bytes, as 8 i32 lanes (x may be any i8; y must not be -128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Packs four vectors of 8 i32 (each within i8 range) into 32 i8 in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_i32x32_to_i8(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    let ab = _mm256_packs_epi32(a, b);
    let cd = _mm256_packs_epi32(c, d);
    let v = _mm256_packs_epi16(ab, cd);
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Round half away from zero (C `roundf`), exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn roundf_ps(x: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
    let frac = abs_ps(_mm256_sub_ps(x, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(x, _mm256_set1_ps(-0.0)));
    _mm256_add_ps(t, _mm256_and_ps(up, one))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 32 readable bytes at p.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: caller guarantees 2 readable bytes at p; F16C is enabled for this function.
    unsafe {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers (byte-identical to the scalar ones)

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0(x: &[f32], y: &mut [u8]) {
    let nb = x.len() / QK;
    assert!(y.len() == nb * 34);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        // SAFETY: xb has 32 floats (4 loads of 8); yb has 34 bytes (2 + 32 stored below).
        unsafe {
            let p = xb.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let m = _mm256_max_ps(
                _mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])),
            );
            let amax = hmax_ps(m);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb[0..2].copy_from_slice(&F16Bits::from_f32(d).0);
            let idv = _mm256_set1_ps(id);
            let q = v.map(|v| _mm256_cvttps_epi32(roundf_ps(_mm256_mul_ps(v, idv))));
            let bytes = pack_i32x32_to_i8(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256(yb.as_mut_ptr().add(2) as *mut __m256i, bytes);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_k(x: &[f32], y: &mut [u8]) {
    assert!(y.len() == x.len() / QK_K * 292);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(292)) {
        // SAFETY: xb has 256 floats (32 loads of 8); yb has 292 bytes: d at 0..4, qs at 4..260
        // (8 stores of 32), bsums at 260..292.
        unsafe {
            let p = xb.as_ptr();
            let mut m = _mm256_setzero_ps();
            for i in 0..32 {
                m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(p.add(8 * i))));
            }
            let amax = hmax_ps(m);
            if amax == 0.0 {
                yb.fill(0);
                continue;
            }
            let max = *xb.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
            let iscale = -127.0f32 / max;
            let iv = _mm256_set1_ps(iscale);
            let cap = _mm256_set1_epi32(127);
            for c in 0..8 {
                let q: [__m256i; 4] = std::array::from_fn(|k| {
                    let v = _mm256_mul_ps(iv, _mm256_loadu_ps(p.add(32 * c + 8 * k)));
                    _mm256_min_epi32(_mm256_cvtps_epi32(v), cap)
                });
                let s0 = hsum_epi32(_mm256_add_epi32(q[0], q[1])) as i16;
                let s1 = hsum_epi32(_mm256_add_epi32(q[2], q[3])) as i16;
                yb[260 + 4 * c..262 + 4 * c].copy_from_slice(&s0.to_le_bytes());
                yb[262 + 4 * c..264 + 4 * c].copy_from_slice(&s1.to_le_bytes());
                let bytes = pack_i32x32_to_i8(q[0], q[1], q[2], q[3]);
                _mm256_storeu_si256(yb.as_mut_ptr().add(4 + 32 * c) as *mut __m256i, bytes);
            }
            yb[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_f16(x: &[f32], y: &mut [u8]) {
    assert!(y.len() == 2 * x.len());
    let n8 = x.len() / 8 * 8;
    // SAFETY: i + 8 <= n8 <= x.len(); y has 2 bytes per element.
    unsafe {
        for i in (0..n8).step_by(8) {
            let h =
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
            _mm_storeu_si128(y.as_mut_ptr().add(2 * i) as *mut __m128i, h);
        }
    }
    for i in n8..x.len() {
        y[2 * i..2 * i + 2].copy_from_slice(&F16Bits::from_f32(x[i]).0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_bf16(x: &[f32], y: &mut [u8]) {
    assert!(y.len() == 2 * x.len());
    let n16 = x.len() / 16 * 16;
    // SAFETY: i + 16 <= n16 <= x.len(); y has 2 bytes per element.
    unsafe {
        let abs_mask = _mm256_set1_epi32(0x7fff_ffff);
        let inf = _mm256_set1_epi32(0x7f80_0000);
        let one = _mm256_set1_epi32(1);
        let bias = _mm256_set1_epi32(0x7fff);
        let quiet = _mm256_set1_epi32(64);
        for i in (0..n16).step_by(16) {
            let conv = |u: __m256i| {
                let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(
                    u,
                    _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32::<16>(u), one)),
                ));
                let nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
                let nan_bits = _mm256_or_si256(_mm256_srli_epi32::<16>(u), quiet);
                _mm256_blendv_epi8(rounded, nan_bits, nan)
            };
            let a = conv(_mm256_loadu_si256(x.as_ptr().add(i) as *const __m256i));
            let b = conv(_mm256_loadu_si256(x.as_ptr().add(i + 8) as *const __m256i));
            let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
            _mm256_storeu_si256(y.as_mut_ptr().add(2 * i) as *mut __m256i, packed);
        }
    }
    for i in n16..x.len() {
        y[2 * i..2 * i + 2].copy_from_slice(&f32_to_bf16_bits(x[i]).to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Float dot products

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let (pw, pa) = (w.as_ptr() as *const f32, a.as_ptr() as *const f32);
    let mut acc = [_mm256_setzero_ps(); 4];
    let n32 = n / 32 * 32;
    // SAFETY: every read is below n elements of both rows (checked above); unaligned loads.
    unsafe {
        for i in (0..n32).step_by(32) {
            for k in 0..4 {
                let x = _mm256_loadu_ps(pw.add(i + 8 * k));
                let y = _mm256_loadu_ps(pa.add(i + 8 * k));
                acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
            }
        }
        let mut s = hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        for i in n32..n {
            s += pw.add(i).read_unaligned() * pa.add(i).read_unaligned();
        }
        s
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let (pw, pa) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let n32 = n / 32 * 32;
    // SAFETY: every read is below 2n bytes of both rows (checked above).
    unsafe {
        for i in (0..n32).step_by(32) {
            for k in 0..4 {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(2 * (i + 8 * k)) as *const __m128i));
                let y = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(2 * (i + 8 * k)) as *const __m128i));
                acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
            }
        }
        let mut s = hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        for i in n32..n {
            s += f16_at(pw.add(2 * i)) * f16_at(pa.add(2 * i));
        }
        s
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16x8(p: *const u8) -> __m256 {
    // SAFETY: caller guarantees 16 readable bytes at p.
    unsafe {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let (pw, pa) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let n32 = n / 32 * 32;
    // SAFETY: every read is below 2n bytes of both rows (checked above).
    unsafe {
        for i in (0..n32).step_by(32) {
            for k in 0..4 {
                let x = load_bf16x8(pw.add(2 * (i + 8 * k)));
                let y = load_bf16x8(pa.add(2 * (i + 8 * k)));
                acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
            }
        }
        let mut s = hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        for i in n32..n {
            let x = bf16_bits_to_f32(u16::from_le_bytes([*pw.add(2 * i), *pw.add(2 * i + 1)]));
            let y = bf16_bits_to_f32(u16::from_le_bytes([*pa.add(2 * i), *pa.add(2 * i + 1)]));
            s += x * y;
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Quantized block dot products: `acc += contribution of one weight block · one activation block`.
// Each takes raw block pointers (caller: both blocks are fully inside their rows).

/// Q4_0 · Q8_0 (34-byte activation block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blk_q4_0(w: *const u8, a: *const u8, acc: __m256) -> __m256 {
    // SAFETY: w has 18 bytes (2 + 16 loaded as 128 bits), a has 34 (2 + 32).
    unsafe {
        let raw = _mm_loadu_si128(w.add(2) as *const __m128i);
        let nib = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
        let q = _mm256_sub_epi8(
            _mm256_and_si256(nib, _mm256_set1_epi8(0x0F)),
            _mm256_set1_epi8(8),
        );
        let s = dot_i8(q, load(a.add(2)));
        let d = _mm256_set1_ps(f16_at(w) * f16_at(a));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc)
    }
}

/// Q8_0 · Q8_0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blk_q8_0(w: *const u8, a: *const u8, acc: __m256) -> __m256 {
    // SAFETY: both blocks have 34 bytes (2 + 32).
    unsafe {
        let s = dot_i8(load(w.add(2)), load(a.add(2)));
        let d = _mm256_set1_ps(f16_at(w) * f16_at(a));
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc)
    }
}

/// The 8 scales and 8 mins of a Q4_K/Q5_K block from its 12 packed bytes.
#[inline(always)]
fn k4_unpack(p: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let w = |i: usize| u32::from_le_bytes([p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]]);
    let (u0, u1, u2) = (w(0), w(1), w(2));
    let sc_lo = u0 & 0x3f3f_3f3f;
    let mn_lo = u1 & 0x3f3f_3f3f;
    let sc_hi = (u2 & 0x0f0f_0f0f) | (((u0 >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((u2 >> 4) & 0x0f0f_0f0f) | (((u1 >> 6) & 0x0303_0303) << 4);
    let join = |a: u32, b: u32| {
        let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
        [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
    };
    (join(sc_lo, sc_hi), join(mn_lo, mn_hi))
}

/// −dmin·Σ_j bsums[j]·mins[j/2] folded into `acc` (the min part of Q4_K/Q5_K).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_mins(mins: &[u8; 8], bsums: *const u8, dmin: f32, acc: __m256) -> __m256 {
    // SAFETY: bsums points at the 32 bsum bytes of a Q8_K block.
    unsafe {
        let m16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr() as *const __m128i));
        let m = _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16));
        let prod = _mm256_madd_epi16(m, load(bsums));
        _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc)
    }
}

/// Q4_K · Q8_K.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blk_q4_k(w: *const u8, a: *const u8, acc: __m256) -> __m256 {
    // SAFETY: w is a 144-byte Q4_K block (d, dmin, 12 scale bytes, 128 quant bytes), a a 292-byte
    // Q8_K block (d f32, 256 quants, 32 bsum bytes); all offsets below stay inside them.
    unsafe {
        prefetch_ahead(w, Q4K_PREFETCH);
        let packed: [u8; 12] = *(w.add(4) as *const [u8; 12]);
        let (sc, mn) = k4_unpack(&packed);
        let ad = (a as *const f32).read_unaligned();
        let acc = k_mins(&mn, a.add(260), f16_at(w.add(2)) * ad, acc);
        let lo_mask = _mm256_set1_epi8(0x0F);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let q = load(w.add(16 + 32 * j));
            let lo = _mm256_and_si256(q, lo_mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), lo_mask);
            let p_lo = _mm256_maddubs_epi16(lo, load(a.add(4 + 64 * j)));
            let p_hi = _mm256_maddubs_epi16(hi, load(a.add(4 + 64 * j + 32)));
            sumi = _mm256_add_epi32(
                sumi,
                _mm256_madd_epi16(p_lo, _mm256_set1_epi16(sc[2 * j] as i16)),
            );
            sumi = _mm256_add_epi32(
                sumi,
                _mm256_madd_epi16(p_hi, _mm256_set1_epi16(sc[2 * j + 1] as i16)),
            );
        }
        let d = _mm256_set1_ps(f16_at(w) * ad);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
    }
}

/// Q5_K · Q8_K.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blk_q5_k(w: *const u8, a: *const u8, acc: __m256) -> __m256 {
    // SAFETY: w is a 176-byte Q5_K block (d, dmin, 12 scale bytes, 32 qh bytes at 16, 128 quant
    // bytes at 48), a a 292-byte Q8_K block; all offsets below stay inside them.
    unsafe {
        prefetch_ahead(w, Q5K_PREFETCH);
        let packed: [u8; 12] = *(w.add(4) as *const [u8; 12]);
        let (sc, mn) = k4_unpack(&packed);
        let ad = (a as *const f32).read_unaligned();
        let acc = k_mins(&mn, a.add(260), f16_at(w.add(2)) * ad, acc);
        let lo_mask = _mm256_set1_epi8(0x0F);
        let qh = load(w.add(16));
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let q = load(w.add(48 + 32 * j));
            // Bit 2j of qh is the fifth bit of the low nibbles, bit 2j+1 of the high nibbles.
            let bit_lo = _mm256_set1_epi8(1 << (2 * j));
            let bit_hi = _mm256_set1_epi8((2 << (2 * j)) as u8 as i8);
            let h_lo = _mm256_and_si256(
                _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_lo), bit_lo),
                _mm256_set1_epi8(16),
            );
            let h_hi = _mm256_and_si256(
                _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_hi), bit_hi),
                _mm256_set1_epi8(16),
            );
            let lo = _mm256_or_si256(_mm256_and_si256(q, lo_mask), h_lo);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q), lo_mask), h_hi);
            let p_lo = _mm256_maddubs_epi16(lo, load(a.add(4 + 64 * j)));
            let p_hi = _mm256_maddubs_epi16(hi, load(a.add(4 + 64 * j + 32)));
            sumi = _mm256_add_epi32(
                sumi,
                _mm256_madd_epi16(p_lo, _mm256_set1_epi16(sc[2 * j] as i16)),
            );
            sumi = _mm256_add_epi32(
                sumi,
                _mm256_madd_epi16(p_hi, _mm256_set1_epi16(sc[2 * j + 1] as i16)),
            );
        }
        let d = _mm256_set1_ps(f16_at(w) * ad);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
    }
}

/// Prefetch distances of the K-quant row kernels: 4 blocks ahead in the row. Without them the
/// 4-row matvec streamed weights from memory well below the bandwidth (measured with the divan
/// `matvec_dram` benchmarks).
const Q4K_PREFETCH: usize = 4 * 144;
const Q5K_PREFETCH: usize = 4 * 176;

/// Asks for the 4 cache lines starting `distance` bytes after `w` (the next block's prefetch
/// covers the rest of a block). A prefetch is a hint: past the end of the rows it does nothing,
/// and the address is formed with wrapping arithmetic, so it is never out-of-bounds pointer
/// arithmetic either.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_ahead(w: *const u8, distance: usize) {
    let ahead = w.wrapping_add(distance);
    for line in 0..4 {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line) as *const i8);
    }
}

/// How far ahead of the current Q6_K block its row is prefetched: 4 blocks (840 bytes). Without
/// it the 4-row matvec streamed Q6_K weights from memory at about half the rate of Q4_K/Q5_K.
const Q6K_PREFETCH: usize = 4 * 210;

/// Byte shuffles that cut the scale vector of chunk k (0..4) of a Q6_K half-block out of its 8
/// i16 scales (repeated in both 128-bit lanes): i16 scale 2k across the low lane, 2k+1 across
/// the high lane.
const Q6K_SCALE_PICK: [[u8; 32]; 4] = {
    let mut m = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 32 {
            let scale = 2 * k + i / 16;
            m[k][i] = (2 * scale + i % 2) as u8;
            i += 1;
        }
        k += 1;
    }
    m
};

/// Q6_K · Q8_K: Σ sc·(q−32)·a = Σ sc·q·a − 32·Σ_g sc_g·bsum_g.
///
/// Each 32-byte chunk of quants spans two groups of 16 (one per 128-bit lane), so its scale
/// vector holds sc_g in the low lane and sc_{g+1} in the high lane; it is cut out of the
/// sign-extended scales with one byte shuffle (no trip through memory, no scalar extracts).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blk_q6_k(w: *const u8, a: *const u8, acc: __m256) -> __m256 {
    // SAFETY: w is a 210-byte Q6_K block (ql 0..128, qh 128..192, scales 192..208, d 208..210),
    // a a 292-byte Q8_K block; every load below stays inside them (a shuffle mask is a whole
    // 32-byte row of Q6K_SCALE_PICK). Prefetches may point past the rows: they never fault.
    unsafe {
        // The 4 lines starting Q6K_PREFETCH bytes ahead (the next block's prefetch covers this
        // block's tail). A prefetch is only a hint: past the end of the rows it does nothing.
        prefetch_ahead(w, Q6K_PREFETCH);
        let scales = _mm_loadu_si128(w.add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(scales);
        // Σ sc_g·bsum_g, as 8 i32 lanes (subtracted 32 times at the end).
        let bias = _mm256_madd_epi16(sc16, load(a.add(260)));
        // Scales 0..7 (first half of the block) and 8..15 (second half) as i16 in both lanes.
        let sc_half = [
            _mm256_permute2x128_si256::<0x00>(sc16, sc16),
            _mm256_permute2x128_si256::<0x11>(sc16, sc16),
        ];
        let m4 = _mm256_set1_epi8(0x0F);
        let m30 = _mm256_set1_epi8(0x30);
        let mut sumi = _mm256_setzero_si256();
        for (half, sc) in sc_half.into_iter().enumerate() {
            let ql0 = load(w.add(64 * half));
            let ql1 = load(w.add(64 * half + 32));
            let qh = load(w.add(128 + 32 * half));
            // Bits 2k..2k+1 of qh are bits 4..5 of the quants of chunk k.
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                ),
            ];
            for (k, qk) in q.into_iter().enumerate() {
                let p = _mm256_maddubs_epi16(qk, load(a.add(4 + 128 * half + 32 * k)));
                let pick = _mm256_loadu_si256(Q6K_SCALE_PICK[k].as_ptr() as *const __m256i);
                let s = _mm256_shuffle_epi8(sc, pick);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32::<5>(bias));
        let d = _mm256_set1_ps(f16_at(w.add(208)) * (a as *const f32).read_unaligned());
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
    }
}

// ---------------------------------------------------------------------------------------------
// Row drivers: one row (vec_dot), 4 rows sharing each activation block (matvec), and row groups
// kept in cache while every token streams past them (matmul).

/// Rows processed together by matvec/matmul.
const ROWS: usize = 4;

macro_rules! row_kernels {
    ($dot:ident, $matvec:ident, $matmul:ident, $blk:ident, $wsize:expr, $asize:expr, $bs:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let nb = n / $bs;
            assert!(w.len() >= nb * $wsize && a.len() >= nb * $asize);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                // SAFETY: block b of each row is inside the row (lengths checked above).
                acc = unsafe { $blk(w.as_ptr().add(b * $wsize), a.as_ptr().add(b * $asize), acc) };
            }
            hsum_ps(acc)
        }

        /// `ROWS` rows at `w` (row stride `rb`) against one activation row.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $matvec(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let nb = n / $bs;
            let rb = nb * $wsize;
            assert!(w.len() >= rb * out.len() && a.len() >= nb * $asize);
            let mut groups = out.chunks_exact_mut(ROWS);
            let mut r0 = 0;
            for o in &mut groups {
                let mut acc = [_mm256_setzero_ps(); ROWS];
                for b in 0..nb {
                    // SAFETY: rows r0..r0+ROWS exist (out has a slot for each); block b is inside.
                    unsafe {
                        let pa = a.as_ptr().add(b * $asize);
                        for r in 0..ROWS {
                            acc[r] = $blk(w.as_ptr().add((r0 + r) * rb + b * $wsize), pa, acc[r]);
                        }
                    }
                }
                for r in 0..ROWS {
                    o[r] = hsum_ps(acc[r]);
                }
                r0 += ROWS;
            }
            for (i, o) in groups.into_remainder().iter_mut().enumerate() {
                let row = &w[(r0 + i) * rb..(r0 + i + 1) * rb];
                // SAFETY: same features; one whole row.
                *o = unsafe { $dot(n, row, a) };
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $matmul(n: usize, w: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
            let nb = n / $bs;
            let (rb, ab) = (nb * $wsize, nb * $asize);
            let n_rows = out.len() / n_tokens;
            assert!(w.len() >= rb * n_rows && acts.len() >= ab * n_tokens);
            let mut tmp = [0f32; ROWS];
            // Row groups small enough to stay in L1/L2 while all tokens pass over them.
            for r0 in (0..n_rows).step_by(ROWS) {
                let rows = ROWS.min(n_rows - r0);
                let wg = &w[r0 * rb..(r0 + rows) * rb];
                for t in 0..n_tokens {
                    // SAFETY: same features; `wg` holds `rows` whole rows, one activation row.
                    unsafe { $matvec(n, wg, &acts[t * ab..(t + 1) * ab], &mut tmp[..rows]) };
                    out[t * n_rows + r0..t * n_rows + r0 + rows].copy_from_slice(&tmp[..rows]);
                }
            }
        }
    };
}

row_kernels!(dot_q4_0, matvec_q4_0, matmul_q4_0, blk_q4_0, 18, 34, QK);
row_kernels!(dot_q8_0, matvec_q8_0, matmul_q8_0, blk_q8_0, 34, 34, QK);
row_kernels!(dot_q4_k, matvec_q4_k, matmul_q4_k, blk_q4_k, 144, 292, QK_K);
row_kernels!(dot_q5_k, matvec_q5_k, matmul_q5_k, blk_q5_k, 176, 292, QK_K);
row_kernels!(dot_q6_k, matvec_q6_k, matmul_q6_k, blk_q6_k, 210, 292, QK_K);

/// Installs the AVX2 kernels into `t`.
pub(crate) fn fill(t: &mut KernelTable) {
    fn set(t: &mut KernelTable, ty: GgmlType, f: impl FnOnce(&mut TypeKernels)) {
        f(t.get_mut(ty))
    }
    set(t, GgmlType::Q8_0, |k| {
        k.quantize = quantize_q8_0;
        k.vec_dot = dot_q8_0;
        k.matvec = Some(matvec_q8_0);
        k.matmul = Some(matmul_q8_0);
    });
    set(t, GgmlType::Q8_K, |k| k.quantize = quantize_q8_k);
    use super::float_matmul_avx2::{bf16s, f16s, f32s};
    set(t, GgmlType::F16, |k| {
        k.quantize = quantize_f16;
        k.vec_dot = dot_f16;
        k.matmul = Some(f16s::matmul);
    });
    set(t, GgmlType::BF16, |k| {
        k.quantize = quantize_bf16;
        k.vec_dot = dot_bf16;
        k.matmul = Some(bf16s::matmul);
    });
    set(t, GgmlType::F32, |k| {
        k.vec_dot = dot_f32;
        k.matmul = Some(f32s::matmul);
    });
    set(t, GgmlType::Q4_0, |k| {
        k.vec_dot = dot_q4_0;
        k.matvec = Some(matvec_q4_0);
        k.matmul = Some(matmul_q4_0);
    });
    set(t, GgmlType::Q4_K, |k| {
        k.vec_dot = dot_q4_k;
        k.matvec = Some(matvec_q4_k);
        k.matmul = Some(matmul_q4_k);
    });
    set(t, GgmlType::Q5_K, |k| {
        k.vec_dot = dot_q5_k;
        k.matvec = Some(matvec_q5_k);
        k.matmul = Some(matmul_q5_k);
    });
    set(t, GgmlType::Q6_K, |k| {
        k.vec_dot = dot_q6_k;
        k.matvec = Some(matvec_q6_k);
        k.matmul = Some(matmul_q6_k);
    });
}
