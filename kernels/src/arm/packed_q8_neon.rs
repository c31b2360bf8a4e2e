//! NEON kernels for packed Q8_0 (`Q8_0x8`, see `crate::packed`) times Q8_0 activations: rows
//! 0–3 of a group in one accumulator and rows 4–7 in another, row `r` in lane `r % 4`, so no
//! horizontal sums. Chunk `c` of a block column is two 16-byte vectors (rows 0–3 and 4–7, four
//! quants each) against the activation quad `y[4c..4c + 4]` broadcast to every lane; the eight
//! chunks are loaded once and shared by a tile of up to four tokens.
//!
//! Bit-identical to the scalar twin: each row's dot `Σ q · y` over a block is an exact i32
//! (lane-exact byte dots, see `ByteDot`), and the f32 step is the twin's
//! `fma(d_w · d_a, dot, acc)` per block, blocks in order.

use std::arch::aarch64::*;
use std::marker::PhantomData;

use super::neon::{f16x8_to_f32, Dot16, Sdot};
use super::packed_neon::{matmul_tiled, store_tile, GroupTile, TileOut};
use crate::packed::PackedArgs;

/// Bytes of one block column of a packed group (8 scales, 8 chunks of 32 bytes).
const COL_BYTES: usize = 272;

/// Lane-exact byte dot products for full-range i8 operands: once `lanes` is applied, lane `i`
/// holds `Σ_k a[4i+k]·b[4i+k]` summed over every `dot`.
///
/// `LaneDot`'s plain form adds two byte products in i16, which needs weights below 64 in
/// magnitude; Q8_0 weights reach −128, so that sum could be 2 · 128 · 127 = 32512 (and 32768 for
/// an activation of −128, which would wrap). `WidenPairs` never adds products in i16.
trait ByteDot {
    /// Running partial sums.
    type Acc: Copy;

    /// # Safety
    /// Needs the CPU features of the implementation (NEON; NEON + dotprod for `Sdot`).
    unsafe fn zero() -> Self::Acc;

    /// # Safety
    /// As for [`ByteDot::zero`].
    unsafe fn dot(acc: Self::Acc, a: int8x16_t, b: int8x16_t) -> Self::Acc;

    /// # Safety
    /// As for [`ByteDot::zero`].
    unsafe fn lanes(acc: Self::Acc) -> int32x4_t;
}

/// Plain NEON: each byte product (|a·b| ≤ 128 · 128 = 16384, so exact in i16) goes straight into
/// i32 with a pairwise add-accumulate: `acc[0]` gets groups 0 and 1 (two lanes each), `acc[1]`
/// groups 2 and 3; one pairwise add at the end leaves group `i` in lane `i`. Two partial sums of
/// 32 products each stay far inside i32.
struct WidenPairs;

impl ByteDot for WidenPairs {
    type Acc = [int32x4_t; 2];

    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe { [vdupq_n_s32(0); 2] }
    }

    #[inline(always)]
    unsafe fn dot(acc: Self::Acc, a: int8x16_t, b: int8x16_t) -> Self::Acc {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            [vpadalq_s16(acc[0], lo), vpadalq_s16(acc[1], hi)]
        }
    }

    #[inline(always)]
    unsafe fn lanes(acc: Self::Acc) -> int32x4_t {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe { vpaddq_s32(acc[0], acc[1]) }
    }
}

impl ByteDot for Sdot {
    type Acc = int32x4_t;

    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe { vdupq_n_s32(0) }
    }

    #[inline(always)]
    unsafe fn dot(acc: Self::Acc, a: int8x16_t, b: int8x16_t) -> Self::Acc {
        // SAFETY: SDOT sums each 4-byte group into its own lane in i32; callers have dotprod.
        unsafe { <Sdot as Dot16>::dot(acc, a, b) }
    }

    #[inline(always)]
    unsafe fn lanes(acc: Self::Acc) -> int32x4_t {
        acc
    }
}

/// The packed Q8_0 kernel with byte dot `D`.
struct Q8<D>(PhantomData<D>);

impl<D: ByteDot> GroupTile for Q8<D> {
    const COL_WEIGHTS: usize = 32;
    const COL_BYTES: usize = COL_BYTES;

    #[inline(always)]
    unsafe fn group_tile<const T: usize>(
        args: &PackedArgs<'_>,
        wg: *const u8,
        t0: usize,
        out: &mut TileOut,
    ) {
        let nb = args.n_cols / 32;
        let ab = nb * 34;
        // SAFETY: block column b of the group is 272 bytes at wg + 272b; token t's activation
        // block b is 34 bytes at acts + t·ab + 34b and its scale act_d[t·nb + b] (all checked
        // by `matmul_packed_at`). NEON is the aarch64 baseline; `D` needs the caller's features.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for b in 0..nb {
                let col = wg.add(b * COL_BYTES);
                let (d_lo, d_hi) = f16x8_to_f32(vld1q_u16(col as *const u16));
                let y: [*const u8; T] =
                    std::array::from_fn(|t| args.acts.as_ptr().add((t0 + t) * ab + b * 34 + 2));
                for (h, d_w) in [d_lo, d_hi].into_iter().enumerate() {
                    let mut dot = [D::zero(); T];
                    for c in 0..8 {
                        let w = vld1q_s8(col.add(16 + 32 * c + 16 * h) as *const i8);
                        for t in 0..T {
                            let quad = vld1q_dup_u32(y[t].add(4 * c) as *const u32);
                            dot[t] = D::dot(dot[t], w, vreinterpretq_s8_u32(quad));
                        }
                    }
                    for t in 0..T {
                        let d_a = *args.act_d.get_unchecked((t0 + t) * nb + b);
                        let dot = vcvtq_f32_s32(D::lanes(dot[t]));
                        acc[t][h] = vfmaq_f32(acc[t][h], vmulq_n_f32(d_w, d_a), dot);
                    }
                }
            }
            store_tile(&acc, out);
        }
    }
}

/// Packed Q8_0 times Q8_0 activations with plain NEON.
///
/// # Safety
/// Arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn matmul_q8_0x8_neon(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON is present (this function's feature).
    unsafe { matmul_tiled::<Q8<WidenPairs>>(args, out) }
}

/// Packed Q8_0 times Q8_0 activations with SDOT.
///
/// # Safety
/// The CPU must have the dot-product extension; arguments as for [`matmul_q8_0x8_neon`].
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn matmul_q8_0x8_dotprod(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON and dotprod are present (this function's features).
    unsafe { matmul_tiled::<Q8<Sdot>>(args, out) }
}
