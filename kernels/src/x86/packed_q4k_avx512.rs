//! AVX-512 kernels for packed Q4_K (`Q4_Kx8`, see `crate::packed`): two 8-row groups per
//! 512-bit accumulator, as `packed_avx512` does for Q4_0 (adjacent groups for a prompt, far-apart
//! ones for one token; the drivers are `pair_drivers!`). Each group's super-block header is
//! decoded by the 256-bit code (`packed_avx2`'s `q4_k_header`) and the two joined, so every
//! activation broadcast, dot product, scale multiply and f32 step then serves both groups.
//!
//! Two forms of the scaled 8-chunk dot product: `vpdpbusd` (AVX-512 VNNI) with the scale a
//! 32-bit multiply, and `vpmaddubsw` + `vpmaddwd` (AVX-512 BW) with the scale folded into the
//! `vpmaddwd` (exact: |16-bit half| ≤ 8 × 2 × 15 × 128 and the scale < 2^6). Per lane the
//! integer sums and the f32 steps are those of the scalar twin, so results are bit-identical.

use std::arch::x86_64::*;

use super::packed_avx512::{join, load_halves, load_pair};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Tokens sharing one unpacked super-block column (per pair of groups).
pub(super) const TOKEN_TILE: usize = 8;

/// Bytes of a packed Q4_K group per 32 columns (1152 per 256-column super-block): what
/// `pair_drivers!` steps groups by.
const COLUMN: usize = 144;

/// Bytes of one super-block column of a packed Q4_K group.
const SUPER_COLUMN: usize = 1152;

/// Bytes of one Q8_K activation block (f32 scale, 256 quants, 16 block sums).
const ACT_BLOCK: usize = 292;

/// A kernel for a pair of groups and a tile of tokens (`pair_tile::<T>` for T = 1..=8).
pub(super) type TileFn =
    unsafe fn(&PackedArgs<'_>, *const u8, *const u8, usize, &mut [__m512; TOKEN_TILE]);

/// A Q4_K/Q5_K super-block column header of both groups (`c0` in lanes 0..8, `c1` in 8..16):
/// `d`, `dmin` as f32, each sub-block's row scales in the form of the 256-bit decoder that gave
/// `h0`/`h1`, and the mins of sub-blocks 2i and 2i + 1 as the 16-bit halves of each lane.
///
/// # Safety
/// The CPU must have AVX-512 F and F16C; 32 bytes readable at `c0` and at `c1`.
#[inline]
#[target_feature(enable = "avx2,f16c,avx512f")]
pub(super) unsafe fn pair_header(
    c0: *const u8,
    c1: *const u8,
    h0: ([__m256i; 8], [__m256i; 4]),
    h1: ([__m256i; 8], [__m256i; 4]),
) -> (__m512, __m512, [__m512i; 8], [__m512i; 4]) {
    // SAFETY: the caller's bound.
    let (d, dmin) = unsafe {
        (
            _mm512_cvtph_ps(load_halves(c0, c1)),
            _mm512_cvtph_ps(load_halves(c0.add(16), c1.add(16))),
        )
    };
    let scales = std::array::from_fn(|s| join(h0.0[s], h1.0[s]));
    let mins = std::array::from_fn(|i| join(h0.1[i], h1.1[i]));
    (d, dmin, scales, mins)
}

/// The f32 steps of a Q4_K/Q5_K super-block column for one token, as in the scalar twin:
/// `fma(d · d_a, isum, acc)`, then `fnma(dmin · d_a, Σ_s min_s · sum_s, acc)`. The token's Q8_K
/// block is at `block` (f32 `d_a` first) and its summaries (4 words: pairs of sub-block sums,
/// 16 bits each) at `pairs`; the min sum is exact (min < 2^6, |sum| ≤ 32 × 128).
///
/// # Safety
/// The CPU must have AVX-512 F/BW and FMA; 4 readable bytes at `block`, 4 words at `pairs`.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
pub(super) unsafe fn finish_column(
    d: __m512,
    dmin: __m512,
    mins: &[__m512i; 4],
    isum: __m512i,
    block: *const u8,
    pairs: *const i32,
    acc: __m512,
) -> __m512 {
    // SAFETY: the caller's bound.
    unsafe {
        let da = _mm512_set1_ps((block as *const f32).read_unaligned());
        let mut msum = _mm512_setzero_si512();
        for (i, m) in mins.iter().enumerate() {
            let pair = _mm512_set1_epi32(*pairs.add(i));
            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(*m, pair));
        }
        let acc = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(isum), acc);
        _mm512_fnmadd_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(msum), acc)
    }
}

/// The `vpmaddubsw` form: Σ_c w[c] · broadcast(y + off[c]), the 16-bit halves of each 32-bit
/// lane weighted by `$k` (row r's scale in both halves of lane r).
macro_rules! dot8_maddubs {
    ($w:expr, $y:expr, $off:expr, $k:expr) => {{
        let (w, y, off): (&[__m512i; 8], *const u8, [usize; 8]) = ($w, $y, $off);
        let bc = |o: usize| _mm512_set1_epi32((y.add(o) as *const i32).read_unaligned());
        let mut s = _mm512_maddubs_epi16(w[0], bc(off[0]));
        for c in 1..8 {
            s = _mm512_add_epi16(s, _mm512_maddubs_epi16(w[c], bc(off[c])));
        }
        _mm512_madd_epi16(s, $k)
    }};
}

