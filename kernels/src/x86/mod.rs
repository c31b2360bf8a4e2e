//! x86-64 kernels, one module per instruction set.
//!
//! AVX-512 levels currently reuse the AVX2 kernels (no AVX-512 hardware was available to test
//! dedicated ones); the levels exist so the dispatch and `MOE_EDGE_KERNELS` names are stable.

mod avx2;
pub(crate) mod packed_avx2;

use crate::dispatch::KernelTable;
use crate::level::KernelLevel;

/// Replaces the entries of `t` that `level` (AVX2 or above) has faster kernels for.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    debug_assert!(level >= KernelLevel::Avx2 && level.is_supported());
    avx2::fill(t);
}
