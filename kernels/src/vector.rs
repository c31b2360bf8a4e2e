//! f32 vector helpers for the float parts of the forward pass (attention scores and the
//! weighted sum of values), dispatched like the quantized kernels.

use crate::level::KernelLevel;
use crate::types::GgmlType;

/// `Σ a[i] · b[i]`.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_at(crate::active_level(), a, b)
}

/// [`dot_f32`] at an explicit level (which this CPU must support).
pub fn dot_f32_at(level: KernelLevel, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: lengths differ");
    crate::vec_dot_at(
        level,
        GgmlType::F32,
        a.len(),
        bytemuck::cast_slice(a),
        bytemuck::cast_slice(b),
    )
}

/// `y[i] += alpha · x[i]`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_at(crate::active_level(), alpha, x, y)
}

/// [`axpy`] at an explicit level (which this CPU must support). The SIMD versions use fused
/// multiply-adds, so they may differ from the scalar twin in the last bit.
pub fn axpy_at(level: KernelLevel, alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: lengths differ");
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni => {
            // SAFETY: the level is supported, so AVX2 and FMA are present.
            unsafe { axpy_avx2(alpha, x, y) }
        }
        _ => axpy_scalar(alpha, x, y),
    }
}

fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (b, &a) in y.iter_mut().zip(x) {
        *b += alpha * a;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let va = _mm256_set1_ps(alpha);
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= n8 <= len of both slices (equal lengths asserted by the caller).
        unsafe {
            let px = x.as_ptr().add(i);
            let py = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                py,
                _mm256_fmadd_ps(va, _mm256_loadu_ps(px), _mm256_loadu_ps(py)),
            );
        }
    }
    for i in n8..x.len() {
        y[i] = alpha.mul_add(x[i], y[i]);
    }
}
