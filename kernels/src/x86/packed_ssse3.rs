//! Packed Q4_0 and Q8_0 kernels for x86-64 CPUs without AVX2 (the `ssse3` level): Atom and
//! Celeron J/N-series, Core 2, Xeons before Haswell — common in factory edge boxes.
//!
//! The layouts are the AVX2 kernels' (`crate::packed`). A 32-byte chunk of a column holds 8 rows
//! × 4 bytes, so its low 16 bytes are rows 0..4 and its high 16 bytes rows 4..8: each half of a
//! group is one 128-bit accumulator, row `r` in lane `r % 4`, and `pmaddubsw` (SSSE3) forms the
//! byte dots against activation quads broadcast with `pshufd`. A half column is unpacked once and
//! shared by up to 4 tokens.
//!
//! These CPUs have no FMA, so a block's `scale · dot` is added with two roundings; the twins
//! are `scalar::packed::matmul_*_unfused`, and the results match them bit for bit. They have no
//! F16C either: the row scales are widened from f16 with integer operations, exactly.

use std::arch::x86_64::*;

use crate::packed::{PackedArgs, PACK_ROWS};

/// Tokens sharing one unpacked half column.
pub(super) const TILE: usize = 4;
/// Rows in one 128-bit accumulator.
pub(super) const HALF: usize = PACK_ROWS / 2;

/// The four tile sizes of one half-tile kernel, in the form [`drive`] takes them.
macro_rules! half_tiles {
    ($kernel:ident) => {{
        let tiles: [HalfTileFn; TILE] = [$kernel::<1>, $kernel::<2>, $kernel::<3>, $kernel::<4>];
        tiles
    }};
}
pub(super) use half_tiles;

