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

/// Attention scores: `out[p] = scale · Σ_i q[i] · keys[p · stride + i]` for `p < out.len()`.
pub fn dot_rows(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    dot_rows_at(crate::active_level(), q, keys, stride, scale, out)
}

/// [`dot_rows`] at an explicit level (which this CPU must support).
pub fn dot_rows_at(
    level: KernelLevel,
    q: &[f32],
    keys: &[f32],
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
    assert!(stride >= q.len(), "dot_rows: stride below the row length");
    assert!(
        (out.len() - 1) * stride + q.len() <= keys.len(),
        "dot_rows: {} rows of stride {stride} do not fit in {} values",
        out.len(),
        keys.len()
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni => {
            // SAFETY: AVX2/FMA present (level supported); every row is inside `keys` (checked).
            unsafe { dot_rows_avx2(q, keys, stride, scale, out) }
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
                *o = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
        }
    }
}

/// Weighted sum of rows: `out[i] = Σ_p w[p] · values[p · stride + i]` for `p < w.len()`.
pub fn weighted_rows(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    weighted_rows_at(crate::active_level(), w, values, stride, out)
}

/// [`weighted_rows`] at an explicit level (which this CPU must support).
pub fn weighted_rows_at(
    level: KernelLevel,
    w: &[f32],
    values: &[f32],
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
        "weighted_rows: stride below the row length"
    );
    assert!(
        (w.len() - 1) * stride + out.len() <= values.len(),
        "weighted_rows: {} rows of stride {stride} do not fit in {} values",
        w.len(),
        values.len()
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni => {
            // SAFETY: AVX2/FMA present (level supported); every row is inside `values` (checked).
            unsafe { weighted_rows_avx2(w, values, stride, out) }
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
                    *o += wp * x;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = q.len();
    let n8 = n / 8 * 8;
    let hsum = |v: __m256| {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    };
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
                    let k = _mm256_loadu_ps(keys.as_ptr().add((p + r) * stride + i));
                    *a = _mm256_fmadd_ps(qv, k, *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            let mut s = hsum(*a);
            for i in n8..n {
                s += q[i] * keys[(p + r) * stride + i];
            }
            out[p + r] = s * scale;
        }
        p += 4;
    }
    while p < rows {
        let mut acc = _mm256_setzero_ps();
        for i in (0..n8).step_by(8) {
            // SAFETY: as above, for one row.
            unsafe {
                let qv = _mm256_loadu_ps(q.as_ptr().add(i));
                let k = _mm256_loadu_ps(keys.as_ptr().add(p * stride + i));
                acc = _mm256_fmadd_ps(qv, k, acc);
            }
        }
        let mut s = hsum(acc);
        for i in n8..n {
            s += q[i] * keys[p * stride + i];
        }
        out[p] = s * scale;
        p += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_rows_avx2(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
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
                // SAFETY: row p's columns c0..c0+64 are inside `values` (checked by the caller).
                let v = unsafe { _mm256_loadu_ps(values.as_ptr().add(p * stride + c0 + 8 * k)) };
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
            out[c] = wp.mul_add(values[p * stride + c], out[c]);
        }
    }
}

/// Reads every byte of `buf` once, as fast as the level's widest loads allow, and returns a
/// checksum (so the reads cannot be optimised away): the probe behind memory-bandwidth
/// rooflines. Unaligned head and tail bytes are summed one by one.
pub fn stream_read(buf: &[u8]) -> u64 {
    match crate::active_level() {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni => {
            // SAFETY: the active level is supported, so AVX2 is present.
            unsafe { stream_read_avx2(buf) }
        }
        _ => {
            let mut acc = [0u64; 8];
            let mut chunks = buf.chunks_exact(64);
            for c in &mut chunks {
                for (i, a) in acc.iter_mut().enumerate() {
                    *a ^= u64::from_le_bytes(c[8 * i..8 * i + 8].try_into().expect("8 bytes"));
                }
            }
            let tail: u64 = chunks.remainder().iter().map(|&b| b as u64).sum();
            acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stream_read_avx2(buf: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    // Four quarters read side by side: the probe should find the most the memory gives, and
    // several streams per core draw more than one (two threads here, five alternating runs of
    // the `bench` probe: medians 21.8 GB/s with one stream each, 24.0 with four).
    let quarter = buf.len() / 512 * 128;
    let n = 4 * quarter;
    let mut acc = [_mm256_setzero_si256(); 4];
    for i in (0..quarter).step_by(128) {
        for q in 0..4 {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: q * quarter + i + 128 <= n <= buf.len().
                let v = unsafe {
                    _mm256_loadu_si256(buf.as_ptr().add(q * quarter + i + 32 * k) as *const __m256i)
                };
                *a = _mm256_xor_si256(*a, v);
            }
        }
    }
    let x = _mm256_xor_si256(
        _mm256_xor_si256(acc[0], acc[1]),
        _mm256_xor_si256(acc[2], acc[3]),
    );
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, x) };
    let tail: u64 = buf[n..].iter().map(|&b| b as u64).sum();
    lanes.iter().fold(tail, |s, &a| s.wrapping_add(a))
}
