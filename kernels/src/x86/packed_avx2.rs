//! x86 kernels for packed Q4_0 and Q4_K (`Q4_0x8`, `Q4_Kx8`, see `crate::packed`): one 8-row group per
//! accumulator, row `r` in lane `r`, so no horizontal sums; the nibbles of a block column are
//! unpacked once and reused by up to four tokens. At the AVX2 level, products of 4 or more tokens
//! go to the paired-token prompt kernels instead (`paired_avx2`, [`PAIRED_FROM`]).
//!
//! The kernels are written once (`packed_kernels!`) with their dot product of 8 chunks (8 rows
//! × 4 bytes each) against broadcast activation quads, and stamped out twice: `avx2` with
//! `vpmaddubsw`, 16-bit adds, one `vpmaddwd` (the 16-bit partial sums cannot overflow: 8 chunks
//! × 2 products × 15 × 128 < 2^15), and `avxvnni` with AVX-VNNI's `vpdpbusd`. Both give exact
//! 32-bit sums, so the results are bit-identical to the scalar twins. The
//! Q4_K header decoder (`q4_k_header_fn!`) is also stamped out with the scale form `vpdpbusd`
//! multiplies by, for the 512-bit VNNI kernel (`packed_q4k_avx512`), and for its tests' twin
//! with `vpdpbusd` emulated (`vnni_emulated`, see `x86::vnni_emulation`).

use std::arch::x86_64::*;

use crate::packed::{PackedArgs, PACK_ROWS};

/// Tokens sharing one unpacked block column.
pub(crate) const TOKEN_TILE: usize = 4;

/// Far-apart runs of groups a one-token Q4_0 product reads side by side.
const STREAMS: usize = 2;

/// Software prefetch distance in bytes (prefetches are hints: past the end they are dropped).
const PREFETCH_AHEAD: usize = 1152;

/// Token counts from which a Q4_0, Q4_K, Q5_K or Q6_K product runs the two-tokens-per-broadcast
/// kernel (`prompt_q4_0_avx2`, `prompt_q4_k_avx2`, `prompt_q5_k_avx2`, `prompt_q6_k_avx2`;
/// the AVX2 kernels only: the 512-bit kernels already share each broadcast between two groups).
/// Below it the one-group tiles do
/// fewer vector operations: counted per Q4_0 block column, 103 against 126 for 3 tokens (the
/// pair kernel runs an odd token as a pair), 73 against 74 for 2.
pub(crate) const PAIRED_FROM: usize = 4;

/// A kernel for one group and a tile of tokens (`group_tile::<T>` for T = 1..=4).
pub(crate) type TileFn = unsafe fn(&PackedArgs<'_>, *const u8, usize, &mut [__m256; TOKEN_TILE]);

/// Each Q8_0 block's scale as f32 and 8 × the sum of its quants (see `crate::packed`).
///
/// # Safety
/// The CPU must have AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn summarize_q8_0(acts: &[u8], act_d: &mut Vec<f32>, act_s: &mut Vec<i32>) {
    let ones = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for blk in acts.chunks_exact(34) {
        let bits = u16::from_le_bytes([blk[0], blk[1]]);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
        // SAFETY: the block has 32 quant bytes after its 2-byte scale.
        let q = unsafe { _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i) };
        // 1 × q summed in pairs (at most 2 × 128 in magnitude: no saturation), then in fours.
        let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, q), ones16);
        let x = _mm_add_epi32(
            _mm256_castsi256_si128(sums),
            _mm256_extracti128_si256::<1>(sums),
        );
        let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
        act_d.push(d);
        act_s.push(8 * _mm_cvtsi128_si32(x));
    }
}

