//! AVX-512 kernels for packed Q5_K (`Q5_Kx8`, see `crate::packed`): `packed_q5k_avx2`'s
//! arithmetic on two 8-row groups per 512-bit vector (lanes 0..8 and 8..16; adjacent groups for
//! a prompt, far-apart ones for one token, driven by `pair_drivers!`). The column header is
//! decoded per group by the 256-bit decoder and the two joined, as in `packed_q4k_avx512`.
//!
//! Two forms of a sub-block's scaled dot product: `vpdpbusd` (AVX-512 VNNI) over its 8 chunks,
//! then a 32-bit multiply by the row scales; and `vpmaddubsw` (AVX-512 BW) in two halves of 4
//! chunks (4 × 2 × 31 × 128 < 2^15: no overflow) widened by `vpmaddwd` with the scales. All
//! integer sums are exact, so the results match the scalar twin bit for bit.

use std::arch::x86_64::*;

use super::packed_avx512::load_pair;
use super::packed_q4k_avx512::{finish_column, pair_header};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Tokens sharing one rebuilt super-block column (per pair of groups).
pub(super) const TOKEN_TILE: usize = 8;

/// Bytes of a packed Q5_K group per 32 columns (1408 per super-block): `pair_drivers!`'s step.
const COLUMN: usize = 176;

/// Bytes of one super-block column of a packed Q5_K group.
const SUPER_COLUMN: usize = 1408;

/// A kernel for a pair of groups and a tile of tokens (`pair_tile::<T>` for T = 1..=8).
pub(super) type TileFn =
    unsafe fn(&PackedArgs<'_>, *const u8, *const u8, usize, &mut [__m512; TOKEN_TILE]);

/// The top bit `c` (0..8) of each byte of `h`, moved to bit 4 (16-bit shifts; the mask keeps
/// only bits that came from the same byte).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn top_bit(h: __m512i, c: usize) -> __m512i {
    let moved = match c {
        0 => _mm512_slli_epi16::<4>(h),
        1 => _mm512_slli_epi16::<3>(h),
        2 => _mm512_slli_epi16::<2>(h),
        3 => _mm512_slli_epi16::<1>(h),
        4 => h,
        5 => _mm512_srli_epi16::<1>(h),
        6 => _mm512_srli_epi16::<2>(h),
        _ => _mm512_srli_epi16::<3>(h),
    };
    _mm512_and_si512(moved, _mm512_set1_epi8(0x10))
}

/// `vpmaddubsw` form: Σ_c q[c] · y-quad c, in two halves of 4 chunks, each widened by
/// `vpmaddwd` with `$k` (row r's scale in both 16-bit halves of lane r).
macro_rules! dot8_maddubs {
    ($q:expr, $bc:expr, $k:expr) => {{
        let (q, bc): (&[__m512i; 8], _) = ($q, $bc);
        let half = |c0: usize| {
            let mut x = _mm512_maddubs_epi16(q[c0], bc(c0));
            for c in c0 + 1..c0 + 4 {
                x = _mm512_add_epi16(x, _mm512_maddubs_epi16(q[c], bc(c)));
            }
            _mm512_madd_epi16(x, $k)
        };
        _mm512_add_epi32(half(0), half(4))
    }};
}

/// `vpdpbusd` form: the exact 32-bit sums of the 8 chunks times `$k` (row r's scale as lane
/// r). `$dp` is the instruction (or, in tests, its emulation).
macro_rules! dot8_vnni {
    ($dp:path, $q:expr, $bc:expr, $k:expr) => {{
        let (q, bc): (&[__m512i; 8], _) = ($q, $bc);
        let mut s = $dp(_mm512_setzero_si512(), q[0], bc(0));
        for c in 1..8 {
            s = $dp(s, q[c], bc(c));
        }
        _mm512_mullo_epi32($k, s)
    }};
}

/// [`dot8_vnni`] with the VNNI instruction.
macro_rules! dot8_dpbusd {
    ($($arg:expr),+) => {
        dot8_vnni!(_mm512_dpbusd_epi32, $($arg),+)
    };
}

/// [`dot8_vnni`] with `vpdpbusd` emulated in AVX-512 BW (tests: see `x86::vnni_emulation`).
#[cfg(test)]
macro_rules! dot8_dpbusd_emulated {
    ($($arg:expr),+) => {
        dot8_vnni!(crate::x86::vnni_emulation::dpbusd_512, $($arg),+)
    };
}