/// The `vpdpbusd` form: the exact 32-bit sums times `$k` (row r's scale as lane r). `$dp` is
/// the instruction (or, in tests, its emulation).
macro_rules! dot8_vnni {
    ($dp:path, $w:expr, $y:expr, $off:expr, $k:expr) => {{
        let (w, y, off): (&[__m512i; 8], *const u8, [usize; 8]) = ($w, $y, $off);
        let bc = |o: usize| _mm512_set1_epi32((y.add(o) as *const i32).read_unaligned());
        let mut s = $dp(_mm512_setzero_si512(), w[0], bc(off[0]));
        for c in 1..8 {
            s = $dp(s, w[c], bc(off[c]));
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
macro_rules! q4_k_kernels_512 {
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
                let ab = nb * ACT_BLOCK;
                let mask = _mm512_set1_epi8(0x0F);
                let mut acc = [_mm512_setzero_ps(); T];
                // Only the first tile streams the groups; the later ones find them in L1.
                let stream = t0 == 0;
                for b in 0..nb {
                    // SAFETY: super-block column b of each group is 1152 bytes at
                    // wg + 1152b (the caller passes whole groups of nb columns); token rows
                    // have nb Q8_K blocks of 292 bytes (checked by `matmul_packed_at`) and the
                    // summaries 4 words per block and token (`summarize_q8_k`). Prefetches
                    // past the end never fault.
                    unsafe {
                        let (c0, c1) = (wg0.add(b * SUPER_COLUMN), wg1.add(b * SUPER_COLUMN));
                        if stream {
                            for c in [c0, c1] {
                                let next = c.wrapping_add(SUPER_COLUMN);
                                _mm_prefetch::<_MM_HINT_T0>(next as *const i8);
                                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64) as *const i8);
                            }
                        }
                        let (d, dmin, ksc, mn) = pair_header(c0, c1, $header(c0), $header(c1));
                        let mut isum = [_mm512_setzero_si512(); T];
                        for j in 0..4 {
                            if stream {
                                for c in [c0, c1] {
                                    let next = c.wrapping_add(SUPER_COLUMN);
                                    for line in 0..4 {
                                        let at = 128 + 256 * j + 64 * line;
                                        _mm_prefetch::<_MM_HINT_T0>(
                                            next.wrapping_add(at) as *const i8
                                        );
                                    }
                                }
                            }
                            let v: [__m512i; 8] = std::array::from_fn(|k| {
                                let at = 128 + 256 * j + 32 * k;
                                load_pair(c0.add(at), c1.add(at))
                            });
                            let lo = v.map(|x| _mm512_and_si512(x, mask));
                            let hi = v.map(|x| _mm512_and_si512(_mm512_srli_epi16::<4>(x), mask));
                            let (k_lo, k_hi) = (ksc[2 * j], ksc[2 * j + 1]);
                            for (t, sum) in isum.iter_mut().enumerate() {
                                let y = args.acts.as_ptr().add((t0 + t) * ab + b * ACT_BLOCK);
                                let y = y.add(4 + 64 * j);
                                // scale · Σ q·y of sub-blocks 2j and 2j + 1.
                                let lo = $dot8!(&lo, y, [0, 4, 8, 12, 16, 20, 24, 28], k_lo);
                                let hi = $dot8!(&hi, y, [32, 36, 40, 44, 48, 52, 56, 60], k_hi);
                                *sum = _mm512_add_epi32(*sum, _mm512_add_epi32(lo, hi));
                            }
                        }
                        for (t, a) in acc.iter_mut().enumerate() {
                            let block = args.acts.as_ptr().add((t0 + t) * ab + b * ACT_BLOCK);
                            let pairs = args.act_s.as_ptr().add(((t0 + t) * nb + b) * 4);
                            *a = finish_column(d, dmin, &mn, isum[t], block, pairs, *a);
                        }
                    }
                }
                acc_out[..T].copy_from_slice(&acc);
            }

            pair_drivers!($features, matmul_q4_kx8, [1, 2, 3, 4, 5, 6, 7, 8]);
        }
    };
}

q4_k_kernels_512!(
    bw,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    dot8_maddubs,
    crate::x86::packed_avx2::avx2::q4_k_header
);
q4_k_kernels_512!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot8_dpbusd,
    crate::x86::packed_avx2::vnni::q4_k_header
);
// The VNNI kernel with `vpdpbusd` emulated: tests run it on any AVX-512 BW CPU (and emulator).
#[cfg(test)]
q4_k_kernels_512!(
    vnni_emulated,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    dot8_dpbusd_emulated,
    crate::x86::packed_avx2::vnni_emulated::q4_k_header
);
