//! x86-64 kernels, one module per instruction set.
//!
//! The AVX-512 levels have their own packed Q4_0 kernels (`packed_avx512`: two 8-row groups per
//! 512-bit vector, `vpmaddubsw` or VNNI `vpdpbusd`) and, with VNNI, a 256-bit `vpdpbusd` packed
//! Q4_K kernel (`packed_avx2::vnni`); everything else reuses the AVX2 kernels (packed Q8_0, Q5_K
//! and Q6_K, `packed_q8_avx2`, `packed_q5k_avx2` and `packed_q6k_avx2`, included). They were written
//! on a machine without AVX-512: their tests run on an emulated Tiger Lake CPU
//! (`tools/avx512-emu/run.sh`, in CI), and `crate::packed` checks them against the scalar twins
//! at start-up before it uses them. Their speed has not been measured.

/// The drivers around a packed kernel's column function `$column::<T>(args, wg, b, t0, stream,
/// acc)` (column `b` of group `wg` times tokens `t0..t0 + T`, added into `acc`): `group_tile`
/// (one group, a tile of tokens), `one_token` (decode: two far-apart runs of groups walked side by
/// side, column by column, so each thread reads two memory streams) and the public
/// `$matmul(args, out)`. The invoking module defines `COLUMN` (bytes of one column of a group)
/// and has `drive`, `TileFn`, `TOKEN_TILE`, `PackedArgs` and `PACK_ROWS` in scope; `$elems` is
/// the elements per column.
macro_rules! column_drivers {
    ($column:ident, $elems:expr, $matmul:ident) => {
        /// One group (`wg`, 8 rows) times tokens `t0..t0 + T`.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn group_tile<const T: usize>(
            args: &PackedArgs<'_>,
            wg: *const u8,
            t0: usize,
            acc_out: &mut [__m256; TOKEN_TILE],
        ) {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..args.n_cols / $elems {
                // SAFETY: the caller passes a whole group and tokens t0..t0 + T; same features.
                unsafe { $column::<T>(args, wg, b, t0, t0 == 0, &mut acc) };
            }
            acc_out[..T].copy_from_slice(&acc);
        }

        /// Decode's product: two far-apart runs of groups walked side by side, column by column.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn one_token(args: &PackedArgs<'_>, out: &mut [f32], group_bytes: usize) {
            let n_groups = args.w.len() / group_bytes;
            let run = n_groups / 2;
            let base = args.w.as_ptr();
            for g in 0..run {
                let mut acc = [[_mm256_setzero_ps(); 1]; 2];
                for b in 0..args.n_cols / $elems {
                    for (k, a) in acc.iter_mut().enumerate() {
                        let wg = base.wrapping_add((g + k * run) * group_bytes);
                        // SAFETY: groups g and g + run lie inside `w`; one token; same features.
                        unsafe { $column::<1>(args, wg, b, 0, true, a) };
                    }
                }
                for (k, a) in acc.iter().enumerate() {
                    let at = (g + k * run) * PACK_ROWS;
                    // SAFETY: 8 f32 at `at` lie inside `out` (one per packed row).
                    unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), a[0]) };
                }
            }
            for g in 2 * run..n_groups {
                let mut acc = [_mm256_setzero_ps(); TOKEN_TILE];
                // SAFETY: group g lies inside `w`; same features.
                unsafe { group_tile::<1>(args, base.add(g * group_bytes), 0, &mut acc) };
                let at = g * PACK_ROWS;
                // SAFETY: 8 f32 at `at` lie inside `out`.
                unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), acc[0]) };
            }
        }

        /// The packed weights times the activations, every group and token.
        ///
        /// # Safety
        /// The CPU must have AVX2, FMA and F16C; arguments as checked by
        /// `crate::packed::matmul_packed_at`.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $matmul(args: &PackedArgs<'_>, out: &mut [f32]) {
            let group_bytes = args.n_cols / $elems * COLUMN;
            if args.n_tokens == 1 {
                // SAFETY: same features; arguments as checked by the caller.
                return unsafe { one_token(args, out, group_bytes) };
            }
            let tiles: [TileFn; TOKEN_TILE] = [
                group_tile::<1>,
                group_tile::<2>,
                group_tile::<3>,
                group_tile::<4>,
            ];
            // SAFETY: same features; arguments as checked by the caller.
            unsafe { drive(args, out, group_bytes, tiles) }
        }
    };
}

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
