//! Prompt processing for packed Q4_K (`Q4_Kx8`, see `crate::packed`) on AVX2: two tokens per
//! activation broadcast (see `paired_avx2`). Stamped out once per way of summing chunk products
//! (`paired_avx2::maddubs_form` for AVX2, `dpbusd_form` for AVX-VNNI, and in tests the VNNI
//! kernel with `vpdpbusd` emulated), each with the scale form of its `packed_avx2` module's
//! `q4_k_header`.
//!
//! Per (row, token) the integer sums — Σ_s scale_s · dot_s and Σ_s min_s · sum_s over the 8
//! sub-blocks — and the f32 steps of each super-block (`fma(d · d_a, Σ scale·dot, acc)`, then
//! `fnma(dmin · d_a, Σ min·sum, acc)`, super-blocks in order) are those of the scalar twin, so
//! the results are bit-identical to it. The rows' scales, mins and super-block scales are
//! swapped pairwise like the weights for the swapped accumulators.

use std::arch::x86_64::*;

#[cfg(test)]
use super::paired_avx2::dpbusd_emulated_form;
use super::paired_avx2::{
    broadcast_pair, dpbusd_form, maddubs_form, matmul_pairs, paired_entry, untangle, Activations,
    PairFn, PairedActivations, PAIR_TILE, SWAP,
};
use crate::packed::PackedArgs;

/// Bytes of one super-block column of a packed Q4_K group: 8 f16 scales, 8 f16 mins, 96 bytes of
/// 6-bit sub-block scales and mins, then 4 × 8 × 32 bytes of nibbles.
const COLUMN: usize = 1152;

/// How far ahead of the column it multiplies the first tile of a group asks for weights: two
/// columns. An MoE expert's share of a prompt (about 16 tokens of a pp128) streams its weights
/// from memory; with two columns ahead instead of one, the expert-shaped product
/// (`matmul_expert::Q4_Kx8`, 3 alternating runs) gave medians of 220, 224, 190 GFLOP/s against
/// 185, 175, 202, and whole-model pp128 at AVX2 was faster in 12 of 12 alternating rounds
/// (medians 8–14 % higher). Q5_K and Q6_K stay at one column (with two, Q5_K was 2–6 % slower
/// and Q6_K no faster).
const PREFETCH_AHEAD: usize = 2 * COLUMN;

/// The prompt kernel for one way of summing chunk products: module `$name`, built for
/// `$features`, summing with `$form` (see `paired_avx2::maddubs_form`) and taking its scales
/// from `packed_avx2::$name::q4_k_header`.
macro_rules! prompt_kernel {
    ($name:ident, $features:literal, $form:ident) => {
        pub(crate) mod $name {
            use super::*;
            use crate::x86::packed_avx2::$name::q4_k_header;

            /// Group `wg` (8 rows) times token pairs `p0..p0 + P`: `acc_out[k]` holds pair k's two
            /// tokens in row order.
            ///
            /// # Safety
            /// The CPU must have the module's features; the group is whole (`nb`
            /// super-block columns) and pairs `p0..p0 + P` exist in `paired`, paired for
            /// [`Activations::Q8_K`].
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn pair_tile<const P: usize>(
                nb: usize,
                wg: *const u8,
                paired: &PairedActivations,
                p0: usize,
                acc_out: &mut [[__m256; 2]; PAIR_TILE],
            ) {
                // acc[k][0]: (row r, token r mod 2) in lane r;
                // acc[k][1]: (row r ^ 1, token r mod 2).
                let mut acc = [[_mm256_setzero_ps(); 2]; P];
                for b in 0..nb {
                    // SAFETY: super-block column b of the group is COLUMN bytes at wg + COLUMN·b
                    // (the caller's bound); pair k's block b has 512 quad bytes, two scales and 8
                    // sum words at index (p0 + k)·nb + b of `paired` (filled for every pair).
                    // Prefetches never fault.
                    unsafe {
                        let col = wg.add(b * COLUMN);
                        // Only the first tile streams the group, PREFETCH_AHEAD bytes ahead; the
                        // later ones find it in L1.
                        if p0 == 0 {
                            for line in 0..COLUMN / 64 {
                                let at = PREFETCH_AHEAD + 64 * line;
                                _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(at) as *const i8);
                            }
                        }
                        let (ksc, mn_pairs) = q4_k_header(col);
                        let quads = paired.quads.as_ptr().add((p0 * nb + b) * 512);
                        let mut isum = [[_mm256_setzero_si256(); 2]; P];
                        for j in 0..4 {
                            // Sub-blocks 2j (low nibbles of stretch j) and 2j + 1 (high nibbles).
                            let stretch = col.add(128 + 256 * j);
                            let y = quads.add(64 * 2 * j);
                            sub_block::<P, false>(stretch, y, nb, ksc[2 * j], &mut isum);
                            sub_block::<P, true>(stretch, y.add(64), nb, ksc[2 * j + 1], &mut isum);
                        }
                        finish_column(col, mn_pairs, &isum, paired, p0 * nb + b, nb, &mut acc);
                    }
                }
                for (out, a) in acc_out.iter_mut().zip(acc) {
                    *out = untangle(a);
                }
            }

            /// One sub-block of a super-block column for a tile's pairs: its 8 chunks' products
            /// summed in the module's form, times the rows' scales `k_straight` (in the form of the
            /// module's `q4_k_header`) and added into `isum`, straight and swapped. The weights are
            /// the low nibbles of `stretch`'s 8 chunks, or the high ones if `HIGH`; pair k's 64
            /// quad bytes of the sub-block are at `y + 512·nb·k`.
            ///
            /// # Safety
            /// The CPU must have the module's features; 256 bytes readable at `stretch`,
            /// and each pair's 64 at its `y`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn sub_block<const P: usize, const HIGH: bool>(
                stretch: *const u8,
                y: *const u8,
                nb: usize,
                k_straight: __m256i,
                isum: &mut [[__m256i; 2]; P],
            ) {
                let mask = _mm256_set1_epi8(0x0F);
                // Opaque to the compiler, so the step loop stays a loop whose live values fit the
                // 16 registers (unrolled, its steps get interleaved and spill; see
                // `prompt_q4_0_avx2`).
                let steps = std::hint::black_box(4usize);
                // SAFETY: the caller's bounds: chunk c is 32 bytes at stretch + 32c, pair k's quads
                // of chunk c 8 bytes at y + 512·nb·k + 8c.
                unsafe {
                    let weights = |c: usize| {
                        let v = _mm256_loadu_si256(stretch.add(32 * c) as *const __m256i);
                        let w = if HIGH {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask)
                        } else {
                            _mm256_and_si256(v, mask)
                        };
                        [w, _mm256_shuffle_epi32::<SWAP>(w)]
                    };
                    // Chunks c and c + 1's activation pairs for pair k (each serving the straight
                    // and the swapped weights).
                    let activations = |k: usize, c: usize| {
                        let quads = y.add(512 * nb * k + 8 * c);
                        (broadcast_pair(quads), broadcast_pair(quads.add(8)))
                    };
                    let w = [weights(0), weights(1)];
                    let mut sums: [[__m256i; 2]; P] = std::array::from_fn(|k| {
                        let (y0, y1) = activations(k, 0);
                        [
                            $form!(first w[0][0], y0, w[1][0], y1),
                            $form!(first w[0][1], y0, w[1][1], y1),
                        ]
                    });
                    for step in 1..steps {
                        let c = 2 * step;
                        let w = [weights(c), weights(c + 1)];
                        for (k, sm) in sums.iter_mut().enumerate() {
                            let (y0, y1) = activations(k, c);
                            sm[0] = $form!(add sm[0], w[0][0], y0, w[1][0], y1);
                            sm[1] = $form!(add sm[1], w[0][1], y0, w[1][1], y1);
                        }
                    }
                    let k_swap = _mm256_shuffle_epi32::<SWAP>(k_straight);
                    for (is, sm) in isum.iter_mut().zip(&sums) {
                        is[0] = _mm256_add_epi32(is[0], $form!(scaled sm[0], k_straight));
                        is[1] = _mm256_add_epi32(is[1], $form!(scaled sm[1], k_swap));
                    }
                }
            }

            paired_entry!(Activations::Q8_K, $features);
        }
    };
}