/// The kernels for one instruction set: `$features` for `#[target_feature]`, `$dot8` the scaled
/// dot product and `$header` the 256-bit header decoder giving scales in the form it takes.
macro_rules! q5_k_kernels_512 {
    ($name:ident, $features:literal, $dot8:ident, $header:path) => {
        pub(crate) mod $name {
            use super::*;

            /// Groups `wg0` (lanes 0..8) and `wg1` (lanes 8..16; may equal `wg0` for an odd
            /// last group) times tokens `t0..t0 + T`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn pair_tile<const T: usize>(
                args: &PackedArgs<'_>,
                wg0: *const u8,
                wg1: *const u8,
                t0: usize,
                acc_out: &mut [__m512; TOKEN_TILE],
            ) {
                let nb = args.n_cols / 256;
                let ab = nb * 292;
                let m4 = _mm512_set1_epi8(0x0F);
                let mut acc = [_mm512_setzero_ps(); T];
                // Only the first tile streams the groups; the later ones find them in L1.
                let stream = t0 == 0;
                for b in 0..nb {
                    // SAFETY: super-block column b of each group is 1408 bytes at
                    // wg + 1408b (the caller passes whole groups of nb columns); token t's
                    // Q8_K block b is 292 bytes at acts + t·ab + 292b and its summaries 4
                    // words at act_s[(t·nb + b)·4] (checked by `matmul_packed_at`,
                    // `summarize_q8_k`). Prefetches past the end never fault.
                    unsafe {
                        let (c0, c1) = (wg0.add(b * SUPER_COLUMN), wg1.add(b * SUPER_COLUMN));
                        let (d, dmin, ksc, mn) = pair_header(c0, c1, $header(c0), $header(c1));
                        let mut isum = [_mm512_setzero_si512(); T];
                        for s in 0..8 {
                            if stream {
                                for c in [c0, c1] {
                                    let next = c.wrapping_add(SUPER_COLUMN);
                                    for line in 0..3 {
                                        let at = 160 * s + 64 * line;
                                        _mm_prefetch::<_MM_HINT_T0>(
                                            next.wrapping_add(at) as *const i8
                                        );
                                    }
                                }
                            }
                            let at = 128 + 160 * s;
                            let load = |off: usize| load_pair(c0.add(at + off), c1.add(at + off));
                            let a: [__m512i; 4] = std::array::from_fn(|p| load(32 * p));
                            let h = load(128);
                            let q: [__m512i; 8] = std::array::from_fn(|c| {
                                let nibble = if c % 2 == 0 {
                                    _mm512_and_si512(a[c / 2], m4)
                                } else {
                                    _mm512_and_si512(_mm512_srli_epi16::<4>(a[c / 2]), m4)
                                };
                                _mm512_or_si512(nibble, top_bit(h, c))
                            });
                            for (t, sum) in isum.iter_mut().enumerate() {
                                let y = args.acts.as_ptr().add((t0 + t) * ab + b * 292);
                                let y = y.add(4 + 32 * s);
                                let bc = |c: usize| {
                                    _mm512_set1_epi32((y.add(4 * c) as *const i32).read_unaligned())
                                };
                                *sum = _mm512_add_epi32(*sum, $dot8!(&q, bc, ksc[s]));
                            }
                        }
                        for (t, a) in acc.iter_mut().enumerate() {
                            let block = args.acts.as_ptr().add((t0 + t) * ab + b * 292);
                            let pairs = args.act_s.as_ptr().add(((t0 + t) * nb + b) * 4);
                            *a = finish_column(d, dmin, &mn, isum[t], block, pairs, *a);
                        }
                    }
                }
                acc_out[..T].copy_from_slice(&acc);
            }

            pair_drivers!($features, matmul_q5_kx8, [1, 2, 3, 4, 5, 6, 7, 8]);
        }
    };
}

q5_k_kernels_512!(
    bw,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    dot8_maddubs,
    crate::x86::packed_avx2::avx2::q4_k_header
);
q5_k_kernels_512!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot8_dpbusd,
    crate::x86::packed_avx2::vnni::q4_k_header
);
// The VNNI kernel with `vpdpbusd` emulated: tests run it on any AVX-512 BW CPU (and emulator).
#[cfg(test)]
q5_k_kernels_512!(
    vnni_emulated,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    dot8_dpbusd_emulated,
    crate::x86::packed_avx2::vnni_emulated::q4_k_header
);
