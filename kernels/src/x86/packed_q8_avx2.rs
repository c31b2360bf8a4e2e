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

column_drivers!(q8_0_column, 32, matmul_q8_0x8);