/// `vpmaddubsw` form: Σ_c w[c] · broadcast(y + off[c]) per 32-bit lane, for unsigned 4-bit
/// weights and signed 8-bit activations. `$pairs` (16-bit pairs) weights the two 16-bit halves
/// of each lane in the final `vpmaddwd`: all ones for the plain sum, or a per-lane scale `k` in
/// both halves for `k ·` the sum (exact: |half| ≤ 8 × 2 × 15 × 128 and k < 2^6).
macro_rules! dot8_maddubs {
    ($w:expr, $y:expr, $off:expr) => {
        dot8_maddubs!($w, $y, $off, _mm256_set1_epi16(1))
    };
    ($w:expr, $y:expr, $off:expr, $pairs:expr) => {{
        let (w, y, off): (&[__m256i; 8], *const u8, [usize; 8]) = ($w, $y, $off);
        let bc = |o: usize| _mm256_broadcastd_epi32(_mm_loadu_si32(y.add(o)));
        let mut s = _mm256_maddubs_epi16(w[0], bc(off[0]));
        for c in 1..8 {
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[c], bc(off[c])));
        }
        _mm256_madd_epi16(s, $pairs)
    }};
}

/// `vpdpbusd` form of [`dot8_maddubs`] with instruction `$dp` (AVX-VNNI's, or in tests its
/// emulation): the chunks' products accumulate in 32 bits, and a scale `$k` (the
/// [`SCALES_DPBUSD`] form) is a 32-bit multiply. The sums equal `dot8_maddubs`'s: both exact.
macro_rules! dot8_vnni {
    ($dp:path, $w:expr, $y:expr, $off:expr) => {{
        let (w, y, off): (&[__m256i; 8], *const u8, [usize; 8]) = ($w, $y, $off);
        let bc = |o: usize| _mm256_broadcastd_epi32(_mm_loadu_si32(y.add(o)));
        let mut s = $dp(_mm256_setzero_si256(), w[0], bc(off[0]));
        for c in 1..8 {
            s = $dp(s, w[c], bc(off[c]));
        }
        s
    }};
    ($dp:path, $w:expr, $y:expr, $off:expr, $k:expr) => {
        _mm256_mullo_epi32(dot8_vnni!($dp, $w, $y, $off), $k)
    };
}

/// [`dot8_vnni`] with AVX-VNNI's `vpdpbusd`.
macro_rules! dot8_dpbusd {
    ($($arg:expr),+) => {
        dot8_vnni!(_mm256_dpbusd_avx_epi32, $($arg),+)
    };
}

/// [`dot8_vnni`] with `vpdpbusd` emulated in AVX2 (tests: see `x86::vnni_emulation`).
#[cfg(test)]
macro_rules! dot8_dpbusd_emulated {
    ($($arg:expr),+) => {
        dot8_vnni!(crate::x86::vnni_emulation::dpbusd_256, $($arg),+)
    };
}

/// `vpshufb` masks that build one sub-block's row scales from a pair of sub-blocks' scale bytes
/// (rows 0..8 of the even sub-block, then of the odd one, in both 128-bit lanes): index 0 for
/// the even sub-block, 1 for the odd. This form is the one [`dot8_maddubs`] multiplies by:
/// row r's scale in both 16-bit halves of lane r.
const SCALES_MADDUBS: [[u8; 32]; 2] = [scale_mask(0, true), scale_mask(1, true)];

/// Lane `r` (bytes 4r..4r + 4) gets byte `8 · odd + r` of its 128-bit lane, also in its upper
/// 16-bit half if `both_halves`; every other byte is zero (index 0x80).
const fn scale_mask(odd: usize, both_halves: bool) -> [u8; 32] {
    let mut mask = [0x80; 32];
    let mut r = 0;
    while r < 8 {
        mask[4 * r] = (8 * odd + r) as u8;
        if both_halves {
            mask[4 * r + 2] = (8 * odd + r) as u8;
        }
        r += 1;
    }
    mask
}

/// The `vpshufb` mask that puts row r's mins of a pair of sub-blocks (laid out as for
/// [`SCALES_MADDUBS`]) in the 16-bit halves of lane r, the even sub-block's in the low half.
const MINS_PAIRED: [u8; 32] = {
    let mut mask = [0x80; 32];
    let mut r = 0;
    while r < 8 {
        mask[4 * r] = r as u8;
        mask[4 * r + 2] = (8 + r) as u8;
        r += 1;
    }
    mask
};

/// The scale form a `vpdpbusd` kernel multiplies its 32-bit sums by (masks as
/// [`SCALES_MADDUBS`]): row r's scale byte as lane r's 32-bit integer.
const SCALES_DPBUSD: [[u8; 32]; 2] = [scale_mask(0, false), scale_mask(1, false)];

