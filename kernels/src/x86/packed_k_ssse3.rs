//! Packed Q4_K, Q5_K and Q6_K kernels for x86-64 CPUs without AVX2 (the `ssse3` level), built
//! like the Q4_0 and Q8_0 ones in `packed_ssse3`: each half of an 8-row group (rows `4h..4h+4`,
//! the bytes `16h..16h + 16` of every 32-byte "8 rows × 4 bytes" vector of the layouts in
//! `crate::packed`) is one 128-bit accumulator, row `4h + r` in lane `r`; `pmaddubsw` forms the
//! byte dots of unsigned quants against activation quads broadcast with `pshufd`, and a half
//! column is unpacked once per sub-block and shared by up to 4 tokens.
//!
//! Per-row sub-block scales multiply whole vectors through `pmaddwd` (scale in both 16-bit
//! halves of a lane), the only 32-bit multiply SSE2 has. The 16-bit partial sums of `pmaddubsw`
//! never overflow: Q4_K adds 8 results (8 × 2 × 15 × 128 < 2^15), Q5_K 4 (4 × 2 × 31 × 128),
//! Q6_K 2 (2 × 2 × 63 × 128). All integer sums are exact, and the super-block steps are the
//! unfused twins' (`scalar::packed::matmul_q*_kx8_unfused`: one multiply and one add, two
//! roundings), so the results match them bit for bit.

use std::arch::x86_64::*;

use super::packed_ssse3::{accumulate, drive, half_tiles, quad, widen_f16, HalfTileFn, HALF, TILE};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Bytes of one super-block column of a packed Q4_K group.
const Q4_K_COLUMN: usize = 1152;
/// Bytes of one super-block column of a packed Q5_K group.
const Q5_K_COLUMN: usize = 1408;
/// Bytes of one super-block column of a packed Q6_K group.
const Q6_K_COLUMN: usize = 1680;
/// Bytes of one Q8_K activation block: f32 `d`, 256 quants, 16 i16 sums.
const Q8_K_BLOCK: usize = 292;

/// A `pshufb` mask whose lane `r` is bytes `lo + r`, zero, `hi + r`, zero: two bytes of a
/// vector, zero-extended into the 16-bit halves of lane `r`.
const fn pick(lo: u8, hi: u8) -> [u8; 16] {
    let mut m = [0x80u8; 16];
    let mut r = 0;
    while r < 4 {
        m[4 * r] = lo + r as u8;
        m[4 * r + 2] = hi + r as u8;
        r += 1;
    }
    m
}

/// `SCALE_PICK[h][odd]`: from a vector holding sub-block `2m`'s bytes for rows 0..8, then
/// sub-block `2m + 1`'s, the byte of row `4h + r` of sub-block `2m + odd` in both halves of
/// lane `r`.
const SCALE_PICK: [[[u8; 16]; 2]; 2] = [[pick(0, 0), pick(8, 8)], [pick(4, 4), pick(12, 12)]];
/// `MIN_PICK[h]`: from the same form, row `4h + r`'s bytes of sub-blocks `2m` and `2m + 1` as
/// the low and high halves of lane `r`.
const MIN_PICK: [[u8; 16]; 2] = [pick(0, 8), pick(4, 12)];

/// `DUP[odd]`: a `pshufb` mask copying the low (`odd = 0`) or high i16 of each lane into both.
const DUP: [[u8; 16]; 2] = [
    [0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13],
    [2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15],
];

/// A 16-byte constant as a vector.
#[inline(always)]
unsafe fn mask(m: &[u8; 16]) -> __m128i {
    // SAFETY: 16 readable bytes.
    unsafe { _mm_loadu_si128(m.as_ptr() as *const __m128i) }
}

