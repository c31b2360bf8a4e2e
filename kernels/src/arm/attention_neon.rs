//! NEON attention rows over f32 or f16 cache rows (see `crate::attention`). Callers check
//! every row is inside its slice.

use std::arch::aarch64::*;

use crate::attention::sealed::Element;

/// `out[p] = scale · Σ_i q[i] · keys[p · stride + i]`.
///
/// # Safety
/// NEON present; rows `0..out.len()` of `stride` hold `q.len()` values inside `keys`.
#[target_feature(enable = "neon")]
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
    // Four keys at a time share each load of q.
    while p + 4 <= rows {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for i in (0..n4).step_by(4) {
            // SAFETY: i + 4 <= n for q; rows p..p+4 hold n values each inside `keys`.
            unsafe {
                let qv = vld1q_f32(q.as_ptr().add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    let k = T::load4(keys.as_ptr().add((p + r) * stride + i));
                    *a = vfmaq_f32(*a, qv, k);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[p + r] = tail(p + r, vaddvq_f32(*a));
        }
        p += 4;
    }
    while p < rows {
        let mut acc = vdupq_n_f32(0.0);
        for i in (0..n4).step_by(4) {
            // SAFETY: as above, for one row.
            unsafe {
                let qv = vld1q_f32(q.as_ptr().add(i));
                acc = vfmaq_f32(acc, qv, T::load4(keys.as_ptr().add(p * stride + i)));
            }
        }
        out[p] = tail(p, vaddvq_f32(acc));
        p += 1;
    }
}

/// `out[i] = Σ_p w[p] · values[p · stride + i]` (`out` zeroed by the caller).
///
/// # Safety
/// NEON present; rows `0..w.len()` of `stride` hold `out.len()` values inside `values`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn weighted_rows<T: Element>(
    w: &[f32],
    values: &[T],
    stride: usize,
    out: &mut [f32],
) {
    const LANES: usize = 32;
    let n = out.len();
    // Columns in register-resident strips of 32: the strip's sums stay in 8 registers while
    // every row streams past.
    let mut c0 = 0;
    while c0 + LANES <= n {
        let mut acc = [vdupq_n_f32(0.0); LANES / 4];
        for (p, &wp) in w.iter().enumerate() {
            let wv = vdupq_n_f32(wp);
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: row p's columns c0..c0+32 are inside `values` (caller's contract).
                let v = unsafe { T::load4(values.as_ptr().add(p * stride + c0 + 4 * k)) };
                *a = vfmaq_f32(*a, wv, v);
            }
        }
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: c0 + 4k + 4 <= n = out.len().
            unsafe { vst1q_f32(out.as_mut_ptr().add(c0 + 4 * k), *a) };
        }
        c0 += LANES;
    }
    for (p, &wp) in w.iter().enumerate() {
        for c in c0..n {
            out[c] = wp.mul_add(values[p * stride + c].widen(), out[c]);
        }
    }
}
