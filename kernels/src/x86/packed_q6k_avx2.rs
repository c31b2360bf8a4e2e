//! AVX2 kernel for packed Q6_K (`Q6_Kx8`, see `crate::packed`) times Q8_K activations: row `r`
//! of an 8-row group in lane `r`, so the per-row sub-block scales multiply whole vectors and no
//! horizontal sums are needed. The AVX2 level uses it; the AVX-512 levels run `packed_q6k_avx512`
//! (the same arithmetic, two groups per vector) unless it fails their start-up check.
//!
//! Per sub-block of 16 elements, the 6-bit quants of the 8 rows are rebuilt from `A`, `B` (low
//! nibbles) and `H` (top bits) into four vectors of 8 rows × 4 elements. `vpmaddubsw` takes them
//! (unsigned, < 64) against broadcast activation quads; two of its 16-bit results add without
//! overflow (4 × 63 × 128 < 2^15), and `vpmaddwd` by the row scales widens each pair sum to 32
//! bits. The `−32` offset of Q6_K is applied once per super-block as
//! `32 · Σ_s scale_s · bsum_s` (one `vpmaddwd` per sub-block pair, from the Q8_K block's own
//! sums). All integer sums are exact, so the result matches the scalar twin bit for bit.

use std::arch::x86_64::*;

use super::packed_avx2::{avx2::drive, TileFn, TOKEN_TILE};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Bytes of one super-block column of a packed group.
const COLUMN: usize = 1680;

/// Byte shuffle that copies the low i16 of each 32-bit lane into both halves.
pub(super) const DUP_EVEN: [u8; 32] = dup_mask(0);
/// Byte shuffle that copies the high i16 of each 32-bit lane into both halves.
pub(super) const DUP_ODD: [u8; 32] = dup_mask(2);

const fn dup_mask(at: u8) -> [u8; 32] {
    let mut m = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        // Within each 128-bit lane (vpshufb works per lane): lane-relative byte indices.
        let lane_base = (i % 16) as u8 / 4 * 4;
        m[i] = lane_base + at + (i % 2) as u8;
        i += 1;
    }
    m
}

/// Sub-block quants at `sub` (96 bytes: low nibbles `A`, `B`, top bits `H`) as four vectors of
/// 8 rows × 4 elements (quads 0..4 of the sub-block), unsigned 6-bit. Shared with
/// `prompt_q6_k_avx2`.
///
/// # Safety
/// The CPU must have AVX2; 96 bytes readable at `sub`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q6_k_quads(sub: *const u8) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    // SAFETY: the caller's bound.
    let (va, vb, vh) = unsafe {
        (
            _mm256_loadu_si256(sub as *const __m256i),
            _mm256_loadu_si256(sub.add(32) as *const __m256i),
            _mm256_loadu_si256(sub.add(64) as *const __m256i),
        )
    };
    [
        _mm256_or_si256(
            _mm256_and_si256(va, m4),
            _mm256_and_si256(_mm256_slli_epi16::<4>(vh), m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(va), m4),
            _mm256_and_si256(_mm256_slli_epi16::<2>(vh), m30),
        ),
        _mm256_or_si256(_mm256_and_si256(vb, m4), _mm256_and_si256(vh, m30)),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(vb), m4),
            _mm256_and_si256(_mm256_srli_epi16::<2>(vh), m30),
        ),
    ]
}

/// Super-block column `b` of one Q6_K group (`wg`, 8 rows) times tokens `t0..t0 + T`, added
/// into `acc`. `stream` asks for the next column ahead (the first tile of a group streams it;
/// later tiles find it in L1).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `wg` holds a whole group of `n_cols / 256` columns,
/// `b` is below that count, and tokens `t0..t0 + T` have activation rows (as checked by
/// `matmul_packed_at`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_column<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    b: usize,
    t0: usize,
    stream: bool,
    acc: &mut [__m256; T],
) {
    let nb = args.n_cols / 256;
    let ab = nb * 292;
    // SAFETY: column b is COLUMN bytes at wg + COLUMN·b; each token's Q8_K block b is 292 bytes
    // at acts + token·ab + 292b (d at 0, quants at 4..260, sums at 260..292). Prefetches are
    // hints and never fault, whatever their address.
    unsafe {
        let col = wg.add(b * COLUMN);
        let next = col.wrapping_add(COLUMN);
        let dup_even = _mm256_loadu_si256(DUP_EVEN.as_ptr() as *const __m256i);
        let dup_odd = _mm256_loadu_si256(DUP_ODD.as_ptr() as *const __m256i);
        let acts: [*const u8; T] =
            std::array::from_fn(|t| args.acts.as_ptr().add((t0 + t) * ab + b * 292));
        let mut isum = [_mm256_setzero_si256(); T];
        let mut bias = [_mm256_setzero_si256(); T];
        for p in 0..8 {
            if stream {
                for line in 0..4 {
                    let at = 256 * p + 64 * line;
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(at) as *const i8);
                }
            }
            // Row r's scales of sub-blocks 2p and 2p + 1 as the i16 halves of lane r.
            let pair =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(col.add(16 + 16 * p) as *const __m128i));
            for (t, a) in acts.iter().enumerate() {
                let sums = _mm256_set1_epi32((a.add(260 + 4 * p) as *const i32).read_unaligned());
                bias[t] = _mm256_add_epi32(bias[t], _mm256_madd_epi16(pair, sums));
            }
            for (h, dup) in [dup_even, dup_odd].into_iter().enumerate() {
                let s = 2 * p + h;
                let scale = _mm256_shuffle_epi8(pair, dup);
                let q = q6_k_quads(col.add(144 + 96 * s));
                for (t, a) in acts.iter().enumerate() {
                    let y = a.add(4 + 16 * s);
                    let bc =
                        |c: usize| _mm256_set1_epi32((y.add(4 * c) as *const i32).read_unaligned());
                    let s01 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(q[0], bc(0)),
                        _mm256_maddubs_epi16(q[1], bc(1)),
                    );
                    let s23 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(q[2], bc(2)),
                        _mm256_maddubs_epi16(q[3], bc(3)),
                    );
                    let dot = _mm256_add_epi32(
                        _mm256_madd_epi16(s01, scale),
                        _mm256_madd_epi16(s23, scale),
                    );
                    isum[t] = _mm256_add_epi32(isum[t], dot);
                }
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        for (t, a) in acts.iter().enumerate() {
            let d_a = _mm256_set1_ps((*a as *const f32).read_unaligned());
            let total = _mm256_sub_epi32(isum[t], _mm256_slli_epi32::<5>(bias[t]));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, d_a), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
}

column_drivers!(
    q6_k_column,
    256,
    matmul_q6_kx8,
    crate::x86::prompt_q6_k_avx2::matmul_tokens
);
