//! SSE attention rows over f32 or f16 cache rows for the `ssse3` level (see `crate::attention`):
//! 128-bit versions of `attention_avx2`. These CPUs have neither FMA nor F16C, so each step is a
//! multiply and an add, and f16 values are widened with integer operations (exactly, as
//! `packed_ssse3::widen_f16`). Callers check every row is inside its slice.

use std::arch::x86_64::*;

use half::f16;

use crate::attention::sealed::Element;

/// Four f16 at `p` as f32 lanes, widened exactly without F16C (`Element::load4_sse` for f16).
///
/// # Safety
/// Four values (8 bytes) readable at `p`; SSE2 and SSSE3 present.
#[inline]
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn load4_f16(p: *const f16) -> __m128 {
    // SAFETY: the caller guarantees 8 readable bytes at `p` and the features `widen_f16` needs.
    unsafe { super::packed_ssse3::widen_f16(_mm_loadl_epi64(p as *const __m128i)) }
}

/// The sum of the four lanes of `v`: `(v0 + v2) + (v1 + v3)`.
#[inline]
#[target_feature(enable = "sse2,ssse3")]
fn hsum(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
}

/// `out[p] = scale · Σ_i q[i] · keys[p · stride + i]`.
///
/// # Safety
/// SSE2 and SSSE3 present; rows `0..out.len()` of `stride` hold `q.len()` values inside `keys`.
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn dot_rows<T: Element>(
    q: &[f32],
    keys: &[T],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let n = q.len();
    let n4 = n / 4 * 4;
    let tail =
        |p: usize, s: f32| (n4..n).fold(s, |s, i| s + q[i] * keys[p * stride + i].widen()) * scale;
    let rows = out.len();
    let mut p = 0;
    // Four keys at a time share each load of q (and give four independent add chains).
    while p + 4 <= rows {
        let mut acc = [_mm_setzero_ps(); 4];
        for i in (0..n4).step_by(4) {
            // SAFETY: i + 4 <= n for q; rows p..p+4 hold n values each inside `keys`; the
            // features `load4_sse` needs are this function's.
            unsafe {
                let qv = _mm_loadu_ps(q.as_ptr().add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    let k = T::load4_sse(keys.as_ptr().add((p + r) * stride + i));
                    *a = _mm_add_ps(*a, _mm_mul_ps(qv, k));
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[p + r] = tail(p + r, hsum(*a));
        }
        p += 4;
    }
    while p < rows {
        let mut acc = _mm_setzero_ps();
        for i in (0..n4).step_by(4) {
            // SAFETY: as above, for one row.
            unsafe {
                let qv = _mm_loadu_ps(q.as_ptr().add(i));
                let k = T::load4_sse(keys.as_ptr().add(p * stride + i));
                acc = _mm_add_ps(acc, _mm_mul_ps(qv, k));
            }
        }
        out[p] = tail(p, hsum(acc));
        p += 1;
    }
}

/// `out[i] = Σ_p w[p] · values[p · stride + i]` (`out` zeroed by the caller). Each column sums
/// its rows in order with a multiply and an add, as the scalar twin does: the results are the
/// twin's bit for bit.
///
/// # Safety
/// SSE2 and SSSE3 present; rows `0..w.len()` of `stride` hold `out.len()` values inside
/// `values`.
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn weighted_rows<T: Element>(
    w: &[f32],
    values: &[T],
    stride: usize,
    out: &mut [f32],
) {
    const VECS: usize = 8;
    let n = out.len();
    // Columns in register-resident strips of 32 (8 of the 16 xmm registers) while every row
    // streams past; then one narrower strip for the remaining whole quads.
    let mut c0 = 0;
    while c0 + 4 * VECS <= n {
        // SAFETY: columns c0..c0+32 are inside `out` and every row (caller's contract).
        unsafe { strip::<T, VECS>(w, values, stride, c0, out) };
        c0 += 4 * VECS;
    }
    let quads = (n - c0) / 4;
    // SAFETY: columns c0..c0 + 4·quads are inside `out` and every row (caller's contract).
    unsafe {
        match quads {
            0 => {}
            1 => strip::<T, 1>(w, values, stride, c0, out),
            2 => strip::<T, 2>(w, values, stride, c0, out),
            3 => strip::<T, 3>(w, values, stride, c0, out),
            4 => strip::<T, 4>(w, values, stride, c0, out),
            5 => strip::<T, 5>(w, values, stride, c0, out),
            6 => strip::<T, 6>(w, values, stride, c0, out),
            _ => strip::<T, 7>(w, values, stride, c0, out),
        }
    }
    for (p, &wp) in w.iter().enumerate() {
        for c in c0 + 4 * quads..n {
            out[c] += wp * values[p * stride + c].widen();
        }
    }
}

/// Columns `c0..c0 + 4V` of [`weighted_rows`], stored into `out`.
///
/// # Safety
/// SSE2 and SSSE3 present; `c0 + 4V <= out.len()`, and rows `0..w.len()` of `stride` hold
/// those columns inside `values`.
#[inline]
#[target_feature(enable = "sse2,ssse3")]
unsafe fn strip<T: Element, const V: usize>(
    w: &[f32],
    values: &[T],
    stride: usize,
    c0: usize,
    out: &mut [f32],
) {
    let mut acc = [_mm_setzero_ps(); V];
    for (p, &wp) in w.iter().enumerate() {
        let wv = _mm_set1_ps(wp);
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: row p's columns c0..c0+4V are inside `values`; this function's features.
            let v = unsafe { T::load4_sse(values.as_ptr().add(p * stride + c0 + 4 * k)) };
            *a = _mm_add_ps(*a, _mm_mul_ps(wv, v));
        }
    }
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: c0 + 4k + 4 <= c0 + 4V <= out.len().
        unsafe { _mm_storeu_ps(out.as_mut_ptr().add(c0 + 4 * k), *a) };
    }
}
