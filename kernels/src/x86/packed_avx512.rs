//! AVX-512 kernels for packed Q4_0 (`Q4_0x8`, see `crate::packed`): two 8-row groups per
//! 512-bit accumulator, one in lanes 0..8 and one in lanes 8..16, so one instruction does what
//! two do in the 256-bit kernels (`packed_avx2`). For a prompt the two are adjacent (`g`,
//! `g + 1`) and the 16 results one contiguous store, an odd last group with its upper half
//! masked off; for one token (decode) they are far apart (`g`, `g + n/2`), two memory streams.
//!
//! Two forms of the 8-chunk dot product, as in `packed_avx2`: `vpmaddubsw` + `vpmaddwd` (AVX-512
//! BW) and `vpdpbusd` (AVX-512 VNNI). Per lane the integer sums and the f32 operations (one
//! `fma(d_w · d_a, dot, acc)` per block, blocks in order) are those of the scalar twin, so the
//! results are bit-identical to it.
//!
//! Written on a machine without AVX-512 and run natively since 2026-12-02 (an AVX-512 VNNI
//! EPYC). The property tests also run them under emulation
//! (`tools/avx512-emu/run.sh`, in CI; its CPU model has no VNNI, so the VNNI form runs there
//! with `vpdpbusd` emulated, see `x86::vnni_emulation`), and `crate::packed` checks them against
//! the scalar twin at start-up before it uses them.

use std::arch::x86_64::*;

use crate::packed::{PackedArgs, PACK_ROWS};

/// Tokens sharing one unpacked block column (per pair of groups).
pub(super) const TOKEN_TILE: usize = 4;

/// Bytes of one block column of a packed Q4_0 group.
const COLUMN: usize = 144;

/// Software prefetch distance in bytes, per group stream (as in `packed_avx2`).
const PREFETCH_AHEAD: usize = 1152;

/// A kernel for a pair of groups and a tile of tokens (`pair_tile::<T>` for T = 1..=4).
pub(super) type TileFn =
    unsafe fn(&PackedArgs<'_>, *const u8, *const u8, usize, &mut [__m512; TOKEN_TILE]);

/// 32 bytes at `lo` in the low half and 32 at `hi` in the high half.
///
/// # Safety
/// The CPU must have AVX-512F; 32 bytes must be readable at each address.
#[inline]
#[target_feature(enable = "avx2,avx512f")]
pub(super) unsafe fn load_pair(lo: *const u8, hi: *const u8) -> __m512i {
    // SAFETY: the caller passes 32 readable bytes at each address; same features.
    unsafe {
        let a = _mm256_loadu_si256(lo as *const __m256i);
        let b = _mm256_loadu_si256(hi as *const __m256i);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b)
    }
}

/// Two 256-bit halves as one 512-bit vector (`lo` in lanes 0..8).
#[inline]
#[target_feature(enable = "avx2,avx512f")]
pub(super) fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// 16 bytes at `lo` and 16 at `hi` as one 256-bit vector.
///
/// # Safety
/// The CPU must have AVX2; 16 bytes must be readable at each address.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn load_halves(lo: *const u8, hi: *const u8) -> __m256i {
    // SAFETY: the caller passes 16 readable bytes at each address; same features.
    unsafe {
        _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(lo as *const __m128i)),
            _mm_loadu_si128(hi as *const __m128i),
        )
    }
}

/// The 16 row scales of block columns `p0` (lanes 0..8) and `p1` (lanes 8..16), as f32; with
/// `stream`, first a prefetch of `LINES` cache lines `ahead` bytes past each column.
///
/// # Safety
/// The CPU must have AVX-512F and F16C; 16 bytes must be readable at each address (prefetches
/// never fault).
#[inline]
#[target_feature(enable = "avx2,f16c,avx512f")]
pub(super) unsafe fn pair_scales<const LINES: usize>(
    p0: *const u8,
    p1: *const u8,
    ahead: usize,
    stream: bool,
) -> __m512 {
    if stream {
        for p in [p0, p1] {
            for line in 0..LINES {
                let at = ahead + 64 * line;
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at) as *const i8);
            }
        }
    }
    // SAFETY: the caller passes 16 readable bytes at each address; same features.
    unsafe {
        let scales = _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(p0 as *const __m128i)),
            _mm_loadu_si128(p1 as *const __m128i),
        );
        _mm512_cvtph_ps(scales)
    }
}