/// The scales and mins of half `h` of a packed Q4_K (or Q5_K: same header) super-block column
/// at `col`: sub-block `s`'s 6-bit scale of row `4h + r` in both 16-bit halves of lane `r`, and
/// the mins of sub-blocks `2i` and `2i + 1` as the low and high halves of lane `r` (the form of
/// the activation summaries' words, so one `pmaddwd` gives `Σ min · sum` of the pair).
///
/// # Safety
/// `col` must point at the column's first 128 readable bytes.
#[inline]
#[target_feature(enable = "sse2,ssse3")]
unsafe fn k_header(col: *const u8, h: usize) -> ([__m128i; 8], [__m128i; 4]) {
    let low4 = _mm_set1_epi8(0x0f);
    let two = _mm_set1_epi8(3);
    // SAFETY: bytes 32..128 of the column (the caller's bound); the masks are 16-byte arrays.
    unsafe {
        // Top bits: nibble r of sub-block s's word (scale's bits 4..6 in bits 0..2, min's in
        // 2..4) as byte r of a run of 8, two sub-blocks per vector like the low bits.
        let words = [
            _mm_loadu_si128(col.add(96) as *const __m128i),
            _mm_loadu_si128(col.add(112) as *const __m128i),
        ];
        let even = words.map(|w| _mm_and_si128(w, low4));
        let odd = words.map(|w| _mm_and_si128(_mm_srli_epi16::<4>(w), low4));
        let tops = [
            _mm_unpacklo_epi8(even[0], odd[0]),
            _mm_unpackhi_epi8(even[0], odd[0]),
            _mm_unpacklo_epi8(even[1], odd[1]),
            _mm_unpackhi_epi8(even[1], odd[1]),
        ];
        // Sub-blocks 2m and 2m + 1, rows 0..8 each: low bits of scale | min << 4.
        let (mut sc, mut mn) = ([_mm_setzero_si128(); 4], [_mm_setzero_si128(); 4]);
        for m in 0..4 {
            let low = _mm_loadu_si128(col.add(32 + 16 * m) as *const __m128i);
            sc[m] = _mm_or_si128(
                _mm_and_si128(low, low4),
                _mm_slli_epi16::<4>(_mm_and_si128(tops[m], two)),
            );
            mn[m] = _mm_or_si128(
                _mm_and_si128(_mm_srli_epi16::<4>(low), low4),
                _mm_slli_epi16::<4>(_mm_and_si128(_mm_srli_epi16::<2>(tops[m]), two)),
            );
        }
        let scales =
            std::array::from_fn(|s| _mm_shuffle_epi8(sc[s / 2], mask(&SCALE_PICK[h][s % 2])));
        let mins = std::array::from_fn(|i| _mm_shuffle_epi8(mn[i], mask(&MIN_PICK[h])));
        (scales, mins)
    }
}

/// Adds a Q4_K or Q5_K super-block to `acc` as the twin does: `acc + (d · d_a) · isum`, then
/// `+ (−(dmin · d_a)) · msum` with `msum = Σ_s min_s · sum_s` from the 4 summary words at
/// `pairs` (exact: min < 2^6, |sum| ≤ 32 × 128).
///
/// # Safety
/// `pairs` must point at 4 readable words.
#[inline(always)]
unsafe fn add_k_block(
    acc: __m128,
    (d, dmin, d_a): (__m128, __m128, f32),
    isum: __m128i,
    mins: &[__m128i; 4],
    pairs: *const i32,
) -> __m128 {
    let mut msum = _mm_setzero_si128();
    for (i, mn) in mins.iter().enumerate() {
        // SAFETY: word i of 4 (the caller's bound).
        let pair = _mm_set1_epi32(unsafe { *pairs.add(i) });
        msum = _mm_add_epi32(msum, _mm_madd_epi16(*mn, pair));
    }
    let acc = accumulate(acc, d, d_a, isum);
    // −(dmin · d_a): the product, then its sign flipped (exact), as in the twin.
    let neg = _mm_xor_ps(_mm_mul_ps(dmin, _mm_set1_ps(d_a)), _mm_set1_ps(-0.0));
    _mm_add_ps(acc, _mm_mul_ps(neg, _mm_cvtepi32_ps(msum)))
}

