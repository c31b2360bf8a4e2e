//! AVX2 kernel for packed Q8_0 (`Q8_0x8`, see `crate::packed`) times Q8_0 activations: row `r`
//! of an 8-row group in lane `r`, so no horizontal sums.
//!
//! Both operands are signed bytes, so the products go through `vpmaddubsw` as
//! `|w| · sign(y, w)` (exact for every byte: `|w| ≤ 128` fits unsigned, and the activations'
//! quants are within ±127). One `vpmaddubsw` result (two products, at most 2 × 128 × 127) would
//! overflow 16 bits if added to another, so each is widened by `vpmaddwd` before the sum. The
//! integer dot of each row and block is exact, so the result matches the scalar twin bit for bit.

use std::arch::x86_64::*;

use super::packed_avx2::{avx2::drive, TileFn, TOKEN_TILE};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Bytes of one block column of a packed group.
const COLUMN: usize = 272;

/// Software prefetch distance in bytes (about 4 columns).
const PREFETCH_AHEAD: usize = 1088;

/// Block column `b` of one Q8_0 group (`wg`, 8 rows) times tokens `t0..t0 + T`, added into
/// `acc`; `stream` asks for a column ahead.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `wg` holds a whole group of `n_cols / 32` columns, `b`
/// is below that count, and tokens `t0..t0 + T` have activation rows and scales (as checked by
/// `matmul_packed_at`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_column<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    b: usize,
    t0: usize,
    stream: bool,
    acc: &mut [__m256; T],
) {
    let nb = args.n_cols / 32;
    let ab = nb * 34;
    // SAFETY: column b is COLUMN bytes at wg + COLUMN·b; token t's activation block b is 34
    // bytes at acts + t·ab + 34b, its scale at act_d[t·nb + b]. Prefetches never fault.
    unsafe {
        let col = wg.add(b * COLUMN);
        if stream {
            for line in 0..5 {
                let at = PREFETCH_AHEAD + 64 * line;
                _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(at) as *const i8);
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let w: [__m256i; 8] =
            std::array::from_fn(|c| _mm256_loadu_si256(col.add(16 + 32 * c) as *const __m256i));
        let ones = _mm256_set1_epi16(1);
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let tok = t0 + t;
            let y = args.acts.as_ptr().add(tok * ab + b * 34 + 2);
            let mut dot = _mm256_setzero_si256();
            for (c, wc) in w.iter().enumerate() {
                let yc = _mm256_set1_epi32((y.add(4 * c) as *const i32).read_unaligned());
                let p = _mm256_maddubs_epi16(_mm256_abs_epi8(*wc), _mm256_sign_epi8(yc, *wc));
                dot = _mm256_add_epi32(dot, _mm256_madd_epi16(p, ones));
            }
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(*args.act_d.get_unchecked(tok * nb + b)));
            *acc_t = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), *acc_t);
        }
    }
}

/// One Q8_0 group (`wg`, 8 rows) times tokens `t0..t0 + T`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_tile<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    t0: usize,
    acc_out: &mut [__m256; TOKEN_TILE],
) {
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..args.n_cols / 32 {
        // SAFETY: the caller passes a whole group and tokens t0..t0 + T; same features.
        unsafe { q8_0_column::<T>(args, wg, b, t0, t0 == 0, &mut acc) };
    }
    acc_out[..T].copy_from_slice(&acc);
}

/// Decode's product: as for the other packed types, two far-apart runs of groups walked side by
/// side, column by column, so each thread reads two memory streams.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_token(args: &PackedArgs<'_>, out: &mut [f32], group_bytes: usize) {
    let n_groups = args.w.len() / group_bytes;
    let run = n_groups / 2;
    let base = args.w.as_ptr();
    for g in 0..run {
        let mut acc = [[_mm256_setzero_ps(); 1]; 2];
        for b in 0..args.n_cols / 32 {
            for (k, a) in acc.iter_mut().enumerate() {
                let wg = base.wrapping_add((g + k * run) * group_bytes);
                // SAFETY: groups g and g + run lie inside `w`; one token; same features.
                unsafe { q8_0_column::<1>(args, wg, b, 0, true, a) };
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

/// Packed Q8_0 times Q8_0 activations, every group and token.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; arguments as checked by
/// `crate::packed::matmul_packed_at`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn matmul_q8_0x8(args: &PackedArgs<'_>, out: &mut [f32]) {
    let group_bytes = args.n_cols / 32 * COLUMN;
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
