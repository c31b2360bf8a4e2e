//! Attention over a KV cache of f32 or f16 rows: the scores `q · k` and the weighted sum of
//! values, accumulated in f32. One body per operation and instruction set, generic over the
//! cache's element type, so the f16 versions equal the f32 ones on widened values bit for bit
//! (the conversions, F16C, FCVTL and the SSSE3 level's integer widening, are exact). The SIMD
//! versions differ from the scalar twins only in the order of the f32 sums (and, with FMA, in
//! rounding once per step); the SSSE3 weighted sum equals its twin bit for bit.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::level::KernelLevel;

/// Element types a KV cache row may have: `f32` and `f16`.
pub trait CacheValue: sealed::Element {}
impl CacheValue for f32 {}
impl CacheValue for f16 {}

pub(crate) mod sealed {
    /// How the kernels read one element type (implemented here for `f32` and `f16` only).
    pub trait Element: Copy + Sync {
        fn widen(self) -> f32;
        /// Eight values at `p` as f32 lanes. Inlined into the AVX2 kernels, whose target
        /// features the intrinsics need.
        ///
        /// # Safety
        /// Eight values readable at `p`; AVX and F16C present.
        #[cfg(target_arch = "x86_64")]
        unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
        /// Four values at `p` as f32 lanes, with SSE2 only (f16 widened exactly without F16C).
        /// Inlined into the SSSE3 kernels.
        ///
        /// # Safety
        /// Four values readable at `p`; SSE2 and SSSE3 present.
        #[cfg(target_arch = "x86_64")]
        unsafe fn load4_sse(p: *const Self) -> std::arch::x86_64::__m128;
        /// Four values at `p` as f32 lanes.
        ///
        /// # Safety
        /// Four values readable at `p`.
        #[cfg(target_arch = "aarch64")]
        unsafe fn load4(p: *const Self) -> std::arch::aarch64::float32x4_t;
    }
}

impl sealed::Element for f32 {
    fn widen(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees eight readable values and AVX.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load4_sse(p: *const f32) -> std::arch::x86_64::__m128 {
        // SAFETY: the caller guarantees four readable values; SSE is baseline on x86-64.
        unsafe { std::arch::x86_64::_mm_loadu_ps(p) }
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> std::arch::aarch64::float32x4_t {
        // SAFETY: the caller guarantees four readable values; NEON is baseline on aarch64.
        unsafe { std::arch::aarch64::vld1q_f32(p) }
    }
}

impl sealed::Element for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees eight readable values (16 bytes) and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load4_sse(p: *const f16) -> std::arch::x86_64::__m128 {
        // SAFETY: the caller guarantees four readable values (8 bytes), SSE2 and SSSE3.
        unsafe { crate::x86::attention_ssse3::load4_f16(p) }
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> std::arch::aarch64::float32x4_t {
        // SAFETY: the caller guarantees four readable values (8 bytes).
        let h = unsafe { std::arch::aarch64::vld1_u16(p as *const u16) };
        let out: std::arch::aarch64::float32x4_t;
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
}

/// Attention scores: `out[p] = scale · Σ_i q[i] · keys[p · stride + i]` for `p < out.len()`.
pub fn dot_rows<T: CacheValue>(q: &[f32], keys: &[T], stride: usize, scale: f32, out: &mut [f32]) {
    dot_rows_at(crate::active_level(), q, keys, stride, scale, out)
}

/// [`dot_rows`] at an explicit level (which this CPU must support).
pub fn dot_rows_at<T: CacheValue>(
    level: KernelLevel,
    q: &[f32],
    keys: &[T],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    if !check_rows("dot_rows", level, out.len(), q.len(), stride, keys.len()) {
        return;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2
        | KernelLevel::AvxVnni
        | KernelLevel::Avx512
        | KernelLevel::Avx512Vnni => {
            // SAFETY: the level is supported, so AVX2, FMA and F16C are present; every row is
            // inside `keys` (checked).
            unsafe { crate::x86::attention_avx2::dot_rows(q, keys, stride, scale, out) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Ssse3 => {
            // SAFETY: the level is supported, so SSE2 and SSSE3 are present; every row is
            // inside `keys` (checked).
            unsafe { crate::x86::attention_ssse3::dot_rows(q, keys, stride, scale, out) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelLevel::Neon | KernelLevel::NeonDotprod => {
            // SAFETY: the level is supported, so NEON is present; every row is inside `keys`
            // (checked).
            unsafe { crate::arm::attention_neon::dot_rows(q, keys, stride, scale, out) }
        }
        _ => {
            for (p, o) in out.iter_mut().enumerate() {
                let k = &keys[p * stride..p * stride + q.len()];
                *o = q.iter().zip(k).map(|(a, b)| a * b.widen()).sum::<f32>() * scale;
            }
        }
    }
}

/// Weighted sum of rows: `out[i] = Σ_p w[p] · values[p · stride + i]` for `p < w.len()`.
pub fn weighted_rows<T: CacheValue>(w: &[f32], values: &[T], stride: usize, out: &mut [f32]) {
    weighted_rows_at(crate::active_level(), w, values, stride, out)
}

/// [`weighted_rows`] at an explicit level (which this CPU must support).
pub fn weighted_rows_at<T: CacheValue>(
    level: KernelLevel,
    w: &[f32],
    values: &[T],
    stride: usize,
    out: &mut [f32],
) {
    out.fill(0.0);
    if !check_rows(
        "weighted_rows",
        level,
        w.len(),
        out.len(),
        stride,
        values.len(),
    ) {
        return;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2
        | KernelLevel::AvxVnni
        | KernelLevel::Avx512
        | KernelLevel::Avx512Vnni => {
            // SAFETY: AVX2, FMA and F16C present (level supported); every row is inside
            // `values` (checked).
            unsafe { crate::x86::attention_avx2::weighted_rows(w, values, stride, out) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Ssse3 => {
            // SAFETY: the level is supported, so SSE2 and SSSE3 are present; every row is
            // inside `values` (checked).
            unsafe { crate::x86::attention_ssse3::weighted_rows(w, values, stride, out) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelLevel::Neon | KernelLevel::NeonDotprod => {
            // SAFETY: the level is supported, so NEON is present; every row is inside
            // `values` (checked).
            unsafe { crate::arm::attention_neon::weighted_rows(w, values, stride, out) }
        }
        _ => {
            for (p, &wp) in w.iter().enumerate() {
                let v = &values[p * stride..p * stride + out.len()];
                for (o, &x) in out.iter_mut().zip(v) {
                    *o += wp * x.widen();
                }
            }
        }
    }
}

/// Checks that `rows` rows of `width` values, `stride` apart, fit in `len` values, and that
/// the level is supported. Returns whether there is anything to do.
fn check_rows(
    name: &str,
    level: KernelLevel,
    rows: usize,
    width: usize,
    stride: usize,
    len: usize,
) -> bool {
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    if rows == 0 {
        return false;
    }
    assert!(stride >= width, "{name}: stride below the row length");
    assert!(
        (rows - 1) * stride + width <= len,
        "{name}: {rows} rows of stride {stride} do not fit in {len} values"
    );
    true
}

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