/// A kernel for one half group (`h`) and a tile of `T` tokens starting at `t0`.
pub(super) type HalfTileFn = unsafe fn(&PackedArgs<'_>, *const u8, usize, usize) -> [__m128; TILE];

/// The 4 f16 in the low 64 bits of `h` as f32, exactly as `half` widens them (subnormals
/// become normal f32, NaN gets its quiet bit).
#[inline]
#[target_feature(enable = "sse2,ssse3")]
pub(super) unsafe fn widen_f16(h: __m128i) -> __m128 {
    let h = _mm_unpacklo_epi16(h, _mm_setzero_si128());
    let sign = _mm_slli_epi32::<16>(_mm_and_si128(h, _mm_set1_epi32(0x8000)));
    let mag = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
    let shifted = _mm_slli_epi32::<13>(mag);
    // Finite values: the bits shifted into place read as f32 2^-112 too small; scaling by
    // 2^112 is exact (a power of two, no overflow, subnormal f16 become normal f32).
    let finite = _mm_mul_ps(
        _mm_castsi128_ps(shifted),
        _mm_castsi128_ps(_mm_set1_epi32(0x7780_0000)),
    );
    // Infinity and NaN (exponent all ones): all-ones f32 exponent, NaN quieted.
    let special = _mm_cmpgt_epi32(mag, _mm_set1_epi32(0x7bff));
    let nan = _mm_cmpgt_epi32(mag, _mm_set1_epi32(0x7c00));
    let special_bits = _mm_or_si128(
        _mm_or_si128(shifted, _mm_set1_epi32(0x7f80_0000)),
        _mm_and_si128(nan, _mm_set1_epi32(0x0040_0000)),
    );
    let bits = _mm_or_si128(
        _mm_andnot_si128(special, _mm_castps_si128(finite)),
        _mm_and_si128(special, special_bits),
    );
    _mm_castsi128_ps(_mm_or_si128(bits, sign))
}

/// Activation quad `c` (bytes `4c..4c + 4` of `a`) in all four lanes.
#[inline(always)]
pub(super) unsafe fn quad(a: __m128i, c: usize) -> __m128i {
    match c {
        0 => _mm_shuffle_epi32::<0x00>(a),
        1 => _mm_shuffle_epi32::<0x55>(a),
        2 => _mm_shuffle_epi32::<0xaa>(a),
        _ => _mm_shuffle_epi32::<0xff>(a),
    }
}

/// Adds `scale · dot` to `acc` with two roundings, as the unfused twins do.
#[inline(always)]
pub(super) unsafe fn accumulate(acc: __m128, dw: __m128, d_act: f32, dot: __m128i) -> __m128 {
    let scale = _mm_mul_ps(dw, _mm_set1_ps(d_act));
    _mm_add_ps(acc, _mm_mul_ps(scale, _mm_cvtepi32_ps(dot)))
}

/// Half `h` (rows 4h..4h+4) of the packed Q4_0 column at `p`: the 4 scales and the 8 chunks of
/// unsigned nibbles; chunk `2c` holds quants `4c..4c+4`, chunk `2c + 1` quants `16+4c..`.
///
/// # Safety
/// `p` must point at 144 readable bytes.
#[inline]
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q4_0_half(p: *const u8, h: usize) -> (__m128, [__m128i; 8]) {
    let mask = _mm_set1_epi8(0x0f);
    // SAFETY: 16 bytes of scales, then 4 × 32 bytes of nibbles (the caller's bound).
    unsafe {
        let dw = widen_f16(_mm_loadl_epi64(p.add(8 * h) as *const __m128i));
        let w = std::array::from_fn(|i| {
            let x = _mm_loadu_si128(p.add(16 + 32 * (i / 2) + 16 * h) as *const __m128i);
            if i % 2 == 0 {
                _mm_and_si128(x, mask)
            } else {
                _mm_and_si128(_mm_srli_epi16::<4>(x), mask)
            }
        });
        (dw, w)
    }
}

/// Half `h` of a Q4_0 group at `wg` times tokens `t0..t0 + T`.
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q4_0_tile<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    h: usize,
    t0: usize,
) -> [__m128; TILE] {
    let nb = args.n_cols / 32;
    let ab = nb * 34;
    let ones = _mm_set1_epi16(1);
    let mut acc = [_mm_setzero_ps(); TILE];
    for b in 0..nb {
        // SAFETY: column b of the group is 144 bytes at wg + 144b (the caller passes a whole
        // group); token t's activation row has nb blocks of 34 bytes and the summaries nb
        // entries per token (checked by `matmul_packed_at`).
        unsafe {
            let (dw, w) = q4_0_half(wg.add(b * 144), h);
            for t in 0..T {
                let tok = t0 + t;
                let y = args.acts.as_ptr().add(tok * ab + b * 34 + 2);
                let lo = _mm_loadu_si128(y as *const __m128i);
                let hi = _mm_loadu_si128(y.add(16) as *const __m128i);
                let mut s = _mm_maddubs_epi16(w[0], quad(lo, 0));
                for i in 1..8 {
                    let a = quad(if i % 2 == 0 { lo } else { hi }, i / 2);
                    s = _mm_add_epi16(s, _mm_maddubs_epi16(w[i], a));
                }
                let zero_point = _mm_set1_epi32(*args.act_s.get_unchecked(tok * nb + b));
                let dot = _mm_sub_epi32(_mm_madd_epi16(s, ones), zero_point);
                acc[t] = accumulate(acc[t], dw, *args.act_d.get_unchecked(tok * nb + b), dot);
            }
        }
    }
    acc
}

/// Half `h` of a Q8_0 group at `wg` times tokens `t0..t0 + T`. Signed weights: `|w|` against
/// the activation carrying w's sign, each chunk widened to 32 bits before the sum (a weight
/// byte of -128 makes one pair reach 2 × 128 × 127, so two chunks could overflow 16 bits).
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q8_0_tile<const T: usize>(
    args: &PackedArgs<'_>,
    wg: *const u8,
    h: usize,
    t0: usize,
) -> [__m128; TILE] {
    let nb = args.n_cols / 32;
    let ab = nb * 34;
    let ones = _mm_set1_epi16(1);
    let mut acc = [_mm_setzero_ps(); TILE];
    for b in 0..nb {
        // SAFETY: column b of the group is 272 bytes at wg + 272b (the caller passes a whole
        // group); token t's activation row has nb blocks of 34 bytes and the summaries nb
        // entries per token (checked by `matmul_packed_at`).
        unsafe {
            let p = wg.add(b * 272);
            let dw = widen_f16(_mm_loadl_epi64(p.add(8 * h) as *const __m128i));
            let w: [__m128i; 8] = std::array::from_fn(|c| {
                _mm_loadu_si128(p.add(16 + 32 * c + 16 * h) as *const __m128i)
            });
            let abs_w = w.map(|x| _mm_abs_epi8(x));
            for t in 0..T {
                let tok = t0 + t;
                let y = args.acts.as_ptr().add(tok * ab + b * 34 + 2);
                let lo = _mm_loadu_si128(y as *const __m128i);
                let hi = _mm_loadu_si128(y.add(16) as *const __m128i);
                let mut dot = _mm_setzero_si128();
                for c in 0..8 {
                    let a = quad(if c < 4 { lo } else { hi }, c % 4);
                    let pairs = _mm_maddubs_epi16(abs_w[c], _mm_sign_epi8(a, w[c]));
                    dot = _mm_add_epi32(dot, _mm_madd_epi16(pairs, ones));
                }
                acc[t] = accumulate(acc[t], dw, *args.act_d.get_unchecked(tok * nb + b), dot);
            }
        }
    }
    acc
}

