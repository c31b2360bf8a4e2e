//! Prompt processing for packed Q5_K (`Q5_Kx8`, see `crate::packed`) on AVX2: two tokens per
//! activation broadcast (see `paired_avx2`), for Q5_K_M and Q5_K_S files.
//!
//! The 5-bit quants are rebuilt as in `packed_q5k_avx2` (nibbles and top bits into vectors of
//! 8 rows × 4 elements), four chunks at a time so the straight and swapped weights fit the
//! registers. Per (row, token) the integer sums — Σ_s scale_s · dot_s and Σ_s min_s · sum_s —
//! and the f32 steps of each super-block (`fma(d · d_a, Σ scale·dot, acc)`, then
//! `fnma(dmin · d_a, Σ min·sum, acc)`, super-blocks in order) are those of the scalar twin, so
//! the results are bit-identical to it. Scales, mins and super-block scales are swapped pairwise
//! like the weights for the swapped accumulators.

use std::arch::x86_64::*;

use super::packed_avx2::avx2::q4_k_header;
use super::packed_q5k_avx2::top_bit;
use super::paired_avx2::{
    broadcast_pair, matmul_pairs, paired_entry, untangle, Activations, PairFn, PairedActivations,
    PAIR_TILE, SWAP,
};
use super::prompt_q4_k_avx2::finish_column;
use crate::packed::PackedArgs;

/// Bytes of one super-block column of a packed Q5_K group: Q4_K's 128-byte header, then 8
/// sub-blocks of 4 × 32 bytes of nibbles and 32 bytes of top bits.
const COLUMN: usize = 1408;

/// Group `wg` (8 rows) times token pairs `p0..p0 + P`: `acc_out[k]` holds pair k's two tokens
/// in row order.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; the group is whole (`nb` super-block columns) and
/// pairs `p0..p0 + P` exist in `paired`, filled for [`Activations::Q8_K`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_tile<const P: usize>(
    nb: usize,
    wg: *const u8,
    paired: &PairedActivations,
    p0: usize,
    acc_out: &mut [[__m256; 2]; PAIR_TILE],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    // acc[k][0]: (row r, token r mod 2) in lane r; acc[k][1]: (row r ^ 1, token r mod 2).
    let mut acc = [[_mm256_setzero_ps(); 2]; P];
    for b in 0..nb {
        // SAFETY: super-block column b of the group is COLUMN bytes at wg + COLUMN·b (the
        // caller's bound); pair k's block b has 512 quad bytes, two scales and 8 sum words at
        // index (p0 + k)·nb + b of `paired` (filled for every pair). Prefetches never fault.
        unsafe {
            let col = wg.add(b * COLUMN);
            // Only the first tile streams the group; the later ones find it in L1.
            if p0 == 0 {
                for line in 0..COLUMN / 64 {
                    let at = COLUMN + 64 * line;
                    _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(at) as *const i8);
                }
            }
            let (ksc, mn_pairs) = q4_k_header(col);
            let mut isum = [[_mm256_setzero_si256(); 2]; P];
            for (s, k_straight) in ksc.into_iter().enumerate() {
                let k_swap = _mm256_shuffle_epi32::<SWAP>(k_straight);
                let sub = col.add(128 + 160 * s);
                let h = _mm256_loadu_si256(sub.add(128) as *const __m256i);
                for half in 0..2 {
                    // Chunks 4·half..4·half + 4 of sub-block s: chunk c holds quad c (8 rows ×
                    // 4 elements), nibbles of byte vector c / 2 (low for even c) and top bit c.
                    let mut q = [_mm256_setzero_si256(); 4];
                    for (i, qc) in q.iter_mut().enumerate() {
                        let c = 4 * half + i;
                        let a = _mm256_loadu_si256(sub.add(32 * (c / 2)) as *const __m256i);
                        let nibble = if c % 2 == 0 {
                            _mm256_and_si256(a, m4)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(a), m4)
                        };
                        *qc = _mm256_or_si256(nibble, top_bit(h, c));
                    }
                    let q_swap = [
                        _mm256_shuffle_epi32::<SWAP>(q[0]),
                        _mm256_shuffle_epi32::<SWAP>(q[1]),
                        _mm256_shuffle_epi32::<SWAP>(q[2]),
                        _mm256_shuffle_epi32::<SWAP>(q[3]),
                    ];
                    for (k, is) in isum.iter_mut().enumerate() {
                        let quads = paired.quads.as_ptr().add(((p0 + k) * nb + b) * 512);
                        let first = quads.add(8 * (8 * s + 4 * half));
                        // Four vpmaddubsw results add in 16 bits (4 × 2 × 31 × 128 < 2^15).
                        let mut x = _mm256_setzero_si256();
                        let mut x_swap = _mm256_setzero_si256();
                        for i in 0..4 {
                            let y = broadcast_pair(first.add(8 * i));
                            x = _mm256_add_epi16(x, _mm256_maddubs_epi16(q[i], y));
                            x_swap = _mm256_add_epi16(x_swap, _mm256_maddubs_epi16(q_swap[i], y));
                        }
                        is[0] = _mm256_add_epi32(is[0], _mm256_madd_epi16(x, k_straight));
                        is[1] = _mm256_add_epi32(is[1], _mm256_madd_epi16(x_swap, k_swap));
                    }
                }
            }
            finish_column(col, mn_pairs, &isum, paired, p0 * nb + b, nb, &mut acc);
        }
    }
    for (out, a) in acc_out.iter_mut().zip(acc) {
        *out = untangle(a);
    }
}

paired_entry!(Activations::Q8_K);