/// `q4_k_header(col)`: the Q4_K header decoder for `$features`, building scales with the masks
/// `$scale` (the form of the dot product that multiplies by them).
macro_rules! q4_k_header_fn {
    ($features:literal, $scale:ident) => {
        /// The scales and mins of a packed Q4_K super-block column (also the header of a
        /// packed Q5_K one) at `col`: each sub-block's scales in the form `$scale` builds,
        /// and the mins of sub-blocks 2i and 2i + 1 as the 16-bit halves of lane r.
        ///
        /// # Safety
        /// `col` must point at the column's first 128 readable bytes.
        #[inline]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn q4_k_header(col: *const u8) -> ([__m256i; 8], [__m256i; 4]) {
            // SAFETY: bytes 32..128 of the column (the caller's bound).
            unsafe {
                // Scales and mins of the 8 sub-blocks as bytes (row r in byte r of
                // each 8-byte run), all at once: sc01 holds sub-blocks 0, 1 | 4, 5 and
                // sc23 holds 2, 3 | 6, 7 (128-bit lanes), likewise mn01 and mn23.
                let low4 = _mm256_set1_epi8(0x0F);
                let two = _mm256_set1_epi8(3);
                let b0 = _mm256_loadu_si256(col.add(32) as *const __m256i);
                let b1 = _mm256_loadu_si256(col.add(64) as *const __m256i);
                let c01 = _mm256_permute2x128_si256::<0x20>(b0, b1);
                let c23 = _mm256_permute2x128_si256::<0x31>(b0, b1);
                // Top bits: nibble r of sub-block s's word, as byte r of its run.
                let words = _mm256_loadu_si256(col.add(96) as *const __m256i);
                let even = _mm256_and_si256(words, low4);
                let odd = _mm256_and_si256(_mm256_srli_epi16::<4>(words), low4);
                let n01 = _mm256_unpacklo_epi8(even, odd);
                let n23 = _mm256_unpackhi_epi8(even, odd);
                let join = |c: __m256i, n: __m256i| {
                    let sc = _mm256_or_si256(
                        _mm256_and_si256(c, low4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(n, two)),
                    );
                    let mn = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(c), low4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(n), two)),
                    );
                    (sc, mn)
                };
                let (sc01, mn01) = join(c01, n01);
                let (sc23, mn23) = join(c23, n23);
                // Each pair of sub-blocks (0, 1), (2, 3), (4, 5), (6, 7) in both 128-bit
                // lanes, then one shuffle per sub-block's scales or pair's mins.
                let sc_pairs = [
                    _mm256_permute2x128_si256::<0x00>(sc01, sc01),
                    _mm256_permute2x128_si256::<0x00>(sc23, sc23),
                    _mm256_permute2x128_si256::<0x11>(sc01, sc01),
                    _mm256_permute2x128_si256::<0x11>(sc23, sc23),
                ];
                let mn_src = [
                    _mm256_permute2x128_si256::<0x00>(mn01, mn01),
                    _mm256_permute2x128_si256::<0x00>(mn23, mn23),
                    _mm256_permute2x128_si256::<0x11>(mn01, mn01),
                    _mm256_permute2x128_si256::<0x11>(mn23, mn23),
                ];
                let masks = [
                    _mm256_loadu_si256($scale[0].as_ptr() as *const __m256i),
                    _mm256_loadu_si256($scale[1].as_ptr() as *const __m256i),
                ];
                let mins = _mm256_loadu_si256(MINS_PAIRED.as_ptr() as *const __m256i);
                let ksc: [__m256i; 8] = [
                    _mm256_shuffle_epi8(sc_pairs[0], masks[0]),
                    _mm256_shuffle_epi8(sc_pairs[0], masks[1]),
                    _mm256_shuffle_epi8(sc_pairs[1], masks[0]),
                    _mm256_shuffle_epi8(sc_pairs[1], masks[1]),
                    _mm256_shuffle_epi8(sc_pairs[2], masks[0]),
                    _mm256_shuffle_epi8(sc_pairs[2], masks[1]),
                    _mm256_shuffle_epi8(sc_pairs[3], masks[0]),
                    _mm256_shuffle_epi8(sc_pairs[3], masks[1]),
                ];
                // Mins of sub-blocks 2i and 2i + 1 as the 16-bit halves of lane r.
                let mn_pairs: [__m256i; 4] = [
                    _mm256_shuffle_epi8(mn_src[0], mins),
                    _mm256_shuffle_epi8(mn_src[1], mins),
                    _mm256_shuffle_epi8(mn_src[2], mins),
                    _mm256_shuffle_epi8(mn_src[3], mins),
                ];
                (ksc, mn_pairs)
            }
        }
    };
}

