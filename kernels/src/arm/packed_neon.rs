//! NEON kernels for packed Q4_0 (`Q4_0x8`, see `crate::packed`): rows 0–3 of a group in one
//! accumulator and rows 4–7 in another, row `r` in lane `r % 4`, so no horizontal sums. The
//! nibbles are made signed (`q − 8`) before the byte dot products, so the integer dot equals the
//! scalar twin's `Σ q·y − 8 Σ y` exactly; the f32 step is the same fused multiply-add.
//!
//! Also what the other packed NEON kernels share: the lane-exact byte dot `LaneDot` and the
//! token-tile driver `matmul_tiled`.

use std::arch::aarch64::*;

use super::neon::{f16x8_to_f32, Dot16, Sdot};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Tokens sharing one pass over a group's weights in the tiled kernels (Q4_K, Q5_K, Q6_K, Q8_0):
/// each column is loaded and unpacked once for up to this many tokens.
pub(super) const TOKEN_TILE: usize = 4;

/// Bytes of one Q8_K activation block (the K-quants' `vec_dot_type`): d (f32), 256 quants,
/// 16 sums of 16 quants (i16).
pub(super) const Q8K_BYTES: usize = 292;

/// One tile's results: `[token][row]`.
pub(super) type TileOut = [[f32; PACK_ROWS]; TOKEN_TILE];

/// A packed kernel that multiplies one 8-row group by a tile of 1 to [`TOKEN_TILE`] tokens.
pub(super) trait GroupTile {
    /// Weights per block column (32 or 256) and bytes of one packed column of a group.
    const COL_WEIGHTS: usize;
    const COL_BYTES: usize;

    /// Group `wg` times tokens `t0..t0 + T`: `out[t]` gets token `t0 + t`'s 8 rows.
    ///
    /// # Safety
    /// `wg` points at a whole packed group of `args.n_cols` columns, tokens `t0..t0 + T` exist
    /// in `args.acts` (and their summaries), and the CPU has the implementation's features.
    unsafe fn group_tile<const T: usize>(
        args: &PackedArgs<'_>,
        wg: *const u8,
        t0: usize,
        out: &mut TileOut,
    );
}

/// Stores each token's accumulators (rows 0..4, rows 4..8) into `out[t]`.
///
/// # Safety
/// NEON (the aarch64 baseline).
#[inline(always)]
pub(super) unsafe fn store_tile<const T: usize>(acc: &[[float32x4_t; 2]; T], out: &mut TileOut) {
    for (acc_t, out_t) in acc.iter().zip(out.iter_mut()) {
        // SAFETY: `out_t` holds 8 f32, two stores of 4.
        unsafe {
            vst1q_f32(out_t.as_mut_ptr(), acc_t[0]);
            vst1q_f32(out_t.as_mut_ptr().add(4), acc_t[1]);
        }
    }
}

/// Every group of `args.w` times every token, [`TOKEN_TILE`] tokens at a time.
///
/// # Safety
/// Arguments as checked by `crate::packed::matmul_packed_at` for `K`'s type; the CPU has `K`'s
/// features.
#[inline(always)]
pub(super) unsafe fn matmul_tiled<K: GroupTile>(args: &PackedArgs<'_>, out: &mut [f32]) {
    let group_bytes = args.n_cols / K::COL_WEIGHTS * K::COL_BYTES;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let mut tile = [[0f32; PACK_ROWS]; TOKEN_TILE];
    for g in 0..n_groups {
        // SAFETY: group g lies inside `w` (n_groups whole groups).
        let wg = unsafe { args.w.as_ptr().add(g * group_bytes) };
        let mut t0 = 0;
        while t0 < args.n_tokens {
            let n = TOKEN_TILE.min(args.n_tokens - t0);
            // SAFETY: tokens t0..t0 + n exist; features as the caller's.
            unsafe {
                match n {
                    1 => K::group_tile::<1>(args, wg, t0, &mut tile),
                    2 => K::group_tile::<2>(args, wg, t0, &mut tile),
                    3 => K::group_tile::<3>(args, wg, t0, &mut tile),
                    _ => K::group_tile::<4>(args, wg, t0, &mut tile),
                }
            }
            for (i, rows) in tile[..n].iter().enumerate() {
                let at = (t0 + i) * n_rows + g * PACK_ROWS;
                out[at..at + PACK_ROWS].copy_from_slice(rows);
            }
            t0 += n;
        }
    }
}

