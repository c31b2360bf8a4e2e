//! Prompt processing for packed Q6_K (`Q6_Kx8`, see `crate::packed`) on AVX2: two tokens per
//! activation broadcast (see `paired_avx2`). Q4_K_M and Q5_K_M files keep some of their
//! projections (the output head, attention values, and the down projection of about half the
//! layers) in Q6_K, so their prompts run this kernel beside the Q4_K or Q5_K one.
//!
//! The 6-bit quants are rebuilt as in `packed_q6k_avx2` (four vectors of 8 rows × 4 elements per
//! 16-element sub-block). Per (row, token) the integer total — Σ_s scale_s · dot_s minus
//! 32 · Σ_s scale_s · bsum_s, exact in 32 bits in any order — and the one f32 step per
//! super-block (`fma(d · d_a, total, acc)`, super-blocks in order) are those of the scalar twin,
//! so the results are bit-identical to it. Scales are swapped pairwise like the weights for the
//! swapped accumulators.

use std::arch::x86_64::*;

use super::packed_q6k_avx2::{q6_k_quads, DUP_EVEN, DUP_ODD};
use super::paired_avx2::{
    broadcast_pair, matmul_pairs, paired_entry, untangle, Activations, PairFn, PairedActivations,
    PAIR_TILE, SWAP,
};
use crate::packed::PackedArgs;

/// Bytes of one super-block column of a packed Q6_K group: 8 f16 scales, 16 × 8 sub-block
/// scales, then 16 sub-blocks of 96 bytes (low nibbles `A`, `B` and top bits `H`).
const COLUMN: usize = 1680;

/// `w0 · y0 + w1 · y1` by `vpmaddubsw`, summed in 16 bits.
#[inline]
#[target_feature(enable = "avx2")]
fn maddubs_two(w0: __m256i, y0: __m256i, w1: __m256i, y1: __m256i) -> __m256i {
    _mm256_add_epi16(_mm256_maddubs_epi16(w0, y0), _mm256_maddubs_epi16(w1, y1))
}

/// Group `wg` (8 rows) times token pairs `p0..p0 + P`: `acc_out[k]` holds pair k's two tokens
/// in row order.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; the group is whole (`nb` super-block columns) and
/// pairs `p0..p0 + P` exist in `paired`, filled for [`Activations::Q8_KBlockSums`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_tile<const P: usize>(
    nb: usize,
    wg: *const u8,
    paired: &PairedActivations,
    p0: usize,
    acc_out: &mut [[__m256; 2]; PAIR_TILE],
) {
    // acc[k][0]: (row r, token r mod 2) in lane r; acc[k][1]: (row r ^ 1, token r mod 2).
    let mut acc = [[_mm256_setzero_ps(); 2]; P];
    for b in 0..nb {
        // SAFETY: super-block column b of the group is COLUMN bytes at wg + COLUMN·b (the
        // caller's bound); pair k's block b has 512 quad bytes, two scales and 16 sum words at
        // index (p0 + k)·nb + b of `paired` (filled for every pair). Prefetches never fault.
        unsafe {
            let col = wg.add(b * COLUMN);
            // Only the first tile streams the group; the later ones find it in L1.
            if p0 == 0 {
                for line in 0..COLUMN.div_ceil(64) {
                    let at = COLUMN + 64 * line;
                    _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(at) as *const i8);
                }
            }
            let dup = [
                _mm256_loadu_si256(DUP_EVEN.as_ptr() as *const __m256i),
                _mm256_loadu_si256(DUP_ODD.as_ptr() as *const __m256i),
            ];
            let mut total = [[_mm256_setzero_si256(); 2]; P];
            for p in 0..8 {
                // Row r's scales of sub-blocks 2p and 2p + 1 as the i16 halves of lane r.
                let pair =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(col.add(16 + 16 * p) as *const __m128i));
                let pair_swap = _mm256_shuffle_epi32::<SWAP>(pair);
                // The −32 offset: 32 · (scale_2p · bsum_2p + scale_2p+1 · bsum_2p+1).
                for (k, t) in total.iter_mut().enumerate() {
                    let at = (p0 + k) * nb + b;
                    let sums =
                        broadcast_pair(paired.sums.as_ptr().add(16 * at + 2 * p) as *const u8);
                    let bias = _mm256_madd_epi16(pair, sums);
                    let bias_swap = _mm256_madd_epi16(pair_swap, sums);
                    t[0] = _mm256_sub_epi32(t[0], _mm256_slli_epi32::<5>(bias));
                    t[1] = _mm256_sub_epi32(t[1], _mm256_slli_epi32::<5>(bias_swap));
                }
                for (h, dup) in dup.into_iter().enumerate() {
                    let s = 2 * p + h;
                    let scale = _mm256_shuffle_epi8(pair, dup);
                    let scale_swap = _mm256_shuffle_epi32::<SWAP>(scale);
                    let q = q6_k_quads(col.add(144 + 96 * s));
                    let q_swap = [
                        _mm256_shuffle_epi32::<SWAP>(q[0]),
                        _mm256_shuffle_epi32::<SWAP>(q[1]),
                        _mm256_shuffle_epi32::<SWAP>(q[2]),
                        _mm256_shuffle_epi32::<SWAP>(q[3]),
                    ];
                    for (k, t) in total.iter_mut().enumerate() {
                        let quads = paired.quads.as_ptr().add(((p0 + k) * nb + b) * 512);
                        // Quads 4s..4s + 4 of both tokens (8 bytes each); two vpmaddubsw
                        // results add without overflow (4 × 63 × 128 < 2^15), four would not.
                        let y0 = broadcast_pair(quads.add(32 * s));
                        let y1 = broadcast_pair(quads.add(32 * s + 8));
                        let y2 = broadcast_pair(quads.add(32 * s + 16));
                        let y3 = broadcast_pair(quads.add(32 * s + 24));
                        let dot = _mm256_add_epi32(
                            _mm256_madd_epi16(maddubs_two(q[0], y0, q[1], y1), scale),
                            _mm256_madd_epi16(maddubs_two(q[2], y2, q[3], y3), scale),
                        );
                        let dot_swap = _mm256_add_epi32(
                            _mm256_madd_epi16(
                                maddubs_two(q_swap[0], y0, q_swap[1], y1),
                                scale_swap,
                            ),
                            _mm256_madd_epi16(
                                maddubs_two(q_swap[2], y2, q_swap[3], y3),
                                scale_swap,
                            ),
                        );
                        t[0] = _mm256_add_epi32(t[0], dot);
                        t[1] = _mm256_add_epi32(t[1], dot_swap);
                    }
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
            let d_rows = [d, _mm256_permute_ps::<SWAP>(d)];
            for (k, (a, t)) in acc.iter_mut().zip(&total).enumerate() {
                let at = (p0 + k) * nb + b;
                let d_act =
                    _mm256_castsi256_ps(broadcast_pair(paired.d.as_ptr().add(2 * at) as *const u8));
                for j in 0..2 {
                    let scale = _mm256_mul_ps(d_rows[j], d_act);
                    a[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(t[j]), a[j]);
                }
            }
        }
    }
    for (out, a) in acc_out.iter_mut().zip(acc) {
        *out = untangle(a);
    }
}

paired_entry!(Activations::Q8_KBlockSums);
