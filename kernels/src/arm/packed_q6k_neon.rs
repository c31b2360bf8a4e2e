//! NEON kernels for packed Q6_K (`Q6_Kx8`, see `crate::packed`) times Q8_K activations: rows
//! 0–3 of a group in one accumulator and rows 4–7 in another, row `r` in lane `r % 4`, so the
//! per-row sub-block scales multiply whole vectors and no horizontal sums are needed.
//!
//! Per sub-block of 16 elements and half group (rows 0–3, 4–7), the 16-byte halves of `A`, `B`
//! (low nibbles) and `H` (top bits) rebuild four vectors of 4 rows × 4 quants (0..64), quad `c`
//! holding elements `4c..4c + 4`; each meets the activation quad `y[4c..4c + 4]` broadcast to
//! every lane in a lane-exact byte dot (`LaneDot`; 6-bit weights keep its i16 pair sums exact).
//! The rebuilt quants are shared by a tile of up to four tokens.
//!
//! Bit-identical to the scalar twin: each sub-block's dot starts at `−32 · bsum_s` (the Q8_K
//! block's own 16-element sum), so `isum += scale_s · dot` adds exactly the twin's
//! `scale_s · (dot − 32 · bsum_s)` in i32; the f32 step is its `fma(d · d_a, isum, acc)`.

use std::arch::aarch64::*;
use std::marker::PhantomData;

use super::neon::{f16x8_to_f32, Sdot};
use super::packed_neon::{
    matmul_tiled, store_tile, GroupTile, LaneDot, TileOut, WidenLanes, Q8K_BYTES,
};
use crate::packed::PackedArgs;

/// Bytes of one packed super-block column: 8 `d`, 128 bytes of scales, 16 sub-blocks of 96.
const COL_BYTES: usize = 1680;

/// Row `r`'s quants `4c..4c + 4` of one sub-block, rows 0–3 or 4–7, from the matching 16-byte
/// halves of `A`, `B` and `H`: low nibble from `A` (c = 0, 1) or `B` (c = 2, 3), top two bits
/// from bits `2c..2c + 2` of `H`, moved to bits 4–5.
///
/// # Safety
/// NEON.
#[inline(always)]
unsafe fn six_bit_quads(a: uint8x16_t, b: uint8x16_t, h: uint8x16_t) -> [int8x16_t; 4] {
    // SAFETY: register-only NEON (the aarch64 baseline).
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let m30 = vdupq_n_u8(0x30);
        let q = [
            vorrq_u8(vandq_u8(a, m4), vandq_u8(vshlq_n_u8::<4>(h), m30)),
            vorrq_u8(vshrq_n_u8::<4>(a), vandq_u8(vshlq_n_u8::<2>(h), m30)),
            vorrq_u8(vandq_u8(b, m4), vandq_u8(h, m30)),
            vorrq_u8(vshrq_n_u8::<4>(b), vandq_u8(vshrq_n_u8::<2>(h), m30)),
        ];
        q.map(|v| vreinterpretq_s8_u8(v))
    }
}

/// The packed Q6_K kernel with byte dot `D`.
struct Q6K<D>(PhantomData<D>);

impl<D: LaneDot> GroupTile for Q6K<D> {
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
        // SAFETY: super-block column b of the group is 1680 bytes at wg + 1680b; token t's
        // activation row is nb Q8_K blocks of 292 bytes at acts + t·ab (d at 0, quants at
        // 4..260, bsums at 260..292; both checked by `matmul_packed_at`), so every load below
        // stays inside them. NEON is the aarch64 baseline; `D` needs the caller's features.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for b in 0..nb {
                let col = wg.add(b * COL_BYTES);
                let blk: [*const u8; T] =
                    std::array::from_fn(|t| args.acts.as_ptr().add((t0 + t) * ab + b * Q8K_BYTES));
                let mut isum = [[vdupq_n_s32(0); 2]; T];
                for p in 0..8 {
                    // Row r's i8 scales of sub-blocks 2p and 2p + 1 are bytes 2r and 2r + 1:
                    // the even bytes are sub-block 2p's rows 0..8, the odd ones 2p + 1's.
                    let pair = vld1q_s8(col.add(16 + 16 * p) as *const i8);
                    for (k, rows) in [vuzp1q_s8(pair, pair), vuzp2q_s8(pair, pair)]
                        .into_iter()
                        .enumerate()
                    {
                        let s = 2 * p + k;
                        let wide = vmovl_s8(vget_low_s8(rows));
                        let scale = [vmovl_s16(vget_low_s16(wide)), vmovl_high_s16(wide)];
                        let sub = col.add(144 + 96 * s);
                        for (h, scale_h) in scale.into_iter().enumerate() {
                            let q = six_bit_quads(
                                vld1q_u8(sub.add(16 * h)),
                                vld1q_u8(sub.add(32 + 16 * h)),
                                vld1q_u8(sub.add(64 + 16 * h)),
                            );
                            let mut dot: [int32x4_t; T] = std::array::from_fn(|t| {
                                let bsum = (blk[t].add(260 + 2 * s) as *const i16).read_unaligned();
                                vdupq_n_s32(-32 * bsum as i32)
                            });
                            for (c, q_c) in q.into_iter().enumerate() {
                                for t in 0..T {
                                    let y = blk[t].add(4 + 16 * s + 4 * c) as *const u32;
                                    let quad = vreinterpretq_s8_u32(vld1q_dup_u32(y));
                                    dot[t] = D::dot(dot[t], q_c, quad);
                                }
                            }
                            for t in 0..T {
                                isum[t][h] = vmlaq_s32(isum[t][h], scale_h, dot[t]);
                            }
                        }
                    }
                }
                let (d_lo, d_hi) = f16x8_to_f32(vld1q_u16(col as *const u16));
                for t in 0..T {
                    let d_a = (blk[t] as *const f32).read_unaligned();
                    for (h, d) in [d_lo, d_hi].into_iter().enumerate() {
                        let isum = vcvtq_f32_s32(isum[t][h]);
                        acc[t][h] = vfmaq_f32(acc[t][h], vmulq_n_f32(d, d_a), isum);
                    }
                }
            }
            store_tile(&acc, out);
        }
    }
}

/// Packed Q6_K times Q8_K activations with plain NEON.
///
/// # Safety
/// Arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn matmul_q6_kx8_neon(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON is present (this function's feature).
    unsafe { matmul_tiled::<Q6K<WidenLanes>>(args, out) }
}

/// Packed Q6_K times Q8_K activations with SDOT.
///
/// # Safety
/// The CPU must have the dot-product extension; arguments as for [`matmul_q6_kx8_neon`].
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn matmul_q6_kx8_dotprod(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON and dotprod are present (this function's features).
    unsafe { matmul_tiled::<Q6K<Sdot>>(args, out) }
}
