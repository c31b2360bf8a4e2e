//! NEON kernels for packed Q4_K (`Q4_Kx8`, see `crate::packed`) times Q8_K activations: rows
//! 0–3 of a group in one accumulator and rows 4–7 in another, row `r` in lane `r % 4`, so no
//! horizontal sums. Per super-block column the 6-bit scales and mins are decoded once for all
//! eight rows and the nibbles are shared by a tile of up to four tokens.
//!
//! Bit-identical to the scalar twin: the per-sub-block byte dots (lane-exact, see `LaneDot`),
//! `isum = Σ scale · dot` and `msum = Σ min · (bsum + bsum)` are exact i32 integers, and the f32
//! step is the twin's two fused multiply-adds in the same order (`vfmsq` is `fma(−a, b, acc)`).
//!
//! Packed Q5_K shares the 128-byte column header and everything but `isum`: `scales_mins`,
//! `min_sums` and `add_super_block` serve `packed_q5k_neon` too.

use std::arch::aarch64::*;
use std::marker::PhantomData;

use super::neon::{f16x8_to_f32, Sdot};
use super::packed_neon::{
    matmul_tiled, store_tile, GroupTile, LaneDot, TileOut, WidenLanes, Q8K_BYTES,
};
use crate::packed::PackedArgs;

/// Bytes of one packed super-block column (8 rows × 256 weights).
const COL_BYTES: usize = 1152;

/// The 6-bit scales and mins of the super-block column at `col` (a Q4_K or Q5_K column, whose
/// first 128 bytes agree): lanes 0..8 of `sc[k]` are sub-block `2k`, rows 0..8, lanes 8..16
/// sub-block `2k + 1`; `mn` likewise.
///
/// # Safety
/// `col` must point at a whole packed column (at least 128 bytes); NEON.
#[inline(always)]
pub(super) unsafe fn scales_mins(col: *const u8) -> ([uint8x16_t; 4], [uint8x16_t; 4]) {
    // SAFETY: bytes 32..128 of the column are read (the caller's column is longer).
    unsafe {
        let m4 = vdupq_n_u8(15);
        let m2 = vdupq_n_u8(3);
        // Sub-block s's top bits are the u32 at 96 + 4s, row r in nibble r: byte 4s + r/2, the
        // low nibble for even r. Interleaving each byte's low and high nibble puts row r of
        // sub-block s at byte 8s + r, the layout of the low bits at 32 + 8s + r.
        let words = [vld1q_u8(col.add(96)), vld1q_u8(col.add(112))];
        let mut sc = [vdupq_n_u8(0); 4];
        let mut mn = [vdupq_n_u8(0); 4];
        for k in 0..4 {
            let w = words[k / 2];
            let (w_lo, w_hi) = (vandq_u8(w, m4), vshrq_n_u8::<4>(w));
            let top = if k % 2 == 0 {
                vzip1q_u8(w_lo, w_hi)
            } else {
                vzip2q_u8(w_lo, w_hi)
            };
            let low = vld1q_u8(col.add(32 + 16 * k));
            sc[k] = vorrq_u8(vandq_u8(low, m4), vshlq_n_u8::<4>(vandq_u8(top, m2)));
            mn[k] = vorrq_u8(vshrq_n_u8::<4>(low), vshlq_n_u8::<4>(vshrq_n_u8::<2>(top)));
        }
        (sc, mn)
    }
}

/// Rows 0..4 and 4..8 of eight u16 lanes, widened to i32.
#[inline(always)]
pub(super) unsafe fn halves_s32(v: uint16x8_t) -> [int32x4_t; 2] {
    // SAFETY: register-only NEON (the aarch64 baseline).
    unsafe {
        [
            vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(v))),
            vreinterpretq_s32_u32(vmovl_high_u16(v)),
        ]
    }
}

/// `msum = Σ_s min_s · (bsum_2s + bsum_2s+1)` of each token's Q8_K block `blk[t]`, rows 0..4
/// and 4..8; every product and sum is exact in i32 (|min| < 64, |bsum| ≤ 16 · 128).
///
/// # Safety
/// `blk[t]` points at a whole Q8_K block (292 bytes); NEON.
#[inline(always)]
pub(super) unsafe fn min_sums<const T: usize>(
    mn: &[uint8x16_t; 4],
    blk: &[*const u8; T],
) -> [[int32x4_t; 2]; T] {
    // SAFETY: the 16 bsums sit at bytes 260..292 of each block.
    unsafe {
        let mut msum = [[vdupq_n_s32(0); 2]; T];
        for s in 0..8 {
            let m = vreinterpretq_s16_u16(if s % 2 == 0 {
                vmovl_u8(vget_low_u8(mn[s / 2]))
            } else {
                vmovl_high_u8(mn[s / 2])
            });
            for (t, ms) in msum.iter_mut().enumerate() {
                let bs = blk[t].add(260 + 4 * s) as *const i16;
                let (b0, b1) = (bs.read_unaligned(), bs.add(1).read_unaligned());
                ms[0] = vmlal_n_s16(vmlal_n_s16(ms[0], vget_low_s16(m), b0), vget_low_s16(m), b1);
                ms[1] = vmlal_high_n_s16(vmlal_high_n_s16(ms[1], m, b0), m, b1);
            }
        }
        msum
    }
}

