//! x86-64 kernels, one module per instruction set.
//!
//! The AVX-512 VNNI level has its own packed Q4_0 / Q4_K kernels (`packed_avx2::vnni`, with
//! `vpdpbusd`; used once they pass a start-up check against the scalar twins, see
//! `crate::packed`); otherwise the AVX-512 levels reuse the AVX2 kernels. No AVX-512 machine was
//! at hand to write and measure dedicated 512-bit kernels on.

pub(crate) mod attention_avx2;
mod avx2;
pub(crate) mod packed_avx2;

use crate::dispatch::KernelTable;
use crate::level::KernelLevel;

/// Replaces the entries of `t` that `level` (AVX2 or above) has faster kernels for.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    debug_assert!(level >= KernelLevel::Avx2 && level.is_supported());
    avx2::fill(t);
}