/// Token `tok`'s Q8_K activation block `b` and its scale.
///
/// # Safety
/// The block must exist (as checked by `matmul_packed_at`).
#[inline(always)]
unsafe fn q8_k_block(args: &PackedArgs<'_>, tok: usize, b: usize) -> (*const u8, f32) {
    let ab = args.n_cols / 256 * Q8_K_BLOCK;
    // SAFETY: the caller's bound; d is the block's first 4 bytes.
    unsafe {
        let a = args.acts.as_ptr().add(tok * ab + b * Q8_K_BLOCK);
        (a, (a as *const f32).read_unaligned())
    }
}

/// Half `h` of a Q4_K group at `wg` times tokens `t0..t0 + T`.
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q4_k_tile<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    h: usize,
    t0: usize,
) -> [__m128; TILE] {
    let nb = args.n_cols / 256;
    let low4 = _mm_set1_epi8(0x0f);
    let mut acc = [_mm_setzero_ps(); TILE];
    for b in 0..nb {
        // SAFETY: column b of the group is Q4_K_COLUMN bytes at wg + Q4_K_COLUMN·b (the caller
        // passes a whole group); tokens t0..t0 + T have nb Q8_K blocks and 4 summary words per
        // block (checked by `matmul_packed_at`, built by `summarize_q8_k`).
        unsafe {
            let col = wg.add(b * Q4_K_COLUMN);
            let (scales, mins) = k_header(col, h);
            let mut isum = [_mm_setzero_si128(); T];
            for (s, scale) in scales.iter().enumerate() {
                // Sub-block s: nibbles of chunk s / 2 (low for even s), pieces k = quants 4k..
                let chunk = col.add(128 + 256 * (s / 2) + 16 * h);
                let w: [__m128i; 8] = std::array::from_fn(|k| {
                    let x = _mm_loadu_si128(chunk.add(32 * k) as *const __m128i);
                    if s % 2 == 0 {
                        _mm_and_si128(x, low4)
                    } else {
                        _mm_and_si128(_mm_srli_epi16::<4>(x), low4)
                    }
                });
                for (t, sum) in isum.iter_mut().enumerate() {
                    let (a, _) = q8_k_block(args, t0 + t, b);
                    let y = a.add(4 + 32 * s);
                    let y = [
                        _mm_loadu_si128(y as *const __m128i),
                        _mm_loadu_si128(y.add(16) as *const __m128i),
                    ];
                    let mut dot = _mm_maddubs_epi16(w[0], quad(y[0], 0));
                    for k in 1..8 {
                        dot = _mm_add_epi16(dot, _mm_maddubs_epi16(w[k], quad(y[k / 4], k % 4)));
                    }
                    *sum = _mm_add_epi32(*sum, _mm_madd_epi16(dot, *scale));
                }
            }
            let d = widen_f16(_mm_loadl_epi64(col.add(8 * h) as *const __m128i));
            let dmin = widen_f16(_mm_loadl_epi64(col.add(16 + 8 * h) as *const __m128i));
            for (t, sum) in isum.iter().enumerate() {
                let tok = t0 + t;
                let (_, d_a) = q8_k_block(args, tok, b);
                let pairs = args.act_s.as_ptr().add((tok * nb + b) * 4);
                acc[t] = add_k_block(acc[t], (d, dmin, d_a), *sum, &mins, pairs);
            }
        }
    }
    acc
}