/// acc + byte dot products lane by lane: lane `i` gains `Σ_k a[4i+k]·b[4i+k]`. (The row-major
/// kernels' `Widen` only keeps the total right; a packed group needs each lane exact.)
pub(super) trait LaneDot {
    /// # Safety
    /// Needs the CPU features of the implementation (NEON; NEON + dotprod for `Sdot`). `a` holds
    /// weights of magnitude below 64 (`q − 8` ∈ [−8, 7] for Q4_0, `q` ∈ [0, 15] for Q4_K,
    /// [0, 31] for Q5_K, [0, 63] for Q6_K) and `b` any i8, so two adjacent byte products sum to
    /// at most 2·63·128 = 16128 in magnitude and fit an i16. (Full-range Q8_0 weights do not
    /// qualify: see `packed_q8_neon`.)
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Plain NEON: multiply-long, a pairwise add of adjacent products (exact in i16 for the weights
/// `LaneDot` allows), then a pairwise add-accumulate that lands each 4-byte group in its own lane.
pub(super) struct WidenLanes;

impl LaneDot for WidenLanes {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON is the aarch64 baseline.
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(acc, vpaddq_s16(lo, hi))
        }
    }
}

impl LaneDot for Sdot {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: SDOT sums each 4-byte group into its own lane; callers have dotprod.
        unsafe { <Sdot as Dot16>::dot(acc, a, b) }
    }
}

/// One group (`wg`) times one token (`t`): the 8 row results.
#[inline(always)]
unsafe fn group_token<D: LaneDot>(args: &PackedArgs<'_>, wg: *const u8, t: usize) -> [f32; 8] {
    let nb = args.n_cols / 32;
    let ab = nb * 34;
    // SAFETY: block column b of the group is 144 bytes at wg + 144b; the token's activation row
    // has nb blocks of 34 bytes and the scale summary nb entries (checked by
    // `matmul_packed_at`). NEON is the aarch64 baseline; `D` needs the caller's features.
    unsafe {
        let mask = vdupq_n_u8(0x0F);
        let eight = vdupq_n_s8(8);
        let mut acc = [vdupq_n_f32(0.0); 2];
        for b in 0..nb {
            let p = wg.add(b * 144);
            let (d_lo, d_hi) = f16x8_to_f32(vld1q_u16(p as *const u16));
            let y = args.acts.as_ptr().add(t * ab + b * 34 + 2);
            let bc = |o: usize| {
                vreinterpretq_s8_u32(vdupq_n_u32((y.add(o) as *const u32).read_unaligned()))
            };
            let mut dot = [vdupq_n_s32(0); 2];
            for c in 0..4 {
                let (y_lo, y_hi) = (bc(4 * c), bc(16 + 4 * c));
                for (half, d) in dot.iter_mut().enumerate() {
                    let v = vld1q_u8(p.add(16 + 32 * c + 16 * half));
                    let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, mask)), eight);
                    let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight);
                    *d = D::dot(*d, lo, y_lo);
                    *d = D::dot(*d, hi, y_hi);
                }
            }
            let d_a = *args.act_d.get_unchecked(t * nb + b);
            acc[0] = vfmaq_f32(acc[0], vmulq_n_f32(d_lo, d_a), vcvtq_f32_s32(dot[0]));
            acc[1] = vfmaq_f32(acc[1], vmulq_n_f32(d_hi, d_a), vcvtq_f32_s32(dot[1]));
        }
        let mut out = [0f32; 8];
        vst1q_f32(out.as_mut_ptr(), acc[0]);
        vst1q_f32(out.as_mut_ptr().add(4), acc[1]);
        out
    }
}

#[inline(always)]
unsafe fn matmul<D: LaneDot>(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 32;
    let group_bytes = nb * 144;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    for g in 0..n_groups {
        for t in 0..args.n_tokens {
            // SAFETY: group g lies inside `w`; token t exists; features as the caller's.
            let r = unsafe { group_token::<D>(args, args.w.as_ptr().add(g * group_bytes), t) };
            out[t * n_rows + g * PACK_ROWS..t * n_rows + (g + 1) * PACK_ROWS].copy_from_slice(&r);
        }
    }
}

/// Packed Q4_0 times Q8_0 activations with plain NEON.
///
/// # Safety
/// Arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn matmul_q4_0x8_neon(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON is present (this function's feature).
    unsafe { matmul::<WidenLanes>(args, out) }
}

/// Packed Q4_0 times Q8_0 activations with SDOT.
///
/// # Safety
/// The CPU must have the dot-product extension; arguments as for [`matmul_q4_0x8_neon`].
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn matmul_q4_0x8_dotprod(args: &PackedArgs<'_>, out: &mut [f32]) {
    // SAFETY: NEON and dotprod are present (this function's features).
    unsafe { matmul::<Sdot>(args, out) }
}