/// The packed kernels for one instruction set: `$features` for `#[target_feature]`, `$dot8`
/// for the 8-chunk dot product and `$scale` for the masks building the scales it multiplies by.
/// Products of `PAIRED_FROM` or more tokens go to the prompt kernels of the same name
/// (`prompt_q4_0_avx2::$name`, `prompt_q4_k_avx2::$name`). Decode's Q4_0 product
/// (`groups_one_token`) sums in the `vpmaddubsw` form at every level: it is bound by memory
/// bandwidth, not by the multiplies.
macro_rules! packed_kernels {
    ($name:ident, $features:literal, $dot8:ident, $scale:ident) => {
        pub(crate) mod $name {
            use super::*;

            /// One block column of a packed Q4_0 group at `p` (144 bytes): the 8 rows' scales
            /// and the 8 chunks of unsigned nibbles. Chunk c holds quants 4c..4c+4 (low
            /// nibbles) and 16+4c.. (high).
            ///
            /// # Safety
            /// `p` must point at 144 readable bytes.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q4_0_column(p: *const u8) -> (__m256, [__m256i; 8]) {
                let mask = _mm256_set1_epi8(0x0F);
                // SAFETY: 16 bytes of scales, then 4 × 32 bytes of nibbles (the caller's bound).
                let (dw, v) = unsafe {
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                    let v: [__m256i; 4] = std::array::from_fn(|c| {
                        _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i)
                    });
                    (dw, v)
                };
                let w = std::array::from_fn(|i| {
                    let x = v[i / 2];
                    if i % 2 == 0 {
                        _mm256_and_si256(x, mask)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask)
                    }
                });
                (dw, w)
            }

            /// One group (`wg`, 8 rows) times tokens `t0..t0 + T`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn group_tile<const T: usize>(
                args: &PackedArgs<'_>,
                wg: *const u8,
                t0: usize,
                acc_out: &mut [__m256; TOKEN_TILE],
            ) {
                let nb = args.n_cols / 32;
                let ab = nb * 34;
                let mut acc = [_mm256_setzero_ps(); T];
                for b in 0..nb {
                    // SAFETY: block column b of the group is 144 bytes at wg + 144b (the caller
                    // passes a whole group of nb columns); token t's activation row has nb
                    // blocks of 34 bytes and the summaries nb entries per token (checked by
                    // `matmul_packed_at`).
                    unsafe {
                        let p = wg.add(b * 144);
                        // Ask for the column 8 ahead now: a group is one long stream, and decode
                        // is bound by how early its lines arrive. Only the first tile streams
                        // the group; the later ones find it in L1.
                        if t0 == 0 {
                            for line in 0..3 {
                                let at = PREFETCH_AHEAD + 64 * line;
                                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at) as *const i8);
                            }
                        }
                        let (dw, w) = q4_0_column(p);
                        for t in 0..T {
                            let tok = t0 + t;
                            let y = args.acts.as_ptr().add(tok * ab + b * 34 + 2);
                            let dot = $dot8!(&w, y, [0, 16, 4, 20, 8, 24, 12, 28]);
                            let zero_point =
                                _mm256_set1_epi32(*args.act_s.get_unchecked(tok * nb + b));
                            let dot = _mm256_sub_epi32(dot, zero_point);
                            let d = _mm256_mul_ps(
                                dw,
                                _mm256_set1_ps(*args.act_d.get_unchecked(tok * nb + b)),
                            );
                            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), acc[t]);
                        }
                    }
                }
                acc_out[..T].copy_from_slice(&acc);
            }

            /// Every group times every token, `TOKEN_TILE` tokens at a time; `tiles[t - 1]`
            /// handles a tile of `t` tokens, groups are `group_bytes` apart.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn drive(
                args: &PackedArgs<'_>,
                out: &mut [f32],
                group_bytes: usize,
                tiles: [TileFn; TOKEN_TILE],
            ) {
                let n_groups = args.w.len() / group_bytes;
                let n_rows = n_groups * PACK_ROWS;
                let mut acc = [_mm256_setzero_ps(); TOKEN_TILE];
                for g in 0..n_groups {
                    // SAFETY: group g lies inside `w` (n_groups whole groups).
                    let wg = unsafe { args.w.as_ptr().add(g * group_bytes) };
                    let mut t0 = 0;
                    while t0 < args.n_tokens {
                        let t = TOKEN_TILE.min(args.n_tokens - t0);
                        // SAFETY: tokens t0..t0 + t exist; the tile kernels need this
                        // function's features.
                        unsafe { tiles[t - 1](args, wg, t0, &mut acc) };
                        for (i, a) in acc[..t].iter().enumerate() {
                            let at = (t0 + i) * n_rows + g * PACK_ROWS;
                            let dst = &mut out[at..at + PACK_ROWS];
                            // SAFETY: dst has exactly 8 f32.
                            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), *a) };
                        }
                        t0 += t;
                    }
                }
            }

            /// `G` groups (from `wg`, `stride` bytes apart) times one token, block column by
            /// block column: `G` memory streams per thread, each activation broadcast serving
            /// every group. A column is taken 32 bytes (two chunks) at a time across the groups,
            /// so only two broadcasts are live at once: holding all eight (as [`dot8_maddubs`]
            /// does), two groups' work did not fit in 16 registers and spilled.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn groups_one_token<const G: usize>(
                args: &PackedArgs<'_>,
                wg: *const u8,
                stride: usize,
            ) -> [__m256; G] {
                let nb = args.n_cols / 32;
                let mask = _mm256_set1_epi8(0x0F);
                let ones = _mm256_set1_epi16(1);
                let mut acc = [_mm256_setzero_ps(); G];
                for b in 0..nb {
                    // SAFETY: the G groups are whole (the caller passes G of nb columns each,
                    // `stride` bytes apart), so each column's 144 bytes are readable; the
                    // token's activation row has nb blocks of 34 bytes and the summaries nb
                    // entries (checked by `matmul_packed_at`).
                    unsafe {
                        let y = args.acts.as_ptr().add(b * 34 + 2);
                        let bc = |o: usize| _mm256_broadcastd_epi32(_mm_loadu_si32(y.add(o)));
                        let cols: [*const u8; G] =
                            std::array::from_fn(|k| wg.add(k * stride + b * 144));
                        for p in cols {
                            for line in 0..3 {
                                let at = PREFETCH_AHEAD + 64 * line;
                                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at) as *const i8);
                            }
                        }
                        // 16-bit sums of the 8 chunks' products, exact in any order (each
                        // partial sum is under 8 × 2 × 15 × 128 < 2^15 in magnitude), so
                        // equal to `dot8_maddubs`'s.
                        let mut sums = [_mm256_setzero_si256(); G];
                        for c in 0..4 {
                            // Chunk 2c (low nibbles) holds quants 4c.., chunk 2c + 1 (high)
                            // quants 16 + 4c...
                            let (y_lo, y_hi) = (bc(4 * c), bc(16 + 4 * c));
                            for (s, p) in sums.iter_mut().zip(cols) {
                                let v = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                                let lo = _mm256_and_si256(v, mask);
                                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                                let lo = _mm256_maddubs_epi16(lo, y_lo);
                                let hi = _mm256_maddubs_epi16(hi, y_hi);
                                *s = _mm256_add_epi16(*s, _mm256_add_epi16(lo, hi));
                            }
                        }
                        let zero_point = _mm256_set1_epi32(*args.act_s.get_unchecked(b));
                        let d_act = _mm256_set1_ps(*args.act_d.get_unchecked(b));
                        for ((a, s), p) in acc.iter_mut().zip(sums).zip(cols) {
                            let dot = _mm256_sub_epi32(_mm256_madd_epi16(s, ones), zero_point);
                            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                            let d = _mm256_mul_ps(dw, d_act);
                            *a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), *a);
                        }
                    }
                }
                acc
            }

            /// Decode's product. The groups are cut into `STREAMS` runs walked side by side, so
            /// each thread reads that many streams far apart. With one stream a thread reads
            /// only as fast as a plain one-stream read (`examples/decode_bandwidth.rs`); two
            /// far-apart streams read faster. Two adjacent groups side by side, or whole groups
            /// taken from alternate runs, did not.
            #[target_feature(enable = $features)]
            unsafe fn one_token_q4_0x8(args: &PackedArgs<'_>, out: &mut [f32], group_bytes: usize) {
                let n_groups = args.w.len() / group_bytes;
                let run = n_groups / STREAMS;
                for g in 0..run {
                    // SAFETY: groups g + k * run lie inside `w`; same features.
                    let acc = unsafe {
                        let wg = args.w.as_ptr().add(g * group_bytes);
                        groups_one_token::<STREAMS>(args, wg, run * group_bytes)
                    };
                    for (k, a) in acc.iter().enumerate() {
                        let at = (g + k * run) * PACK_ROWS;
                        // SAFETY: 8 f32 at `at` lie inside `out`.
                        unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), *a) };
                    }
                }
                for g in run * STREAMS..n_groups {
                    // SAFETY: group g lies inside `w`; same features.
                    let acc = unsafe {
                        groups_one_token::<1>(args, args.w.as_ptr().add(g * group_bytes), 0)
                    };
                    let at = g * PACK_ROWS;
                    // SAFETY: 8 f32 at `at` lie inside `out`.
                    unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), acc[0]) };
                }
            }

            /// Packed Q4_0 times Q8_0 activations, every group and token.
            ///
            /// # Safety
            /// The CPU must have this module's features; arguments as checked by
            /// `crate::packed::matmul_packed_at`.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn matmul_q4_0x8(args: &PackedArgs<'_>, out: &mut [f32]) {
                let group_bytes = args.n_cols / 32 * 144;
                if args.n_tokens == 1 {
                    // SAFETY: same features; arguments as checked by the caller.
                    return unsafe { one_token_q4_0x8(args, out, group_bytes) };
                }
                if args.n_tokens >= PAIRED_FROM {
                    // SAFETY: same features (a superset of AVX2, FMA, F16C); arguments as
                    // checked by the caller.
                    return unsafe {
                        crate::x86::prompt_q4_0_avx2::$name::matmul_tokens(args, out)
                    };
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

            /// One Q4_K group (`wg`, 8 rows) times tokens `t0..t0 + T`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn group_tile_q4_k<const T: usize>(
                args: &PackedArgs<'_>,
                wg: *const u8,
                t0: usize,
                acc_out: &mut [__m256; TOKEN_TILE],
            ) {
                let mut acc = [_mm256_setzero_ps(); T];
                for b in 0..args.n_cols / 256 {
                    // SAFETY: the caller passes a whole group of n_cols / 256 super-blocks.
                    unsafe { q4_k_column::<T>(args, wg, b, t0, &mut acc) };
                }
                acc_out[..T].copy_from_slice(&acc);
            }

            q4_k_header_fn!($features, $scale);

            /// Super-block column `b` of one Q4_K group (`wg`, 8 rows) times tokens
            /// `t0..t0 + T`, added into `acc`.
            ///
            /// # Safety
            /// As for [`group_tile_q4_k`], and `b` below the group's super-block count.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q4_k_column<const T: usize>(
                args: &PackedArgs<'_>,
                wg: *const u8,
                b: usize,
                t0: usize,
                acc: &mut [__m256; T],
            ) {
                let nb = args.n_cols / 256;
                let ab = nb * 292;
                let mask = _mm256_set1_epi8(0x0F);
                // SAFETY: super-block column b of the group is 1152 bytes at wg + 1152b;
                // token rows have nb Q8_K blocks of 292 bytes (both checked by
                // `matmul_packed_at`) and the summaries 4 words per block and token
                // (`summarize_q8_k`).
                unsafe {
                    let col = wg.add(b * 1152);
                    let next = col.wrapping_add(1152);
                    // Only the first tile streams the group (later ones find it in L1).
                    let stream = t0 == 0;
                    if stream {
                        _mm_prefetch::<_MM_HINT_T0>(next as *const i8);
                        _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64) as *const i8);
                    }
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
                    let dmin = _mm256_cvtph_ps(_mm_loadu_si128(col.add(16) as *const __m128i));
                    let (ksc, mn_pairs) = q4_k_header(col);
                    let mut isum = [_mm256_setzero_si256(); T];
                    for j in 0..4 {
                        for line in 0..4 {
                            let at = 128 + 256 * j + 64 * line;
                            if stream {
                                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(at) as *const i8);
                            }
                        }
                        let v: [__m256i; 8] = std::array::from_fn(|k| {
                            _mm256_loadu_si256(col.add(128 + 256 * j + 32 * k) as *const __m256i)
                        });
                        let lo = v.map(|x| _mm256_and_si256(x, mask));
                        let hi = v.map(|x| _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask));
                        let (k_lo, k_hi) = (ksc[2 * j], ksc[2 * j + 1]);
                        for t in 0..T {
                            let y = args.acts.as_ptr().add((t0 + t) * ab + b * 292 + 4 + 64 * j);
                            // scale · Σ q·y of sub-blocks 2j and 2j + 1.
                            let lo = $dot8!(&lo, y, [0, 4, 8, 12, 16, 20, 24, 28], k_lo);
                            let hi = $dot8!(&hi, y, [32, 36, 40, 44, 48, 52, 56, 60], k_hi);
                            isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(lo, hi));
                        }
                    }
                    for t in 0..T {
                        let a = args.acts.as_ptr().add((t0 + t) * ab + b * 292);
                        let d_a = (a as *const f32).read_unaligned();
                        // Σ_s min_s · sum_s, exactly (min < 2^6, |sum| ≤ 32 × 128): pairs
                        // of sub-block sums, 16 bits each, from the summaries.
                        let pairs = args.act_s.as_ptr().add(((t0 + t) * nb + b) * 4);
                        let mut msum = _mm256_setzero_si256();
                        for (i, mn) in mn_pairs.iter().enumerate() {
                            let pair = _mm256_set1_epi32(*pairs.add(i));
                            msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*mn, pair));
                        }
                        let da = _mm256_set1_ps(d_a);
                        acc[t] = _mm256_fmadd_ps(
                            _mm256_mul_ps(d, da),
                            _mm256_cvtepi32_ps(isum[t]),
                            acc[t],
                        );
                        acc[t] = _mm256_fnmadd_ps(
                            _mm256_mul_ps(dmin, da),
                            _mm256_cvtepi32_ps(msum),
                            acc[t],
                        );
                    }
                }
            }

            /// Decode's Q4_K product: as for Q4_0 (`one_token_q4_0x8`), two far-apart runs
            /// of groups walked side by side, super-block column by super-block column.
            #[target_feature(enable = $features)]
            unsafe fn one_token_q4_kx8(args: &PackedArgs<'_>, out: &mut [f32], group_bytes: usize) {
                let n_groups = args.w.len() / group_bytes;
                let run = n_groups / 2;
                let base = args.w.as_ptr();
                for g in 0..run {
                    let mut acc = [[_mm256_setzero_ps(); 1]; 2];
                    for b in 0..args.n_cols / 256 {
                        for (k, a) in acc.iter_mut().enumerate() {
                            // SAFETY: groups g and g + run lie inside `w`; same features.
                            unsafe {
                                let wg = base.add((g + k * run) * group_bytes);
                                q4_k_column::<1>(args, wg, b, 0, a);
                            }
                        }
                    }
                    for (k, a) in acc.iter().enumerate() {
                        let at = (g + k * run) * PACK_ROWS;
                        // SAFETY: 8 f32 at `at` lie inside `out`.
                        unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), a[0]) };
                    }
                }
                for g in 2 * run..n_groups {
                    let mut acc = [_mm256_setzero_ps(); TOKEN_TILE];
                    // SAFETY: group g lies inside `w`; same features.
                    unsafe { group_tile_q4_k::<1>(args, base.add(g * group_bytes), 0, &mut acc) };
                    let at = g * PACK_ROWS;
                    // SAFETY: 8 f32 at `at` lie inside `out`.
                    unsafe { _mm256_storeu_ps(out[at..at + PACK_ROWS].as_mut_ptr(), acc[0]) };
                }
            }

            /// Packed Q4_K times Q8_K activations, every group and token.
            ///
            /// # Safety
            /// The CPU must have this module's features; arguments as checked by
            /// `crate::packed::matmul_packed_at`.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn matmul_q4_kx8(args: &PackedArgs<'_>, out: &mut [f32]) {
                let group_bytes = args.n_cols / 256 * 1152;
                if args.n_tokens == 1 {
                    // SAFETY: same features; arguments as checked by the caller.
                    return unsafe { one_token_q4_kx8(args, out, group_bytes) };
                }
                if args.n_tokens >= PAIRED_FROM {
                    // SAFETY: same features (a superset of AVX2, FMA, F16C); arguments as
                    // checked by the caller.
                    return unsafe {
                        crate::x86::prompt_q4_k_avx2::$name::matmul_tokens(args, out)
                    };
                }
                let tiles: [TileFn; TOKEN_TILE] = [
                    group_tile_q4_k::<1>,
                    group_tile_q4_k::<2>,
                    group_tile_q4_k::<3>,
                    group_tile_q4_k::<4>,
                ];
                // SAFETY: same features; arguments as checked by the caller.
                unsafe { drive(args, out, group_bytes, tiles) }
            }
        }
    };
}