prompt_kernel!(avx2, "avx2,fma,f16c", maddubs_form);
prompt_kernel!(avxvnni, "avx2,fma,f16c,avxvnni", dpbusd_form);
// The AVX-VNNI kernel with `vpdpbusd` emulated: tests run it on any AVX2 CPU.
#[cfg(test)]
prompt_kernel!(avxvnni_emulated, "avx2,fma,f16c", dpbusd_emulated_form);

/// The f32 steps of one super-block column (`col`, Q4_K's header layout: f16 `d` at 0 and
/// `dmin` at 16) for a tile's pairs, whose block is at index `at0 + k·nb` of `paired`:
/// `fma(d · d_a, Σ scale·dot, acc)` then `fnma(dmin · d_a, Σ min·sum, acc)`, for the straight
/// and the swapped accumulators. Shared with `prompt_q5_k_avx2`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; 32 bytes readable at `col`; pairs filled for
/// [`Activations::Q8_K`] up to the tile's last.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn finish_column<const P: usize>(
    col: *const u8,
    mn_pairs: [__m256i; 4],
    isum: &[[__m256i; 2]; P],
    paired: &PairedActivations,
    at0: usize,
    nb: usize,
    acc: &mut [[__m256; 2]; P],
) {
    // SAFETY: the caller's bounds: 32 header bytes at col; each pair's scales (2) and sum
    // words (8) at its block index.
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(col.add(16) as *const __m128i));
        let scales = [
            (d, dmin, mn_pairs),
            (
                _mm256_permute_ps::<SWAP>(d),
                _mm256_permute_ps::<SWAP>(dmin),
                mn_pairs.map(|m| _mm256_shuffle_epi32::<SWAP>(m)),
            ),
        ];
        for (k, (a, is)) in acc.iter_mut().zip(isum).enumerate() {
            let at = at0 + k * nb;
            let d_act =
                _mm256_castsi256_ps(broadcast_pair(paired.d.as_ptr().add(2 * at) as *const u8));
            let words = paired.sums.as_ptr().add(8 * at);
            for (j, (d, dmin, mins)) in scales.iter().enumerate() {
                // Σ_s min_s · sum_s, exactly: pairs of sub-block sums, 16 bits each.
                let mut msum = _mm256_setzero_si256();
                for (i, mn) in mins.iter().enumerate() {
                    let pair = broadcast_pair(words.add(2 * i) as *const u8);
                    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*mn, pair));
                }
                a[j] = _mm256_fmadd_ps(_mm256_mul_ps(*d, d_act), _mm256_cvtepi32_ps(is[j]), a[j]);
                a[j] =
                    _mm256_fnmadd_ps(_mm256_mul_ps(*dmin, d_act), _mm256_cvtepi32_ps(msum), a[j]);
            }
        }
    }
}
