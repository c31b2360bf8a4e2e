//! Attention over an f16 KV cache: scores against f16 key rows and the weighted sum of f16
//! value rows, accumulated in f32. The same contracts as [`crate::dot_rows`] and
//! [`crate::weighted_rows`]; the SIMD versions convert with F16C (exact, like the scalar
//! twins' `f16::to_f32`) and differ from them only in the order of the f32 sums.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::level::KernelLevel;

/// Rounds `src` to f16 into `dst` (round to nearest even, as ggml's F16C conversion; F16C or
/// the ARM half-precision conversion when present, eight or four values at a time).
pub fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16_row: lengths differ");
    dst.convert_from_f32_slice(src);
}

/// Rounds every value to the nearest f16, kept as f32 (what a product with an f16 operand does
/// to the other operand in ggml).
pub fn round_to_f16(x: &mut [f32]) {
    let mut halves = [f16::ZERO; 64];
    for chunk in x.chunks_mut(64) {
        let h = &mut halves[..chunk.len()];
        h.convert_from_f32_slice(chunk);
        h.convert_to_f32_slice(chunk);
    }
}

/// Attention scores against f16 keys: `out[p] = scale · Σ_i q[i] · keys[p · stride + i]`.
pub fn dot_rows_f16(q: &[f32], keys: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    dot_rows_f16_at(crate::active_level(), q, keys, stride, scale, out)
}

/// [`dot_rows_f16`] at an explicit level (which this CPU must support).
pub fn dot_rows_f16_at(
    level: KernelLevel,
    q: &[f32],
    keys: &[f16],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    if out.is_empty() {
        return;
    }
    assert!(
        stride >= q.len(),
        "dot_rows_f16: stride below the row length"
    );
    assert!(
        (out.len() - 1) * stride + q.len() <= keys.len(),
        "dot_rows_f16: {} rows of stride {stride} do not fit in {} values",
        out.len(),
        keys.len()
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni => {
            // SAFETY: the level is supported, so AVX2, FMA and F16C are present; every row is
            // inside `keys` (checked above).
            unsafe { dot_rows_f16_avx2(q, keys, stride, scale, out) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelLevel::Neon | KernelLevel::NeonDotprod => {
            // SAFETY: the level is supported, so NEON is present; every row is inside `keys`
            // (checked above).
            unsafe { crate::arm::attention_neon::dot_rows(q, keys, stride, scale, out) }
        }
        _ => {
            for (p, o) in out.iter_mut().enumerate() {
                let k = &keys[p * stride..p * stride + q.len()];
                *o = q.iter().zip(k).map(|(a, b)| a * b.to_f32()).sum::<f32>() * scale;
            }
        }
    }
}

/// Weighted sum of f16 rows: `out[i] = Σ_p w[p] · values[p · stride + i]`.
pub fn weighted_rows_f16(w: &[f32], values: &[f16], stride: usize, out: &mut [f32]) {
    weighted_rows_f16_at(crate::active_level(), w, values, stride, out)
}

/// [`weighted_rows_f16`] at an explicit level (which this CPU must support).
pub fn weighted_rows_f16_at(
    level: KernelLevel,
    w: &[f32],
    values: &[f16],
    stride: usize,
    out: &mut [f32],
) {
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    out.fill(0.0);
    if w.is_empty() {
        return;
    }
    assert!(
        stride >= out.len(),
        "weighted_rows_f16: stride below the row length"
    );
    assert!(
        (w.len() - 1) * stride + out.len() <= values.len(),
        "weighted_rows_f16: {} rows of stride {stride} do not fit in {} values",
        w.len(),
        values.len()
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni => {
            // SAFETY: AVX2, FMA and F16C present (level supported); every row is inside
            // `values` (checked above).
            unsafe { weighted_rows_f16_avx2(w, values, stride, out) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelLevel::Neon | KernelLevel::NeonDotprod => {
            // SAFETY: the level is supported, so NEON is present; every row is inside `values`
            // (checked above).
            unsafe { crate::arm::attention_neon::weighted_rows(w, values, stride, out) }
        }
        _ => {
            for (p, &wp) in w.iter().enumerate() {
                let v = &values[p * stride..p * stride + out.len()];
                for (o, &x) in out.iter_mut().zip(v) {
                    *o += wp * x.to_f32();
                }
            }
        }
    }
}

/// Eight f16 values at `p` as f32 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load8_f16(p: *const f16) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 8 readable values at `p` (16 bytes, any alignment).
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_f16_avx2(q: &[f32], keys: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = q.len();
    let n8 = n / 8 * 8;
    let hsum = |v: __m256| {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    };
    let tail =
        |p: usize, s: f32| (n8..n).fold(s, |s, i| s + q[i] * keys[p * stride + i].to_f32()) * scale;
    let rows = out.len();
    let mut p = 0;
    // Four keys at a time share each load of q.
    while p + 4 <= rows {
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..n8).step_by(8) {
            // SAFETY: i + 8 <= n for q; rows p..p+4 hold n values each inside `keys`.
            unsafe {
                let qv = _mm256_loadu_ps(q.as_ptr().add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    let k = load8_f16(keys.as_ptr().add((p + r) * stride + i));
                    *a = _mm256_fmadd_ps(qv, k, *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[p + r] = tail(p + r, hsum(*a));
        }
        p += 4;
    }
    while p < rows {
        let mut acc = _mm256_setzero_ps();
        for i in (0..n8).step_by(8) {
            // SAFETY: as above, for one row.
            unsafe {
                let qv = _mm256_loadu_ps(q.as_ptr().add(i));
                let k = load8_f16(keys.as_ptr().add(p * stride + i));
                acc = _mm256_fmadd_ps(qv, k, acc);
            }
        }
        out[p] = tail(p, hsum(acc));
        p += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_rows_f16_avx2(w: &[f32], values: &[f16], stride: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    const LANES: usize = 64;
    let n = out.len();
    // Columns in register-resident strips of 64, as in the f32 kernel.
    let mut c0 = 0;
    while c0 + LANES <= n {
        let mut acc = [_mm256_setzero_ps(); LANES / 8];
        for (p, &wp) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wp);
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: row p's columns c0..c0+64 are inside `values` (checked by the caller).
                let v = unsafe { load8_f16(values.as_ptr().add(p * stride + c0 + 8 * k)) };
                *a = _mm256_fmadd_ps(wv, v, *a);
            }
        }
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: c0 + 8k + 8 <= n = out.len().
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * k), *a) };
        }
        c0 += LANES;
    }
    for (p, &wp) in w.iter().enumerate() {
        for c in c0..n {
            out[c] = wp.mul_add(values[p * stride + c].to_f32(), out[c]);
        }
    }
}