/// The f32 step of one super-block column `col` (`d`, `dmin` in its first 32 bytes) for each
/// token: `acc = fma(−(dmin · d_a), msum, fma(d · d_a, isum, acc))`, the scalar twin's order.
///
/// # Safety
/// `col` points at a packed Q4_K or Q5_K column, `blk[t]` at a Q8_K block; NEON.
#[inline(always)]
pub(super) unsafe fn add_super_block<const T: usize>(
    acc: &mut [[float32x4_t; 2]; T],
    col: *const u8,
    blk: &[*const u8; T],
    isum: &[[int32x4_t; 2]; T],
    msum: &[[int32x4_t; 2]; T],
) {
    // SAFETY: 32 header bytes of the column and 4 bytes (d) of each block are read.
    unsafe {
        let (d_lo, d_hi) = f16x8_to_f32(vld1q_u16(col as *const u16));
        let (dmin_lo, dmin_hi) = f16x8_to_f32(vld1q_u16(col.add(16) as *const u16));
        let (d, dmin) = ([d_lo, d_hi], [dmin_lo, dmin_hi]);
        for t in 0..T {
            let d_a = (blk[t] as *const f32).read_unaligned();
            for h in 0..2 {
                let a = vfmaq_f32(acc[t][h], vmulq_n_f32(d[h], d_a), vcvtq_f32_s32(isum[t][h]));
                acc[t][h] = vfmsq_f32(a, vmulq_n_f32(dmin[h], d_a), vcvtq_f32_s32(msum[t][h]));
            }
        }
    }
}

/// The packed Q4_K kernel with byte dot `D`.
struct Q4K<D>(PhantomData<D>);

impl<D: LaneDot> GroupTile for Q4K<D> {
    const COL_WEIGHTS: usize = 256;
    const COL_BYTES: usize = COL_BYTES;

    #[inline(always)]
    unsafe fn group_tile<const T: usize>(
        args: &PackedArgs<'_>,
        wg: *const u8,
        t0: usize,
        out: &mut TileOut,
    ) {
        let nb = args.n_cols / 256;
        let ab = nb * Q8K_BYTES;
        // SAFETY: super-block column b of the group is 1152 bytes at wg + 1152b; token t's
        // activation row is nb Q8_K blocks of 292 bytes at acts + t·ab (both checked by
        // `matmul_packed_at`), so every load below stays inside them. NEON is the aarch64
        // baseline; `D` needs the caller's features.
        unsafe {
            let m4 = vdupq_n_u8(15);
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for b in 0..nb {
                let col = wg.add(b * COL_BYTES);
                // Q8_K block b of each token: d (f32), 256 quants, 16 bsums (i16).
                let blk: [*const u8; T] =
                    std::array::from_fn(|t| args.acts.as_ptr().add((t0 + t) * ab + b * Q8K_BYTES));
                let (sc, mn) = scales_mins(col);
                let msum = min_sums(&mn, &blk);

                // isum: Σ_s scale_s · Σ_{i∈s} q_i y_i. Chunk j holds sub-block 2j in the low
                // nibbles and 2j + 1 in the high ones; piece k is bytes 4k..4k+4 of each row.
                let mut isum = [[vdupq_n_s32(0); 2]; T];
                for j in 0..4 {
                    let sc_lo = halves_s32(vmovl_u8(vget_low_u8(sc[j])));
                    let sc_hi = halves_s32(vmovl_high_u8(sc[j]));
                    for h in 0..2 {
                        let mut dot_lo = [vdupq_n_s32(0); T];
                        let mut dot_hi = [vdupq_n_s32(0); T];
                        for k in 0..8 {
                            let v = vld1q_u8(col.add(128 + 256 * j + 32 * k + 16 * h));
                            let lo = vreinterpretq_s8_u8(vandq_u8(v, m4));
                            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                            for t in 0..T {
                                let y = blk[t].add(4 + 64 * j + 4 * k);
                                let y_lo = vreinterpretq_s8_u32(vld1q_dup_u32(y as *const u32));
                                let y_hi =
                                    vreinterpretq_s8_u32(vld1q_dup_u32(y.add(32) as *const u32));
                                dot_lo[t] = D::dot(dot_lo[t], lo, y_lo);
                                dot_hi[t] = D::dot(dot_hi[t], hi, y_hi);
                            }
                        }
                        for t in 0..T {
                            let s = vmlaq_s32(isum[t][h], sc_lo[h], dot_lo[t]);
                            isum[t][h] = vmlaq_s32(s, sc_hi[h], dot_hi[t]);
                        }
                    }
                }
                add_super_block(&mut acc, col, &blk, &isum, &msum);
            }
            store_tile(&acc, out);
        }
    }
}

/// Packed Q4_K times Q8_K activations with plain NEON.
///
/// # Safety
/// Arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn matmul_q4_kx8_neon(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON is present (this function's feature).
    unsafe { matmul_tiled::<Q4K<WidenLanes>>(args, out) }
}

/// Packed Q4_K times Q8_K activations with SDOT.
///
/// # Safety
/// The CPU must have the dot-product extension; arguments as for [`matmul_q4_kx8_neon`].
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn matmul_q4_kx8_dotprod(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON and dotprod are present (this function's features).
    unsafe { matmul_tiled::<Q4K<Sdot>>(args, out) }
}