/// `vpmaddubsw` form: Σ_c w[c] · broadcast(y + off[c]) per 32-bit lane (unsigned 4-bit weights,
/// signed 8-bit activations; the 16-bit partial sums cannot overflow: 8 × 2 × 15 × 128 < 2^15).
macro_rules! dot8_maddubs {
    ($w:expr, $y:expr, $off:expr) => {{
        let (w, y, off): (&[__m512i; 8], *const u8, [usize; 8]) = ($w, $y, $off);
        let bc = |o: usize| _mm512_set1_epi32((y.add(o) as *const i32).read_unaligned());
        let mut s = _mm512_maddubs_epi16(w[0], bc(off[0]));
        for c in 1..8 {
            s = _mm512_add_epi16(s, _mm512_maddubs_epi16(w[c], bc(off[c])));
        }
        _mm512_madd_epi16(s, _mm512_set1_epi16(1))
    }};
}

/// `vpdpbusd` form of [`dot8_maddubs`]; `$dp` is the instruction (or, in tests, its emulation).
macro_rules! dot8_vnni {
    ($dp:path, $w:expr, $y:expr, $off:expr) => {{
        let (w, y, off): (&[__m512i; 8], *const u8, [usize; 8]) = ($w, $y, $off);
        let bc = |o: usize| _mm512_set1_epi32((y.add(o) as *const i32).read_unaligned());
        let mut s = $dp(_mm512_setzero_si512(), w[0], bc(off[0]));
        for c in 1..8 {
            s = $dp(s, w[c], bc(off[c]));
        }
        s
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

macro_rules! packed_kernels_512 {
    ($name:ident, $features:literal, $dot8:ident) => {
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
                let nb = args.n_cols / 32;
                let ab = nb * 34;
                let mask = _mm512_set1_epi8(0x0F);
                let mut acc = [_mm512_setzero_ps(); T];
                for b in 0..nb {
                    // SAFETY: block column b of each group is COLUMN bytes at wg + COLUMN·b (the caller
                    // passes whole groups of nb columns); token rows have nb blocks of 34 bytes
                    // and the summaries nb entries per token (checked by `matmul_packed_at`).
                    unsafe {
                        let (p0, p1) = (wg0.add(b * COLUMN), wg1.add(b * COLUMN));
                        // Only the first tile streams the groups; the later ones find them in L1.
                        let dw = pair_scales::<3>(p0, p1, PREFETCH_AHEAD, t0 == 0);
                        let v: [__m512i; 4] = std::array::from_fn(|c| {
                            load_pair(p0.add(16 + 32 * c), p1.add(16 + 32 * c))
                        });
                        // Chunk c holds quants 4c..4c+4 (low nibbles) and 16+4c.. (high).
                        let w: [__m512i; 8] = std::array::from_fn(|i| {
                            let x = v[i / 2];
                            if i % 2 == 0 {
                                _mm512_and_si512(x, mask)
                            } else {
                                _mm512_and_si512(_mm512_srli_epi16::<4>(x), mask)
                            }
                        });
                        for t in 0..T {
                            let tok = t0 + t;
                            let y = args.acts.as_ptr().add(tok * ab + b * 34 + 2);
                            let dot = $dot8!(&w, y, [0, 16, 4, 20, 8, 24, 12, 28]);
                            let zero_point =
                                _mm512_set1_epi32(*args.act_s.get_unchecked(tok * nb + b));
                            let dot = _mm512_sub_epi32(dot, zero_point);
                            let d = _mm512_mul_ps(
                                dw,
                                _mm512_set1_ps(*args.act_d.get_unchecked(tok * nb + b)),
                            );
                            acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc[t]);
                        }
                    }
                }
                acc_out[..T].copy_from_slice(&acc);
            }

            pair_drivers!($features, matmul_q4_0x8);
        }
    };
}

packed_kernels_512!(bw, "avx2,fma,f16c,avx512f,avx512bw,avx512vl", dot8_maddubs);
packed_kernels_512!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot8_dpbusd
);
// The VNNI kernel with `vpdpbusd` emulated: tests run it on any AVX-512 BW CPU (and emulator).
#[cfg(test)]
packed_kernels_512!(
    vnni_emulated,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    dot8_dpbusd_emulated
);
