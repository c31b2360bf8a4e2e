//! AVX2 products of float weights (F32, F16, BF16) with several activation rows of the same
//! type (their `vec_dot_type`): a prompt's router, or a model stored in F16 or BF16.
//!
//! A dot product per (row, token) loads a weight vector and an activation vector for every
//! multiply-add, and converts both from half precision. Here a tile of [`ROWS`] rows × up to
//! [`TOKENS`] tokens keeps its 8 sums in registers, so each loaded (and converted) vector serves
//! several multiply-adds: 6 loads for 8 FMAs instead of 16. Tokens are taken in blocks whose
//! activations fit in L2, and each pair of rows meets a whole block while it is in L1.
//!
//! Sums are kept in 8 lanes per (row, token) and added up at the end, a different order from
//! the dot kernels': the results agree with the scalar twin within the float tolerance of
//! `tests/simd_twins.rs`, not bit for bit.

use std::arch::x86_64::*;

use super::avx2::hsum_ps as hsum;

/// Rows per tile.
const ROWS: usize = 2;
/// Tokens per tile.
const TOKENS: usize = 4;
/// Activation bytes of one block of tokens (a multiple of [`TOKENS`]): about half of L2.
const TOKEN_BLOCK_BYTES: usize = 256 << 10;

/// One float type: its size and how 8 of them (or one) become f32.
macro_rules! float_matmul {
    ($name:ident, $bytes:expr, $load8:expr, $one:expr) => {
        pub(crate) mod $name {
            use super::*;

            /// Rows `r0..r0 + R` of `w` times tokens `t0..t0 + T` of `a` (rows of `n`
            /// values, `rb` bytes apart) into `out[t * n_rows + r]`.
            ///
            /// # Safety
            /// The CPU must have AVX2, FMA and F16C; those rows and tokens must exist.
            #[allow(clippy::too_many_arguments)]
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn tile<const R: usize, const T: usize>(
                n: usize,
                rb: usize,
                w: *const u8,
                a: *const u8,
                r0: usize,
                t0: usize,
                n_rows: usize,
                out: &mut [f32],
            ) {
                let load8 = $load8;
                let one = $one;
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                let n8 = n / 8 * 8;
                for i in (0..n8).step_by(8) {
                    // SAFETY: i + 8 <= n values of rows r0..r0 + R and tokens t0..t0 + T,
                    // which the caller guarantees exist.
                    unsafe {
                        let x: [__m256; T] =
                            std::array::from_fn(|t| load8(a.add((t0 + t) * rb + $bytes * i)));
                        for r in 0..R {
                            let y = load8(w.add((r0 + r) * rb + $bytes * i));
                            for t in 0..T {
                                acc[r][t] = _mm256_fmadd_ps(y, x[t], acc[r][t]);
                            }
                        }
                    }
                }
                for r in 0..R {
                    for t in 0..T {
                        let mut s = hsum(acc[r][t]);
                        for i in n8..n {
                            // SAFETY: i < n, inside both rows.
                            s += unsafe {
                                one(w.add((r0 + r) * rb + $bytes * i))
                                    * one(a.add((t0 + t) * rb + $bytes * i))
                            };
                        }
                        out[(t0 + t) * n_rows + r0 + r] = s;
                    }
                }
            }

            /// Every row of `w` times every token of `acts` (rows of `n` values).
            ///
            /// # Safety
            /// The CPU must have AVX2, FMA and F16C; `w` and `acts` hold whole rows and `out`
            /// `n_rows × n_tokens` entries (checked by `crate::matmul_at`).
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(crate) unsafe fn matmul(
                n: usize,
                w: &[u8],
                acts: &[u8],
                n_tokens: usize,
                out: &mut [f32],
            ) {
                let rb = n * $bytes;
                let n_rows = out.len() / n_tokens.max(1);
                assert!(w.len() >= rb * n_rows && acts.len() >= rb * n_tokens);
                let (pw, pa) = (w.as_ptr(), acts.as_ptr());
                // Tokens in blocks whose activations fit in L2; in a block, each pair of rows
                // (read from memory once per block, then from L1) meets every token tile.
                let block = (TOKEN_BLOCK_BYTES / rb.max(1)).max(TOKENS) / TOKENS * TOKENS;
                let mut b0 = 0;
                while b0 < n_tokens {
                    let b1 = (b0 + block).min(n_tokens);
                    let mut r0 = 0;
                    while r0 < n_rows {
                        let r = ROWS.min(n_rows - r0);
                        let mut t0 = b0;
                        while t0 < b1 {
                            let t = TOKENS.min(b1 - t0);
                            // SAFETY: rows r0..r0 + r and tokens t0..t0 + t exist (asserted
                            // lengths); same features.
                            unsafe {
                                match (r, t) {
                                    (2, 4) => tile::<2, 4>(n, rb, pw, pa, r0, t0, n_rows, out),
                                    (2, 3) => tile::<2, 3>(n, rb, pw, pa, r0, t0, n_rows, out),
                                    (2, 2) => tile::<2, 2>(n, rb, pw, pa, r0, t0, n_rows, out),
                                    (2, _) => tile::<2, 1>(n, rb, pw, pa, r0, t0, n_rows, out),
                                    (_, 4) => tile::<1, 4>(n, rb, pw, pa, r0, t0, n_rows, out),
                                    (_, 3) => tile::<1, 3>(n, rb, pw, pa, r0, t0, n_rows, out),
                                    (_, 2) => tile::<1, 2>(n, rb, pw, pa, r0, t0, n_rows, out),
                                    _ => tile::<1, 1>(n, rb, pw, pa, r0, t0, n_rows, out),
                                }
                            }
                            t0 += t;
                        }
                        r0 += r;
                    }
                    b0 = b1;
                }
            }
        }
    };
}

float_matmul!(
    f32s,
    4,
    // SAFETY: the callers pass a pointer to 32 readable bytes.
    |p: *const u8| unsafe { _mm256_loadu_ps(p as *const f32) },
    // SAFETY: the callers pass a pointer to 4 readable bytes.
    |p: *const u8| unsafe { (p as *const f32).read_unaligned() }
);

float_matmul!(
    f16s,
    2,
    // SAFETY: the callers pass a pointer to 16 readable bytes.
    |p: *const u8| unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) },
    // SAFETY: the callers pass a pointer to 2 readable bytes.
    |p: *const u8| unsafe { crate::blocks::F16Bits([*p, *p.add(1)]).to_f32() }
);

// A bf16 is the high half of an f32: widen to 32 bits and shift.
float_matmul!(
    bf16s,
    2,
    // SAFETY: the callers pass a pointer to 16 readable bytes.
    |p: *const u8| unsafe {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    },
    // SAFETY: the callers pass a pointer to 2 readable bytes.
    |p: *const u8| unsafe { crate::blocks::bf16_bits_to_f32(u16::from_le_bytes([*p, *p.add(1)])) }
);