packed_kernels!(avx2, "avx2,fma,f16c", dot8_maddubs, SCALES_MADDUBS);
packed_kernels!(avxvnni, "avx2,fma,f16c,avxvnni", dot8_dpbusd, SCALES_DPBUSD);
// The AVX-VNNI kernels with `vpdpbusd` emulated: tests run them on any AVX2 CPU.
#[cfg(test)]
packed_kernels!(
    avxvnni_emulated,
    "avx2,fma,f16c",
    dot8_dpbusd_emulated,
    SCALES_DPBUSD
);

/// The Q4_K header in the scale form `vpdpbusd` multiplies by, for the 512-bit VNNI kernel
/// (`packed_q4k_avx512`).
pub(crate) mod vnni {
    use super::*;
    q4_k_header_fn!(
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        SCALES_DPBUSD
    );
}

/// The same for the tests' VNNI kernel with `vpdpbusd` emulated (any AVX-512 BW CPU).
#[cfg(test)]
pub(crate) mod vnni_emulated {
    use super::*;
    q4_k_header_fn!("avx2,fma,f16c", SCALES_DPBUSD);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masks give what widening the 8 scale bytes of a sub-block gives: row r's byte in
    /// both 16-bit halves of lane r (`vpmaddubsw` form), or as lane r (`vpdpbusd` form), and
    /// the mins of a pair of sub-blocks in the halves of lane r. Checked with AVX2 widening
    /// instructions, so the VNNI form's masks are checked on any AVX2 machine too.
    #[test]
    fn scale_and_min_masks_match_widening() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        // SAFETY: AVX2 is present; every load reads 16 or 32 bytes of a 32-byte array.
        unsafe {
            let bytes: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xA5);
            let lane = _mm_loadu_si128(bytes.as_ptr() as *const __m128i);
            let both = _mm256_broadcastsi128_si256(lane);
            let as_bytes = |v: __m256i| std::mem::transmute::<__m256i, [u8; 32]>(v);
            let shuffled = |mask: &[u8; 32]| {
                let m = _mm256_loadu_si256(mask.as_ptr() as *const __m256i);
                as_bytes(_mm256_shuffle_epi8(both, m))
            };
            for odd in 0..2 {
                let k = if odd == 0 {
                    lane
                } else {
                    _mm_unpackhi_epi64(lane, lane)
                };
                let maddubs = as_bytes(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(k, k)));
                assert_eq!(shuffled(&SCALES_MADDUBS[odd]), maddubs, "sub-block {odd}");
                let dpbusd = as_bytes(_mm256_cvtepu8_epi32(k));
                assert_eq!(shuffled(&SCALES_DPBUSD[odd]), dpbusd, "sub-block {odd}");
            }
            let pairs = _mm_unpacklo_epi8(lane, _mm_unpackhi_epi64(lane, lane));
            let mins = as_bytes(_mm256_cvtepu8_epi16(pairs));
            assert_eq!(shuffled(&MINS_PAIRED), mins);
        }
    }
}
