//! Prompt processing for packed Q4_0 (`Q4_0x8`, see `crate::packed`) on AVX2: two tokens per
//! activation broadcast (see `paired_avx2`). Stamped out once per way of summing chunk products
//! (`paired_avx2::maddubs_form` for AVX2, `dpbusd_form` for AVX-VNNI, and in tests the VNNI
//! kernel with `vpdpbusd` emulated).
//!
//! Per (row, token) the integer sums and the f32 steps — `fma(d_w · d_a, dot − zero point,
//! acc)` per block, blocks in order — are those of the scalar twin, so the results are
//! bit-identical to it.

use std::arch::x86_64::*;

#[cfg(test)]
use super::paired_avx2::dpbusd_emulated_form;
use super::paired_avx2::{
    broadcast_pair, dpbusd_form, maddubs_form, matmul_pairs, paired_entry, untangle, Activations,
    PairFn, PairedActivations, PAIR_TILE, SWAP,
};
use crate::packed::PackedArgs;

/// Bytes of one block column of a packed Q4_0 group: 8 f16 scales, then 4 × 32 bytes of nibbles.
const COLUMN: usize = 144;

/// Software prefetch distance in bytes: 16 columns, as far ahead as `prompt_q4_k_avx2` asks
/// (twice the one-token kernels' 1152 bytes; against that distance, pp128 in 6 alternating
/// rounds was ahead in 4 but within the noise, medians 148 and 146 t/s).
const PREFETCH_AHEAD: usize = 16 * COLUMN;

/// The prompt kernel for one way of summing chunk products: module `$name`, built for
/// `$features`, summing with `$form` (see `paired_avx2::maddubs_form`).
macro_rules! prompt_kernel {
    ($name:ident, $features:literal, $form:ident) => {
        pub(crate) mod $name {
            use super::*;

            /// Group `wg` (8 rows) times token pairs `p0..p0 + P`: `acc_out[k]` holds pair k's two
            /// tokens in row order.
            ///
            /// # Safety
            /// The CPU must have the module's features; the group is whole (`nb` columns)
            /// and pairs `p0..p0 + P` exist in `paired`, paired for [`Activations::Q8_0`].
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn pair_tile<const P: usize>(
                nb: usize,
                wg: *const u8,
                paired: &PairedActivations,
                p0: usize,
                acc_out: &mut [[__m256; 2]; PAIR_TILE],
            ) {
                let mask = _mm256_set1_epi8(0x0F);
                // acc[k][0]: (row r, token r mod 2) in lane r;
                // acc[k][1]: (row r ^ 1, token r mod 2).
                let mut acc = [[_mm256_setzero_ps(); 2]; P];
                // Opaque to the compiler: unrolled, the four chunk steps get interleaved across
                // tokens and their unpacked weights spill (16 registers hold one step, not four).
                let steps = std::hint::black_box(4usize);
                for b in 0..nb {
                    // SAFETY: block column b of the group is COLUMN bytes at wg + COLUMN·b (the
                    // caller's bound); pair k's block b has 64 quad bytes, two scales and two zero
                    // points at index (p0 + k)·nb + b of `paired` (filled for every pair).
                    // Prefetches never fault.
                    unsafe {
                        let col = wg.add(b * COLUMN);
                        // Only the first tile streams the group; the later ones find it in L1.
                        if p0 == 0 {
                            for line in 0..3 {
                                let at = PREFETCH_AHEAD + 64 * line;
                                _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(at) as *const i8);
                            }
                        }
                        // Chunk 2i (quants 4i.., low nibbles) and 2i + 1 (quants 16 + 4i.., high),
                        // each also with adjacent rows swapped.
                        let weights = |i: usize| {
                            let v = _mm256_loadu_si256(col.add(16 + 32 * i) as *const __m256i);
                            let lo = _mm256_and_si256(v, mask);
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                            let swap = |x| _mm256_shuffle_epi32::<SWAP>(x);
                            [lo, hi, swap(lo), swap(hi)]
                        };
                        // Step i's activation pairs for pair k (each serving the straight and the
                        // swapped weights).
                        let activations = |k: usize, i: usize| {
                            let quads = paired.quads.as_ptr().add(((p0 + k) * nb + b) * 64);
                            let y_lo = broadcast_pair(quads.add(8 * i));
                            let y_hi = broadcast_pair(quads.add(8 * (4 + i)));
                            (y_lo, y_hi)
                        };
                        // Sums of 8 chunk products in the module's form, started from step 0's
                        // products rather than from zero (two adds fewer per pair in the 16-bit
                        // form).
                        let w0 = weights(0);
                        let mut sums: [[__m256i; 2]; P] = std::array::from_fn(|k| {
                            let (y_lo, y_hi) = activations(k, 0);
                            [
                                $form!(first w0[0], y_lo, w0[1], y_hi),
                                $form!(first w0[2], y_lo, w0[3], y_hi),
                            ]
                        });
                        for i in 1..steps {
                            let w = weights(i);
                            for (k, s) in sums.iter_mut().enumerate() {
                                let (y_lo, y_hi) = activations(k, i);
                                s[0] = $form!(add s[0], w[0], y_lo, w[1], y_hi);
                                s[1] = $form!(add s[1], w[2], y_lo, w[3], y_hi);
                            }
                        }
                        let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
                        let dw = [dw, _mm256_permute_ps::<SWAP>(dw)];
                        for (k, (a, s)) in acc.iter_mut().zip(&sums).enumerate() {
                            let at = (p0 + k) * nb + b;
                            let sums_at = paired.sums.as_ptr().add(2 * at) as *const u8;
                            let zero_point = broadcast_pair(sums_at);
                            let d_at = paired.d.as_ptr().add(2 * at) as *const u8;
                            let d_act = _mm256_castsi256_ps(broadcast_pair(d_at));
                            for j in 0..2 {
                                let dot = _mm256_sub_epi32($form!(plain s[j]), zero_point);
                                let d = _mm256_mul_ps(dw[j], d_act);
                                a[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), a[j]);
                            }
                        }
                    }
                }
                for (out, a) in acc_out.iter_mut().zip(acc) {
                    *out = untangle(a);
                }
            }

            paired_entry!(Activations::Q8_0, $features);
        }
    };
}

prompt_kernel!(avx2, "avx2,fma,f16c", maddubs_form);
prompt_kernel!(avxvnni, "avx2,fma,f16c,avxvnni", dpbusd_form);
// The AVX-VNNI kernel with `vpdpbusd` emulated: tests run it on any AVX2 CPU.
#[cfg(test)]
prompt_kernel!(avxvnni_emulated, "avx2,fma,f16c", dpbusd_emulated_form);