/// Decode's product for Q4_K and Q5_K: one token, both halves of each group per super-block
/// column, so each sub-block's activation quads are broadcast once rather than once per half.
/// `sub_sum(col, s, h, quads, scale)` is half `h`'s scaled dot of sub-block `s` of the column
/// at `col` with the sub-block's 8 activation quads (32-bit lanes, one row each).
///
/// # Safety
/// As the callers' (`column` is the type's column size; summaries built by `summarize_q8_k`).
#[inline]
#[target_feature(enable = "sse2,ssse3")]
unsafe fn k_one_token(
    args: &PackedArgs<'_>,
    out: &mut [f32],
    column: usize,
    sub_sum: impl Fn(*const u8, usize, usize, &[__m128i; 8], __m128i) -> __m128i,
) {
    let nb = args.n_cols / 256;
    let group_bytes = nb * column;
    for (g, dst) in out.chunks_exact_mut(PACK_ROWS).enumerate() {
        let mut acc = [_mm_setzero_ps(); 2];
        for b in 0..nb {
            // SAFETY: column b of group g is `column` bytes inside `w` (whole groups); the
            // token has nb Q8_K blocks and 4 summary words per block (checked by
            // `matmul_packed_at`, built by `summarize_q8_k`).
            unsafe {
                let col = args.w.as_ptr().add(g * group_bytes + b * column);
                let headers = [k_header(col, 0), k_header(col, 1)];
                let (a, d_a) = q8_k_block(args, 0, b);
                let mut isum = [_mm_setzero_si128(); 2];
                for s in 0..8 {
                    let y = a.add(4 + 32 * s);
                    let y = [
                        _mm_loadu_si128(y as *const __m128i),
                        _mm_loadu_si128(y.add(16) as *const __m128i),
                    ];
                    let quads: [__m128i; 8] = std::array::from_fn(|k| quad(y[k / 4], k % 4));
                    for (h, sum) in isum.iter_mut().enumerate() {
                        *sum = _mm_add_epi32(*sum, sub_sum(col, s, h, &quads, headers[h].0[s]));
                    }
                }
                for (h, acc_h) in acc.iter_mut().enumerate() {
                    let d = widen_f16(_mm_loadl_epi64(col.add(8 * h) as *const __m128i));
                    let dmin = widen_f16(_mm_loadl_epi64(col.add(16 + 8 * h) as *const __m128i));
                    let pairs = args.act_s.as_ptr().add(b * 4);
                    *acc_h = add_k_block(*acc_h, (d, dmin, d_a), isum[h], &headers[h].1, pairs);
                }
            }
        }
        // SAFETY: dst has exactly 8 f32.
        unsafe {
            _mm_storeu_ps(dst.as_mut_ptr(), acc[0]);
            _mm_storeu_ps(dst.as_mut_ptr().add(HALF), acc[1]);
        }
    }
}

/// Decode's product for Q4_K (see [`k_one_token`]).
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q4_k_one_token(args: &PackedArgs<'_>, out: &mut [f32]) {
    let low4 = _mm_set1_epi8(0x0f);
    let sub_sum = |col: *const u8, s: usize, h: usize, quads: &[__m128i; 8], scale| {
        // SAFETY: sub-block s's half h lies inside the column (k_one_token's bound).
        unsafe {
            let chunk = col.add(128 + 256 * (s / 2) + 16 * h);
            let mut dot = _mm_setzero_si128();
            for (k, q) in quads.iter().enumerate() {
                let x = _mm_loadu_si128(chunk.add(32 * k) as *const __m128i);
                let w = if s.is_multiple_of(2) {
                    _mm_and_si128(x, low4)
                } else {
                    _mm_and_si128(_mm_srli_epi16::<4>(x), low4)
                };
                dot = _mm_add_epi16(dot, _mm_maddubs_epi16(w, *q));
            }
            _mm_madd_epi16(dot, scale)
        }
    };
    // SAFETY: the caller's contract, passed on.
    unsafe { k_one_token(args, out, Q4_K_COLUMN, sub_sum) }
}

/// The top bit `c` (0..8) of each byte of `h`, moved to bit 4 (16-bit shifts; the mask keeps
/// only bits that came from the same byte).
#[inline]
#[target_feature(enable = "sse2,ssse3")]
fn top_bit(h: __m128i, c: usize) -> __m128i {
    let moved = match c {
        0 => _mm_slli_epi16::<4>(h),
        1 => _mm_slli_epi16::<3>(h),
        2 => _mm_slli_epi16::<2>(h),
        3 => _mm_slli_epi16::<1>(h),
        4 => h,
        5 => _mm_srli_epi16::<1>(h),
        6 => _mm_srli_epi16::<2>(h),
        _ => _mm_srli_epi16::<3>(h),
    };
    _mm_and_si128(moved, _mm_set1_epi8(0x10))
}

