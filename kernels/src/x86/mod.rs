//! x86-64 kernels, one module per instruction set.
//!
//! The AVX-VNNI level stamps the packed Q4_0 and Q4_K kernels of `packed_avx2` and their prompt
//! kernels (`prompt_q4_0_avx2`, `prompt_q4_k_avx2`) out a second time with the 256-bit
//! `vpdpbusd`; every other kernel of that level is the AVX2 one.
//!
//! The AVX-512 levels have their own packed kernels for every packed type (`packed_avx512` for
//! Q4_0, `packed_q8_avx512`, `packed_q4k_avx512`, `packed_q5k_avx512`, `packed_q6k_avx512`: two
//! 8-row groups per 512-bit vector, `vpmaddubsw` or VNNI `vpdpbusd`); the rest (attention, float
//! products, quantization) reuses the AVX2 kernels. The first of them were written on a machine
//! without AVX-512; all have run natively on an AVX-512 VNNI CPU (AMD EPYC, Zen 5 class) since
//! 2026-12-02. Their tests also run on an emulated Skylake-X (`tools/avx512-emu/run.sh`, in CI),
//! and `crate::packed` checks them against the scalar twins at start-up before it uses them.

/// The drivers around a packed kernel's column function `$column::<T>(args, wg, b, t0, stream,
/// acc)` (column `b` of group `wg` times tokens `t0..t0 + T`, added into `acc`): `group_tile`
/// (one group, a tile of tokens), `one_token` (decode: two far-apart runs of groups walked side by
/// side, column by column, so each thread reads two memory streams) and the public
/// `$matmul(args, out)`. The invoking module defines `COLUMN` (bytes of one column of a group)
/// and has `drive`, `TileFn`, `TOKEN_TILE`, `PackedArgs` and `PACK_ROWS` in scope; `$elems` is
/// the elements per column. An optional `$paired(args, out)` takes products of
/// `packed_avx2::PAIRED_FROM` or more tokens (a two-tokens-per-broadcast prompt kernel).
macro_rules! column_drivers {
    ($column:ident, $elems:expr, $matmul:ident $(, $paired:path)?) => {
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
            $(
                if args.n_tokens >= super::packed_avx2::PAIRED_FROM {
                    // SAFETY: the paired kernel needs AVX2, FMA and F16C (this function's
                    // features); arguments as checked by the caller.
                    return unsafe { $paired(args, out) };
                }
            )?
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

/// The driver around a 512-bit packed kernel's pair function `pair_tile::<T>(args, wg0, wg1,
/// t0, acc)` (groups `wg0` in lanes 0..8 and `wg1` in lanes 8..16, times tokens `t0..t0 + T`):
/// the public `$matmul(args, out)` for 32-element block columns of `COLUMN` bytes. The tile
/// sizes (`[1, 2, 3, 4]` unless given) must be 1..=`TOKEN_TILE`. For a prompt
/// the two groups are adjacent and the 16 results one store (an odd last group masked); for one
/// token they are far apart (`g`, `g + n/2`), two memory streams. The invoking module has
/// `pair_tile`, `COLUMN`, `TileFn`, `TOKEN_TILE`, `PackedArgs` and `PACK_ROWS` in scope.
macro_rules! pair_drivers {
    ($features:literal, $matmul:ident) => {
        pair_drivers!($features, $matmul, [1, 2, 3, 4]);
    };
    ($features:literal, $matmul:ident, [$($tile:literal),+]) => {
        /// The packed weights times the activations, every group and token.
        ///
        /// # Safety
        /// The CPU must have this module's features; arguments as checked by
        /// `crate::packed::matmul_packed_at`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $matmul(args: &PackedArgs<'_>, out: &mut [f32]) {
            let tiles: [TileFn; TOKEN_TILE] = [$(pair_tile::<$tile>),+];
            let group_bytes = args.n_cols / 32 * COLUMN;
            let n_groups = args.w.len() / group_bytes;
            let n_rows = n_groups * PACK_ROWS;
            let mut acc = [_mm512_setzero_ps(); TOKEN_TILE];
            if args.n_tokens == 1 {
                // Decode: group g pairs with g + run, not g + 1, so each thread reads two
                // far-apart streams (as `packed_avx2`'s one-token products do: one stream
                // reads only as fast as a plain one-stream read). The halves are stored
                // apart; an odd last group runs alone in the low lanes.
                let run = n_groups / 2;
                let base = args.w.as_ptr();
                let pairs = (0..run).map(|g| (g, Some(g + run)));
                let last = (n_groups % 2 == 1).then_some((2 * run, None));
                for (g, partner) in pairs.chain(last) {
                    // SAFETY: groups g and `partner` lie inside `w`; the tile kernel needs
                    // this function's features.
                    unsafe {
                        let wg0 = base.add(g * group_bytes);
                        let wg1 = partner.map_or(wg0, |h| base.add(h * group_bytes));
                        pair_tile::<1>(args, wg0, wg1, 0, &mut acc);
                    }
                    let low = _mm512_castps512_ps256(acc[0]);
                    let at = g * PACK_ROWS;
                    // SAFETY: 8 f32 at `at` lie inside `out`.
                    unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), low) };
                    if let Some(h) = partner {
                        let high =
                            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[0])));
                        let at = h * PACK_ROWS;
                        // SAFETY: as above.
                        unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), high) };
                    }
                }
                return;
            }
            for g in (0..n_groups).step_by(2) {
                let both = g + 1 < n_groups;
                // SAFETY: groups g and (if `both`) g + 1 lie inside `w`.
                let (wg0, wg1) = unsafe {
                    let wg0 = args.w.as_ptr().add(g * group_bytes);
                    (wg0, if both { wg0.add(group_bytes) } else { wg0 })
                };
                let lanes: __mmask16 = if both { 0xFFFF } else { 0x00FF };
                let mut t0 = 0;
                while t0 < args.n_tokens {
                    let t = TOKEN_TILE.min(args.n_tokens - t0);
                    // SAFETY: tokens t0..t0 + t exist; the tile kernels need this
                    // function's features.
                    unsafe { tiles[t - 1](args, wg0, wg1, t0, &mut acc) };
                    for (i, a) in acc[..t].iter().enumerate() {
                        let at = (t0 + i) * n_rows + g * PACK_ROWS;
                        let dst = &mut out[at..at + PACK_ROWS * (1 + both as usize)];
                        // SAFETY: dst has 16 f32, or 8 when only the low lanes are stored.
                        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), lanes, *a) };
                    }
                    t0 += t;
                }
            }
        }
    };
}

pub(crate) mod attention_avx2;
pub(crate) mod attention_ssse3;
mod avx2;
pub(crate) mod float_matmul_avx2;
pub(crate) mod packed_avx2;
pub(crate) mod packed_avx512;
pub(crate) mod packed_k_ssse3;
pub(crate) mod packed_q4k_avx512;
pub(crate) mod packed_q5k_avx2;
pub(crate) mod packed_q5k_avx512;
pub(crate) mod packed_q6k_avx2;
pub(crate) mod packed_q6k_avx512;
pub(crate) mod packed_q8_avx2;
pub(crate) mod packed_q8_avx512;
pub(crate) mod packed_ssse3;
pub(crate) mod paired_avx2;
pub(crate) mod prompt_q4_0_avx2;
pub(crate) mod prompt_q4_k_avx2;
pub(crate) mod prompt_q5_k_avx2;
pub(crate) mod prompt_q6_k_avx2;
#[cfg(test)]
pub(crate) mod vnni_emulation;

use crate::dispatch::KernelTable;
use crate::level::KernelLevel;

/// Replaces the entries of `t` that `level` (AVX2 or above) has faster kernels for.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    debug_assert!(level >= KernelLevel::Avx2 && level.is_supported());
    avx2::fill(t);
}
