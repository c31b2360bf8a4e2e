//! x86-64 kernels, one module per instruction set.

use crate::dispatch::KernelTable;
use crate::level::KernelLevel;

/// Replaces the entries of `t` that `level` (AVX2 or above) has faster kernels for.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    let _ = (level, t);
}