/// Half `h` of a Q5_K group at `wg` times tokens `t0..t0 + T`.
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q5_k_tile<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    h: usize,
    t0: usize,
) -> [__m128; TILE] {
    let nb = args.n_cols / 256;
    let low4 = _mm_set1_epi8(0x0f);
    let mut acc = [_mm_setzero_ps(); TILE];
    for b in 0..nb {
        // SAFETY: column b of the group is Q5_K_COLUMN bytes at wg + Q5_K_COLUMN·b (the caller
        // passes a whole group); tokens t0..t0 + T have nb Q8_K blocks and 4 summary words per
        // block (checked by `matmul_packed_at`, built by `summarize_q8_k`).
        unsafe {
            let col = wg.add(b * Q5_K_COLUMN);
            let (scales, mins) = k_header(col, h);
            let mut isum = [_mm_setzero_si128(); T];
            for (s, scale) in scales.iter().enumerate() {
                // Sub-block s: A0..A3 then H, 32 bytes each, this half's 16 of each.
                let sub = col.add(128 + 160 * s + 16 * h);
                let nibbles: [__m128i; 4] =
                    std::array::from_fn(|p| _mm_loadu_si128(sub.add(32 * p) as *const __m128i));
                let tops = _mm_loadu_si128(sub.add(128) as *const __m128i);
                // Quad c: quants 4c..4c + 4 of each row.
                let q: [__m128i; 8] = std::array::from_fn(|c| {
                    let nibble = if c % 2 == 0 {
                        _mm_and_si128(nibbles[c / 2], low4)
                    } else {
                        _mm_and_si128(_mm_srli_epi16::<4>(nibbles[c / 2]), low4)
                    };
                    _mm_or_si128(nibble, top_bit(tops, c))
                });
                for (t, sum) in isum.iter_mut().enumerate() {
                    let (a, _) = q8_k_block(args, t0 + t, b);
                    let y = a.add(4 + 32 * s);
                    let y = [
                        _mm_loadu_si128(y as *const __m128i),
                        _mm_loadu_si128(y.add(16) as *const __m128i),
                    ];
                    // Quads 0..4 against y[0], 4..8 against y[1]: 4 results per 16-bit sum.
                    for (half, y) in y.iter().enumerate() {
                        let mut dot = _mm_maddubs_epi16(q[4 * half], quad(*y, 0));
                        for c in 1..4 {
                            dot =
                                _mm_add_epi16(dot, _mm_maddubs_epi16(q[4 * half + c], quad(*y, c)));
                        }
                        *sum = _mm_add_epi32(*sum, _mm_madd_epi16(dot, *scale));
                    }
                }
            }
            let d = widen_f16(_mm_loadl_epi64(col.add(8 * h) as *const __m128i));
            let dmin = widen_f16(_mm_loadl_epi64(col.add(16 + 8 * h) as *const __m128i));
            for (t, sum) in isum.iter().enumerate() {
                let tok = t0 + t;
                let (_, d_a) = q8_k_block(args, tok, b);
                let pairs = args.act_s.as_ptr().add((tok * nb + b) * 4);
                acc[t] = add_k_block(acc[t], (d, dmin, d_a), *sum, &mins, pairs);
            }
        }
    }
    acc
}

