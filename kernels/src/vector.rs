//! f32 vector helpers (dot product, axpy) and the read-bandwidth probe, dispatched like the
//! quantized kernels. Attention over the KV cache is in `attention`.

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

/// [`axpy`] at an explicit level (which this CPU must support). The AVX2 and higher versions use
/// fused multiply-adds, so they may differ from the scalar twin in the last bit; the SSSE3 one
/// (SSE2 multiply, then add) equals it bit for bit.
pub fn axpy_at(level: KernelLevel, alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: lengths differ");
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2
        | KernelLevel::AvxVnni
        | KernelLevel::Avx512
        | KernelLevel::Avx512Vnni => {
            // SAFETY: the level is supported, so AVX2 and FMA are present.
            unsafe { axpy_avx2(alpha, x, y) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Ssse3 => {
            // SAFETY: the level is supported, so SSE2 is present.
            unsafe { axpy_sse2(alpha, x, y) }
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn axpy_sse2(alpha: f32, x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n4 = x.len() / 4 * 4;
    let va = _mm_set1_ps(alpha);
    for i in (0..n4).step_by(4) {
        // SAFETY: i + 4 <= n4 <= len of both slices (equal lengths asserted by the caller).
        unsafe {
            let px = x.as_ptr().add(i);
            let py = y.as_mut_ptr().add(i);
            _mm_storeu_ps(
                py,
                _mm_add_ps(_mm_loadu_ps(py), _mm_mul_ps(va, _mm_loadu_ps(px))),
            );
        }
    }
    for i in n4..x.len() {
        y[i] += alpha * x[i];
    }
}

/// Asks the CPU to bring every cache line of `data` into its nearest cache, without waiting:
/// for small buffers a step is about to touch whose lines a long stream of weights has
/// evicted (a decode step's KV cache rows are written right after the q, k and v products
/// have streamed megabytes). A hint only: x86 issues one `prefetcht0` per line; other targets
/// do nothing yet.
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        if bytes == 0 {
            return;
        }
        let start = data.as_ptr() as *const i8;
        let first_line = start.wrapping_sub(start as usize % 64);
        let lines = (start as usize % 64 + bytes).div_ceil(64);
        for line in 0..lines {
            // SAFETY: a prefetch never faults and reads nothing into the program; the
            // addresses are the lines `data` overlaps, formed with wrapping arithmetic.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(first_line.wrapping_add(64 * line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Reads every byte of `buf` once, as fast as the level's widest loads allow, and returns a
/// checksum (so the reads cannot be optimised away): the probe behind memory-bandwidth
/// rooflines. Unaligned head and tail bytes are summed one by one. The checksum depends on the
/// level's layout: the x86 SIMD levels (SSSE3 and up) agree with each other, not with the
/// scalar loop.
pub fn stream_read(buf: &[u8]) -> u64 {
    stream_read_at(crate::active_level(), buf)
}

/// [`stream_read`] at an explicit level (which this CPU must support).
pub fn stream_read_at(level: KernelLevel, buf: &[u8]) -> u64 {
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2
        | KernelLevel::AvxVnni
        | KernelLevel::Avx512
        | KernelLevel::Avx512Vnni => {
            // SAFETY: the level is supported, so AVX2 is present.
            unsafe { stream_read_avx2(buf) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Ssse3 => {
            // SAFETY: the level is supported, so SSE2 is present.
            unsafe { stream_read_sse2(buf) }
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

/// The 128-bit twin of `stream_read_avx2`: the same four quarters and 512-byte steps, eight
/// 16-byte accumulators per step. Even accumulators hold the low halves of the AVX2 version's
/// 32-byte lanes and odd ones the high halves, so the checksum is the same.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn stream_read_sse2(buf: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    let quarter = buf.len() / 512 * 128;
    let n = 4 * quarter;
    let mut acc = [_mm_setzero_si128(); 8];
    for i in (0..quarter).step_by(128) {
        for q in 0..4 {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: q * quarter + i + 128 <= n <= buf.len().
                let v = unsafe {
                    _mm_loadu_si128(buf.as_ptr().add(q * quarter + i + 16 * k) as *const __m128i)
                };
                *a = _mm_xor_si128(*a, v);
            }
        }
    }
    let xor4 = |a: &[__m128i]| _mm_xor_si128(_mm_xor_si128(a[0], a[2]), _mm_xor_si128(a[4], a[6]));
    let (low, high) = (xor4(&acc), xor4(&acc[1..]));
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe {
        _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, low);
        _mm_storeu_si128(lanes.as_mut_ptr().add(2) as *mut __m128i, high);
    }
    let tail: u64 = buf[n..].iter().map(|&b| b as u64).sum();
    lanes.iter().fold(tail, |s, &a| s.wrapping_add(a))
}
