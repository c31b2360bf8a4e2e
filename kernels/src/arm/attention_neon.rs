//! NEON attention rows: scores against key rows and weighted sums of value rows, for f32 and
//! f16 caches. One generic body per operation, over how four values are loaded as f32 lanes,
//! so the f16 versions equal the f32 ones on widened values bit for bit (the conversion,
//! FCVTL, is exact). Callers check every row is inside its slice.

use half::f16;
use std::arch::aarch64::*;

/// Four consecutive values of a cache row as f32 lanes.
pub(crate) trait Lanes: Copy {
    /// # Safety
    /// Four values must be readable at `p`.
    unsafe fn load4(p: *const Self) -> float32x4_t;
    fn widen(self) -> f32;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees four readable f32 at p.
        unsafe { vld1q_f32(p) }
    }
    fn widen(self) -> f32 {
        self
    }
}

impl Lanes for f16 {
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> float32x4_t {
        // SAFETY: the caller guarantees four readable f16 (8 bytes) at p.
        let h = unsafe { vld1_u16(p as *const u16) };
        let out: float32x4_t;
        // SAFETY: FCVTL (half to single, exact) is part of base ARMv8 floating point;
        // register-only.
        unsafe {
            std::arch::asm!(
                "fcvtl {o:v}.4s, {h:v}.4h",
                o = out(vreg) out,
                h = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        out
    }
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// `out[p] = scale · Σ_i q[i] · keys[p · stride + i]`.
///
/// # Safety
/// NEON present; rows `0..out.len()` of `stride` hold `q.len()` values inside `keys`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_rows<T: Lanes>(
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
pub(crate) unsafe fn weighted_rows<T: Lanes>(
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