/// Decode's product for Q5_K (see [`k_one_token`]).
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q5_k_one_token(args: &PackedArgs<'_>, out: &mut [f32]) {
    let low4 = _mm_set1_epi8(0x0f);
    let sub_sum = |col: *const u8, s: usize, h: usize, quads: &[__m128i; 8], scale| {
        // SAFETY: sub-block s's half h lies inside the column (k_one_token's bound).
        unsafe {
            // Sub-block s: A0..A3 then H, 32 bytes each, this half's 16 of each.
            let sub = col.add(128 + 160 * s + 16 * h);
            let tops = _mm_loadu_si128(sub.add(128) as *const __m128i);
            // Quads 0..4 and 4..8 each summed in 16 bits (4 results at most).
            let mut sum = _mm_setzero_si128();
            for part in 0..2 {
                let mut dot = _mm_setzero_si128();
                for c in 4 * part..4 * part + 4 {
                    let x = _mm_loadu_si128(sub.add(32 * (c / 2)) as *const __m128i);
                    let nibble = if c % 2 == 0 {
                        _mm_and_si128(x, low4)
                    } else {
                        _mm_and_si128(_mm_srli_epi16::<4>(x), low4)
                    };
                    let q = _mm_or_si128(nibble, top_bit(tops, c));
                    dot = _mm_add_epi16(dot, _mm_maddubs_epi16(q, quads[c]));
                }
                sum = _mm_add_epi32(sum, _mm_madd_epi16(dot, scale));
            }
            sum
        }
    };
    // SAFETY: the caller's contract, passed on.
    unsafe { k_one_token(args, out, Q5_K_COLUMN, sub_sum) }
}

/// Half `h` of a Q6_K group at `wg` times tokens `t0..t0 + T`: per super-block,
/// `isum = Σ_s scale_s · dot_s − 32 · Σ_s scale_s · bsum_s`, the second sum one `pmaddwd` per
/// sub-block pair from the Q8_K block's own 16-element sums.
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q6_k_tile<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    h: usize,
    t0: usize,
) -> [__m128; TILE] {
    let nb = args.n_cols / 256;
    let low4 = _mm_set1_epi8(0x0f);
    let top2 = _mm_set1_epi8(0x30);
    let mut acc = [_mm_setzero_ps(); TILE];
    for b in 0..nb {
        // SAFETY: column b of the group is Q6_K_COLUMN bytes at wg + Q6_K_COLUMN·b (the caller
        // passes a whole group); tokens t0..t0 + T have nb Q8_K blocks (d at 0, quants at
        // 4..260, sums at 260..292; checked by `matmul_packed_at`). The masks are 16 bytes.
        unsafe {
            let col = wg.add(b * Q6_K_COLUMN);
            let mut isum = [_mm_setzero_si128(); T];
            let mut bias = [_mm_setzero_si128(); T];
            for p in 0..8 {
                // Row 4h + r's i8 scales of sub-blocks 2p and 2p + 1 as the i16 halves of lane
                // r (sign-extended without SSE4.1: each byte doubled, shifted down 8).
                let bytes = _mm_loadl_epi64(col.add(16 + 16 * p + 8 * h) as *const __m128i);
                let pair = _mm_srai_epi16::<8>(_mm_unpacklo_epi8(bytes, bytes));
                for (t, bias) in bias.iter_mut().enumerate() {
                    let (a, _) = q8_k_block(args, t0 + t, b);
                    let sums = _mm_set1_epi32((a.add(260 + 4 * p) as *const i32).read_unaligned());
                    *bias = _mm_add_epi32(*bias, _mm_madd_epi16(pair, sums));
                }
                for (odd, dup) in DUP.iter().enumerate() {
                    let s = 2 * p + odd;
                    let scale = _mm_shuffle_epi8(pair, mask(dup));
                    // Sub-block s: A, B, H, 32 bytes each, this half's 16 of each.
                    let sub = col.add(144 + 96 * s + 16 * h);
                    let va = _mm_loadu_si128(sub as *const __m128i);
                    let vb = _mm_loadu_si128(sub.add(32) as *const __m128i);
                    let vh = _mm_loadu_si128(sub.add(64) as *const __m128i);
                    // Quad c: low nibble from A or B, top two bits from H's bits 2c, 2c + 1.
                    let q = [
                        _mm_or_si128(
                            _mm_and_si128(va, low4),
                            _mm_and_si128(_mm_slli_epi16::<4>(vh), top2),
                        ),
                        _mm_or_si128(
                            _mm_and_si128(_mm_srli_epi16::<4>(va), low4),
                            _mm_and_si128(_mm_slli_epi16::<2>(vh), top2),
                        ),
                        _mm_or_si128(_mm_and_si128(vb, low4), _mm_and_si128(vh, top2)),
                        _mm_or_si128(
                            _mm_and_si128(_mm_srli_epi16::<4>(vb), low4),
                            _mm_and_si128(_mm_srli_epi16::<2>(vh), top2),
                        ),
                    ];
                    for (t, sum) in isum.iter_mut().enumerate() {
                        let (a, _) = q8_k_block(args, t0 + t, b);
                        let y = _mm_loadu_si128(a.add(4 + 16 * s) as *const __m128i);
                        let dot = |c: usize| _mm_maddubs_epi16(q[c], quad(y, c));
                        let s01 = _mm_add_epi16(dot(0), dot(1));
                        let s23 = _mm_add_epi16(dot(2), dot(3));
                        let scaled =
                            _mm_add_epi32(_mm_madd_epi16(s01, scale), _mm_madd_epi16(s23, scale));
                        *sum = _mm_add_epi32(*sum, scaled);
                    }
                }
            }
            let d = widen_f16(_mm_loadl_epi64(col.add(8 * h) as *const __m128i));
            for t in 0..T {
                let (_, d_a) = q8_k_block(args, t0 + t, b);
                let total = _mm_sub_epi32(isum[t], _mm_slli_epi32::<5>(bias[t]));
                acc[t] = accumulate(acc[t], d, d_a, total);
            }
        }
    }
    acc
}

