//! AVX2 kernel for packed Q5_K (`Q5_Kx8`, see `crate::packed`) times Q8_K activations: Q4_K's
//! arithmetic (row `r` of an 8-row group in lane `r`, per-row scales and mins from the same
//! column header, decoded by `packed_avx2::avx2::q4_k_header`) with 5-bit quants.
//!
//! Per sub-block of 32 elements, the quants of the 8 rows are rebuilt from four nibble vectors
//! and one vector of top bits into eight vectors of 8 rows × 4 elements. Four `vpmaddubsw`
//! results add in 16 bits without overflow (4 × 2 × 31 × 128 < 2^15; Q4_K's 8 would not), and
//! `vpmaddwd` by the row scales widens them. All integer sums are exact, so the result matches
//! the scalar twin bit for bit.

use std::arch::x86_64::*;

use super::packed_avx2::{avx2::drive, avx2::q4_k_header, TileFn, TOKEN_TILE};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Bytes of one super-block column of a packed group.
const COLUMN: usize = 1408;

/// The top bit `c` (0..8) of each byte of `h`, moved to bit 4 (16-bit shifts; the mask keeps
/// only bits that came from the same byte).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn top_bit(h: __m256i, c: usize) -> __m256i {
    let bit4 = _mm256_set1_epi8(0x10);
    let moved = match c {
        0 => _mm256_slli_epi16::<4>(h),
        1 => _mm256_slli_epi16::<3>(h),
        2 => _mm256_slli_epi16::<2>(h),
        3 => _mm256_slli_epi16::<1>(h),
        4 => h,
        5 => _mm256_srli_epi16::<1>(h),
        6 => _mm256_srli_epi16::<2>(h),
        _ => _mm256_srli_epi16::<3>(h),
    };
    _mm256_and_si256(moved, bit4)
}

/// Super-block column `b` of one Q5_K group (`wg`, 8 rows) times tokens `t0..t0 + T`, added
/// into `acc`; `stream` asks for the next column ahead.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `wg` holds a whole group of `n_cols / 256` columns,
/// `b` is below that count, and tokens `t0..t0 + T` have activation rows and summaries (as
/// checked by `matmul_packed_at`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_column<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    b: usize,
    t0: usize,
    stream: bool,
    acc: &mut [__m256; T],
) {
    let nb = args.n_cols / 256;
    let ab = nb * 292;
    // SAFETY: column b is COLUMN bytes at wg + COLUMN·b; token t's Q8_K block b is 292 bytes at
    // acts + t·ab + 292b, its summaries 4 words at act_s[(t·nb + b)·4]. Prefetches never fault.
    unsafe {
        let col = wg.add(b * COLUMN);
        let next = col.wrapping_add(COLUMN);
        let m4 = _mm256_set1_epi8(0x0F);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(col.add(16) as *const __m128i));
        let (ksc, mn_pairs) = q4_k_header(col);
        let mut isum = [_mm256_setzero_si256(); T];
        for s in 0..8 {
            if stream {
                for line in 0..3 {
                    let at = 160 * s + 64 * line;
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(at) as *const i8);
                }
            }
            let sub = col.add(128 + 160 * s);
            let a: [__m256i; 4] =
                std::array::from_fn(|p| _mm256_loadu_si256(sub.add(32 * p) as *const __m256i));
            let h = _mm256_loadu_si256(sub.add(128) as *const __m256i);
            let q: [__m256i; 8] = std::array::from_fn(|c| {
                let nibble = if c % 2 == 0 {
                    _mm256_and_si256(a[c / 2], m4)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16::<4>(a[c / 2]), m4)
                };
                _mm256_or_si256(nibble, top_bit(h, c))
            });
            for (t, sum) in isum.iter_mut().enumerate() {
                let y = args.acts.as_ptr().add((t0 + t) * ab + b * 292 + 4 + 32 * s);
                let bc =
                    |c: usize| _mm256_set1_epi32((y.add(4 * c) as *const i32).read_unaligned());
                let half = |c0: usize| {
                    let mut x = _mm256_maddubs_epi16(q[c0], bc(c0));
                    for c in c0 + 1..c0 + 4 {
                        x = _mm256_add_epi16(x, _mm256_maddubs_epi16(q[c], bc(c)));
                    }
                    _mm256_madd_epi16(x, ksc[s])
                };
                *sum = _mm256_add_epi32(*sum, _mm256_add_epi32(half(0), half(4)));
            }
        }
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = args.acts.as_ptr().add((t0 + t) * ab + b * 292);
            let da = _mm256_set1_ps((a as *const f32).read_unaligned());
            let pairs = args.act_s.as_ptr().add(((t0 + t) * nb + b) * 4);
            let mut msum = _mm256_setzero_si256();
            for (i, mn) in mn_pairs.iter().enumerate() {
                let pair = _mm256_set1_epi32(*pairs.add(i));
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*mn, pair));
            }
            *acc_t = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(isum[t]), *acc_t);
            *acc_t = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(msum), *acc_t);
        }
    }
}

column_drivers!(
    q5_k_column,
    256,
    matmul_q5_kx8,
    crate::x86::prompt_q5_k_avx2::matmul_tokens
);
