//! AArch64 kernels. (32-bit ARM builds use the scalar kernels.)

pub(crate) mod attention_neon;
mod neon;
pub(crate) mod packed_neon;
pub(crate) mod packed_q4k_neon;
pub(crate) mod packed_q5k_neon;
pub(crate) mod packed_q6k_neon;
pub(crate) mod packed_q8_neon;

use crate::dispatch::KernelTable;
use crate::level::KernelLevel;

/// Replaces the entries of `t` that `level` (NEON or above) has faster kernels for.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    debug_assert!(level >= KernelLevel::Neon && level.is_supported());
    neon::fill(level, t);
}