/// Decode's product for Q6_K, both halves per super-block column as in [`q4_k_one_token`].
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q6_k_one_token(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 256;
    let group_bytes = nb * Q6_K_COLUMN;
    let low4 = _mm_set1_epi8(0x0f);
    let top2 = _mm_set1_epi8(0x30);
    for (g, dst) in out.chunks_exact_mut(PACK_ROWS).enumerate() {
        let mut acc = [_mm_setzero_ps(); 2];
        for b in 0..nb {
            // SAFETY: column b of group g is Q6_K_COLUMN bytes inside `w` (whole groups); the
            // token has nb Q8_K blocks (d at 0, quants at 4..260, sums at 260..292; checked by
            // `matmul_packed_at`). The masks are 16 bytes.
            unsafe {
                let col = args.w.as_ptr().add(g * group_bytes + b * Q6_K_COLUMN);
                let (a, d_a) = q8_k_block(args, 0, b);
                let mut isum = [_mm_setzero_si128(); 2];
                let mut bias = [_mm_setzero_si128(); 2];
                for p in 0..8 {
                    // Rows 4h + r's i8 scales of sub-blocks 2p and 2p + 1, as in `q6_k_tile`.
                    let pairs: [__m128i; 2] = std::array::from_fn(|h| {
                        let bytes = _mm_loadl_epi64(col.add(16 + 16 * p + 8 * h) as *const __m128i);
                        _mm_srai_epi16::<8>(_mm_unpacklo_epi8(bytes, bytes))
                    });
                    let sums = _mm_set1_epi32((a.add(260 + 4 * p) as *const i32).read_unaligned());
                    for (bias, pair) in bias.iter_mut().zip(&pairs) {
                        *bias = _mm_add_epi32(*bias, _mm_madd_epi16(*pair, sums));
                    }
                    for (odd, dup) in DUP.iter().enumerate() {
                        let s = 2 * p + odd;
                        let y = _mm_loadu_si128(a.add(4 + 16 * s) as *const __m128i);
                        let quads: [__m128i; 4] = std::array::from_fn(|c| quad(y, c));
                        for (h, sum) in isum.iter_mut().enumerate() {
                            let scale = _mm_shuffle_epi8(pairs[h], mask(dup));
                            let sub = col.add(144 + 96 * s + 16 * h);
                            let va = _mm_loadu_si128(sub as *const __m128i);
                            let vb = _mm_loadu_si128(sub.add(32) as *const __m128i);
                            let vh = _mm_loadu_si128(sub.add(64) as *const __m128i);
                            let q = [
                                _mm_or_si128(
                                    _mm_and_si128(va, low4),
                                    _mm_and_si128(_mm_slli_epi16::<4>(vh), top2),
                                ),
                                _mm_or_si128(
                                    _mm_and_si128(_mm_srli_epi16::<4>(va), low4),
                                    _mm_and_si128(_mm_slli_epi16::<2>(vh), top2),
                                ),
                                _mm_or_si128(_mm_and_si128(vb, low4), _mm_and_si128(vh, top2)),
                                _mm_or_si128(
                                    _mm_and_si128(_mm_srli_epi16::<4>(vb), low4),
                                    _mm_and_si128(_mm_srli_epi16::<2>(vh), top2),
                                ),
                            ];
                            let dot = |c: usize| _mm_maddubs_epi16(q[c], quads[c]);
                            let s01 = _mm_add_epi16(dot(0), dot(1));
                            let s23 = _mm_add_epi16(dot(2), dot(3));
                            let scaled = _mm_add_epi32(
                                _mm_madd_epi16(s01, scale),
                                _mm_madd_epi16(s23, scale),
                            );
                            *sum = _mm_add_epi32(*sum, scaled);
                        }
                    }
                }
                for (h, acc_h) in acc.iter_mut().enumerate() {
                    let d = widen_f16(_mm_loadl_epi64(col.add(8 * h) as *const __m128i));
                    let total = _mm_sub_epi32(isum[h], _mm_slli_epi32::<5>(bias[h]));
                    *acc_h = accumulate(*acc_h, d, d_a, total);
                }
            }
        }
        // SAFETY: dst has exactly 8 f32.
        unsafe {
            _mm_storeu_ps(dst.as_mut_ptr(), acc[0]);
            _mm_storeu_ps(dst.as_mut_ptr().add(HALF), acc[1]);
        }
    }
}

