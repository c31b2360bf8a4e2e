//! AArch64 kernels.

use crate::dispatch::KernelTable;
use crate::level::KernelLevel;

/// Replaces the entries of `t` that `level` (NEON or above) has faster kernels for.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    let _ = (level, t);
}
