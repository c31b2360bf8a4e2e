//! x86-64 kernels, one module per instruction set.
//!
//! The AVX-512 levels have their own packed Q4_0 kernels (`packed_avx512`: two 8-row groups per
//! 512-bit vector, `vpmaddubsw` or VNNI `vpdpbusd`) and, with VNNI, a 256-bit `vpdpbusd` packed
//! Q4_K kernel (`packed_avx2::vnni`); everything else reuses the AVX2 kernels (packed Q8_0, Q5_K
//! and Q6_K, `packed_q8_avx2`, `packed_q5k_avx2` and `packed_q6k_avx2`, included). They were written
//! on a machine without AVX-512: their tests run on an emulated Tiger Lake CPU
//! (`tools/avx512-emu/run.sh`, in CI), and `crate::packed` checks them against the scalar twins
//! at start-up before it uses them. Their speed has not been measured.

pub(crate) mod attention_avx2;
mod avx2;
pub(crate) mod packed_avx2;
pub(crate) mod packed_avx512;
pub(crate) mod packed_q5k_avx2;
pub(crate) mod packed_q6k_avx2;
pub(crate) mod packed_q8_avx2;

use crate::dispatch::KernelTable;
use crate::level::KernelLevel;

/// Replaces the entries of `t` that `level` (AVX2 or above) has faster kernels for.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    debug_assert!(level >= KernelLevel::Avx2 && level.is_supported());
    avx2::fill(t);
}