/// Packed Q4_K times Q8_K activations, every group and token.
///
/// # Safety
/// The CPU must have SSSE3; arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn matmul_q4_kx8(args: &PackedArgs<'_>, out: &mut [f32]) {
    if args.n_tokens == 1 {
        // SAFETY: same features; arguments as checked by the caller.
        return unsafe { q4_k_one_token(args, out) };
    }
    // SAFETY: same features; arguments as checked by the caller.
    unsafe {
        drive(
            args,
            out,
            args.n_cols / 256 * Q4_K_COLUMN,
            half_tiles!(q4_k_tile),
        )
    }
}

/// Packed Q5_K times Q8_K activations, every group and token.
///
/// # Safety
/// The CPU must have SSSE3; arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn matmul_q5_kx8(args: &PackedArgs<'_>, out: &mut [f32]) {
    if args.n_tokens == 1 {
        // SAFETY: same features; arguments as checked by the caller.
        return unsafe { q5_k_one_token(args, out) };
    }
    // SAFETY: same features; arguments as checked by the caller.
    unsafe {
        drive(
            args,
            out,
            args.n_cols / 256 * Q5_K_COLUMN,
            half_tiles!(q5_k_tile),
        )
    }
}

/// Packed Q6_K times Q8_K activations, every group and token.
///
/// # Safety
/// The CPU must have SSSE3; arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn matmul_q6_kx8(args: &PackedArgs<'_>, out: &mut [f32]) {
    if args.n_tokens == 1 {
        // SAFETY: same features; arguments as checked by the caller.
        return unsafe { q6_k_one_token(args, out) };
    }
    // SAFETY: same features; arguments as checked by the caller.
    unsafe {
        drive(
            args,
            out,
            args.n_cols / 256 * Q6_K_COLUMN,
            half_tiles!(q6_k_tile),
        )
    }
}
