//! NEON kernels for packed Q5_K (`Q5_Kx8`, see `crate::packed`) times Q8_K activations: Q4_K's
//! arithmetic with 5-bit quants. Rows 0–3 of a group in one accumulator and rows 4–7 in another,
//! row `r` in lane `r % 4`; the 128-byte column header (`d`, `dmin`, 6-bit scales and mins) is
//! Q4_K's and decoded by the same `packed_q4k_neon::scales_mins`, and `msum` and the f32 step
//! are Q4_K's too (`min_sums`, `add_super_block`).
//!
//! Per sub-block of 32 elements and half group (rows 0–3, 4–7), the 16-byte halves of
//! `A0..A3` (low nibbles) and `H` (top bits) rebuild eight vectors of 4 rows × 4 quants (0..32),
//! one at a time to keep registers free. Quad `c` holds elements `4c..4c + 4`: its nibbles are
//! the low (even `c`) or high (odd `c`) halves of `A[c / 2]`, its top bit is bit `c` of `H`. Each
//! meets the activation quad `y[4c..4c + 4]` broadcast to every lane in a lane-exact byte dot
//! (`LaneDot`; 5-bit weights keep its i16 pair sums exact). The rebuilt quants are shared by a
//! tile of up to four tokens.
//!
//! Bit-identical to the scalar twin: every dot, `isum = Σ scale · dot` and `msum` are exact i32
//! integers, and the f32 step is the twin's two fused multiply-adds in order.

use std::arch::aarch64::*;
use std::marker::PhantomData;

use super::neon::Sdot;
use super::packed_neon::{
    matmul_tiled, store_tile, GroupTile, LaneDot, TileOut, WidenLanes, Q8K_BYTES,
};
use super::packed_q4k_neon::{add_super_block, halves_s32, min_sums, scales_mins};
use crate::packed::PackedArgs;

/// Bytes of one packed super-block column: the 128-byte header, 8 sub-blocks of 160.
const COL_BYTES: usize = 1408;

/// Each row's quants `4c..4c + 4` (c in 0..8) of one sub-block, rows 0–3 or 4–7, from the
/// matching 16-byte halves of `A[c / 2]` (low nibbles for even `c`, high for odd) and `H`.
///
/// # Safety
/// NEON.
#[inline(always)]
unsafe fn five_bit_quad(a: uint8x16_t, h: uint8x16_t, c: usize) -> int8x16_t {
    // SAFETY: register-only NEON (the aarch64 baseline).
    unsafe {
        let nibble = if c.is_multiple_of(2) {
            vandq_u8(a, vdupq_n_u8(0x0F))
        } else {
            vshrq_n_u8::<4>(a)
        };
        // Bit c of each byte to bit 4: a shift by 4 − c (negative counts shift right).
        let top = vandq_u8(vshlq_u8(h, vdupq_n_s8(4 - c as i8)), vdupq_n_u8(0x10));
        vreinterpretq_s8_u8(vorrq_u8(nibble, top))
    }
}

/// The packed Q5_K kernel with byte dot `D`.
struct Q5K<D>(PhantomData<D>);

impl<D: LaneDot> GroupTile for Q5K<D> {
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
        // SAFETY: super-block column b of the group is 1408 bytes at wg + 1408b; token t's
        // activation row is nb Q8_K blocks of 292 bytes at acts + t·ab (both checked by
        // `matmul_packed_at`), so every load below stays inside them. NEON is the aarch64
        // baseline; `D` needs the caller's features.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for b in 0..nb {
                let col = wg.add(b * COL_BYTES);
                let blk: [*const u8; T] =
                    std::array::from_fn(|t| args.acts.as_ptr().add((t0 + t) * ab + b * Q8K_BYTES));
                let (sc, mn) = scales_mins(col);
                let msum = min_sums(&mn, &blk);

                // isum: Σ_s scale_s · Σ_{i∈s} q_i y_i; scale_s is in lanes 0..8 (even s) or
                // 8..16 (odd s) of sc[s / 2].
                let mut isum = [[vdupq_n_s32(0); 2]; T];
                for s in 0..8 {
                    let scale = halves_s32(if s % 2 == 0 {
                        vmovl_u8(vget_low_u8(sc[s / 2]))
                    } else {
                        vmovl_high_u8(sc[s / 2])
                    });
                    let sub = col.add(128 + 160 * s);
                    for (h, scale_h) in scale.into_iter().enumerate() {
                        let h_bits = vld1q_u8(sub.add(128 + 16 * h));
                        let mut dot = [vdupq_n_s32(0); T];
                        for c in 0..8 {
                            let a = vld1q_u8(sub.add(32 * (c / 2) + 16 * h));
                            let q_c = five_bit_quad(a, h_bits, c);
                            for t in 0..T {
                                let y = blk[t].add(4 + 32 * s + 4 * c) as *const u32;
                                let quad = vreinterpretq_s8_u32(vld1q_dup_u32(y));
                                dot[t] = D::dot(dot[t], q_c, quad);
                            }
                        }
                        for t in 0..T {
                            isum[t][h] = vmlaq_s32(isum[t][h], scale_h, dot[t]);
                        }
                    }
                }
                add_super_block(&mut acc, col, &blk, &isum, &msum);
            }
            store_tile(&acc, out);
        }
    }
}

/// Packed Q5_K times Q8_K activations with plain NEON.
///
/// # Safety
/// Arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn matmul_q5_kx8_neon(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON is present (this function's feature).
    unsafe { matmul_tiled::<Q5K<WidenLanes>>(args, out) }
}

/// Packed Q5_K times Q8_K activations with SDOT.
///
/// # Safety
/// The CPU must have the dot-product extension; arguments as for [`matmul_q5_kx8_neon`].
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn matmul_q5_kx8_dotprod(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON and dotprod are present (this function's features).
    unsafe { matmul_tiled::<Q5K<Sdot>>(args, out) }
}
