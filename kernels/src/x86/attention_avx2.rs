//! AVX2 attention rows over f32 or f16 cache rows (see `crate::attention`). Callers check
//! every row is inside its slice.

use std::arch::x86_64::*;

use crate::attention::sealed::Element;

/// `out[p] = scale · Σ_i q[i] · keys[p · stride + i]`.
///
/// # Safety
/// AVX2, FMA and F16C present; rows `0..out.len()` of `stride` hold `q.len()` values inside
/// `keys`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_rows<T: Element>(
    q: &[f32],
    keys: &[T],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let n = q.len();
    let n8 = n / 8 * 8;
    let hsum = |v: __m256| {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    };
    let tail =
        |p: usize, s: f32| (n8..n).fold(s, |s, i| s + q[i] * keys[p * stride + i].widen()) * scale;
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
                    let k = T::load8(keys.as_ptr().add((p + r) * stride + i));
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
                let k = T::load8(keys.as_ptr().add(p * stride + i));
                acc = _mm256_fmadd_ps(qv, k, acc);
            }
        }
        out[p] = tail(p, hsum(acc));
        p += 1;
    }
}

/// `out[i] = Σ_p w[p] · values[p · stride + i]` (`out` zeroed by the caller).
///
/// # Safety
/// AVX2, FMA and F16C present; rows `0..w.len()` of `stride` hold `out.len()` values inside
/// `values`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn weighted_rows<T: Element>(
    w: &[f32],
    values: &[T],
    stride: usize,
    out: &mut [f32],
) {
    const LANES: usize = 64;
    let n = out.len();
    // Columns in register-resident strips of 64: the strip's sums stay in 8 registers while
    // every row streams past.
    let mut c0 = 0;
    while c0 + LANES <= n {
        let mut acc = [_mm256_setzero_ps(); LANES / 8];
        for (p, &wp) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wp);
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: row p's columns c0..c0+64 are inside `values` (caller's contract).
                let v = unsafe { T::load8(values.as_ptr().add(p * stride + c0 + 8 * k)) };
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
            out[c] = wp.mul_add(values[p * stride + c].widen(), out[c]);
        }
    }
}