/// Decode's product for Q4_0: one token, both halves of each group per block column, so the
/// activation quads are broadcast once per column rather than once per half.
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q4_0_one_token(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 32;
    let group_bytes = nb * 144;
    let ones = _mm_set1_epi16(1);
    let mask = _mm_set1_epi8(0x0f);
    for (g, dst) in out.chunks_exact_mut(PACK_ROWS).enumerate() {
        let mut acc = [_mm_setzero_ps(); 2];
        for b in 0..nb {
            // SAFETY: column b of group g is 144 bytes inside `w` (whole groups); the token's
            // activation row has nb blocks of 34 bytes and the summaries nb entries (checked by
            // `matmul_packed_at`).
            unsafe {
                let p = args.w.as_ptr().add(g * group_bytes + b * 144);
                let y = args.acts.as_ptr().add(b * 34 + 2);
                let lo = _mm_loadu_si128(y as *const __m128i);
                let hi = _mm_loadu_si128(y.add(16) as *const __m128i);
                // Two chunks at a time across both halves: only two broadcast quads are live
                // (holding all eight, both halves' work spilled registers to the stack). The
                // 16-bit sums are exact in any order.
                let mut sums = [_mm_setzero_si128(); 2];
                for c in 0..4 {
                    let (a_low, a_high) = (quad(lo, c), quad(hi, c));
                    for (h, s) in sums.iter_mut().enumerate() {
                        let x = _mm_loadu_si128(p.add(16 + 32 * c + 16 * h) as *const __m128i);
                        let low = _mm_and_si128(x, mask);
                        let high = _mm_and_si128(_mm_srli_epi16::<4>(x), mask);
                        *s = _mm_add_epi16(*s, _mm_maddubs_epi16(low, a_low));
                        *s = _mm_add_epi16(*s, _mm_maddubs_epi16(high, a_high));
                    }
                }
                let zero_point = _mm_set1_epi32(*args.act_s.get_unchecked(b));
                let d_act = *args.act_d.get_unchecked(b);
                for (h, (acc_h, s)) in acc.iter_mut().zip(sums).enumerate() {
                    let dw = widen_f16(_mm_loadl_epi64(p.add(8 * h) as *const __m128i));
                    let dot = _mm_sub_epi32(_mm_madd_epi16(s, ones), zero_point);
                    *acc_h = accumulate(*acc_h, dw, d_act, dot);
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

/// Decode's product for Q8_0, both halves per block column as in [`q4_0_one_token`].
#[target_feature(enable = "sse2,ssse3")]
unsafe fn q8_0_one_token(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 32;
    let group_bytes = nb * 272;
    let ones = _mm_set1_epi16(1);
    for (g, dst) in out.chunks_exact_mut(PACK_ROWS).enumerate() {
        let mut acc = [_mm_setzero_ps(); 2];
        for b in 0..nb {
            // SAFETY: column b of group g is 272 bytes inside `w` (whole groups); the token's
            // activation row has nb blocks of 34 bytes and the summaries nb entries (checked by
            // `matmul_packed_at`).
            unsafe {
                let p = args.w.as_ptr().add(g * group_bytes + b * 272);
                let y = args.acts.as_ptr().add(b * 34 + 2);
                let lo = _mm_loadu_si128(y as *const __m128i);
                let hi = _mm_loadu_si128(y.add(16) as *const __m128i);
                let a: [__m128i; 8] =
                    std::array::from_fn(|c| quad(if c < 4 { lo } else { hi }, c % 4));
                let d_act = *args.act_d.get_unchecked(b);
                for (h, acc_h) in acc.iter_mut().enumerate() {
                    let dw = widen_f16(_mm_loadl_epi64(p.add(8 * h) as *const __m128i));
                    let mut dot = _mm_setzero_si128();
                    for (c, &a_c) in a.iter().enumerate() {
                        let w = _mm_loadu_si128(p.add(16 + 32 * c + 16 * h) as *const __m128i);
                        let pairs = _mm_maddubs_epi16(_mm_abs_epi8(w), _mm_sign_epi8(a_c, w));
                        dot = _mm_add_epi32(dot, _mm_madd_epi16(pairs, ones));
                    }
                    *acc_h = accumulate(*acc_h, dw, d_act, dot);
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

/// Every half group times every token, `TILE` tokens at a time; `tiles[t - 1]` handles a tile
/// of `t` tokens, groups are `group_bytes` apart.
#[target_feature(enable = "sse2,ssse3")]
pub(super) unsafe fn drive(
    args: &PackedArgs<'_>,
    out: &mut [f32],
    group_bytes: usize,
    tiles: [HalfTileFn; TILE],
) {
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    for g in 0..n_groups {
        // SAFETY: group g lies inside `w` (n_groups whole groups).
        let wg = unsafe { args.w.as_ptr().add(g * group_bytes) };
        for h in 0..2 {
            let mut t0 = 0;
            while t0 < args.n_tokens {
                let t = TILE.min(args.n_tokens - t0);
                // SAFETY: tokens t0..t0 + t exist; the tile kernels need this function's
                // features.
                let acc = unsafe { tiles[t - 1](args, wg, h, t0) };
                for (i, a) in acc[..t].iter().enumerate() {
                    let at = (t0 + i) * n_rows + g * PACK_ROWS + h * HALF;
                    let dst = &mut out[at..at + HALF];
                    // SAFETY: dst has exactly 4 f32.
                    unsafe { _mm_storeu_ps(dst.as_mut_ptr(), *a) };
                }
                t0 += t;
            }
        }
    }
}

/// Packed Q4_0 times Q8_0 activations, every group and token.
///
/// # Safety
/// The CPU must have SSSE3; arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn matmul_q4_0x8(args: &PackedArgs<'_>, out: &mut [f32]) {
    if args.n_tokens == 1 {
        // SAFETY: same features; arguments as checked by the caller.
        return unsafe { q4_0_one_token(args, out) };
    }
    // SAFETY: same features; arguments as checked by the caller.
    unsafe { drive(args, out, args.n_cols / 32 * 144, half_tiles!(q4_0_tile)) }
}

/// Packed Q8_0 times Q8_0 activations, every group and token.
///
/// # Safety
/// The CPU must have SSSE3; arguments as checked by `crate::packed::matmul_packed_at`.
#[target_feature(enable = "sse2,ssse3")]
pub(crate) unsafe fn matmul_q8_0x8(args: &PackedArgs<'_>, out: &mut [f32]) {
    if args.n_tokens == 1 {
        // SAFETY: same features; arguments as checked by the caller.
        return unsafe { q8_0_one_token(args, out) };
    }
    // SAFETY: same features; arguments as checked by the caller.
    unsafe { drive(args, out, args.n_cols / 32 * 272, half_tiles!(q8_0_tile)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every one of the 65536 f16 values widens to `half`'s f32, bit for bit (subnormals,
    /// infinities and NaN payloads included).
    #[test]
    fn widening_f16_matches_half_exhaustively() {
        if !std::arch::is_x86_feature_detected!("ssse3") {
            return;
        }
        for base in (0..=u16::MAX).step_by(4) {
            let h: [u16; 4] = std::array::from_fn(|i| base + i as u16);
            let mut got = [0f32; 4];
            // SAFETY: SSSE3 is present (checked above); 8 bytes are read from `h`.
            unsafe {
                let v = _mm_loadl_epi64(h.as_ptr() as *const __m128i);
                _mm_storeu_ps(got.as_mut_ptr(), widen_f16(v));
            }
            for (g, &x) in got.iter().zip(&h) {
                let want = half::f16::from_bits(x).to_f32();
                assert_eq!(g.to_bits(), want.to_bits(), "f16 bits {x:#06x}");
            }
        }
    }
}
