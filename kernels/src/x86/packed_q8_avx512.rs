//! AVX-512 kernels for packed Q8_0 (`Q8_0x8`, see `crate::packed`) times Q8_0 activations: two
//! 8-row groups per 512-bit accumulator (lanes 0..8 and 8..16), driven as the packed Q4_0 ones
//! (`packed_avx512`, `pair_drivers!`).
//!
//! Both operands are signed bytes. The unsigned-times-signed byte products take `|w|` and the
//! activation with `w`'s sign moved onto it (AVX-512 has no `vpsignb`: the activation bytes of
//! negative weights are negated under a mask; where `w = 0`, `|w| = 0` and the sign does not
//! matter). Exact for every byte: `|w| ≤ 128` fits unsigned and the activations' quants are
//! within ±127. Two forms: `vpmaddubsw` (each 16-bit pair sum is at most 2 × 128 × 127, so it
//! is widened by `vpmaddwd` before any further addition) and VNNI `vpdpbusd`. The integer dot of
//! each row and block is exact and the f32 step is the scalar twin's `fma(d_w · d_a, dot, acc)`,
//! blocks in order, so the results are bit-identical to it.
//!
//! Written on a machine without AVX-512 and run natively since 2026-12-02 (an AVX-512 VNNI
//! EPYC). The tests also run under emulation (`tools/avx512-emu/run.sh`,
//! in CI; its CPU model has no VNNI, so the VNNI form runs there with `vpdpbusd` emulated, see
//! `x86::vnni_emulation`), and `crate::packed` checks both forms against the scalar twin at
//! start-up before it uses them.

use std::arch::x86_64::*;

use super::packed_avx512::{load_pair, pair_scales, TileFn, TOKEN_TILE};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Bytes of one block column of a packed Q8_0 group.
const COLUMN: usize = 272;

/// Software prefetch distance in bytes, per group stream (about 4 columns, as `packed_q8_avx2`).
const PREFETCH_AHEAD: usize = 1088;

/// Chunk `c`'s activation bytes (`y + 4c`, broadcast) with the sign of weight chunk `w`.
macro_rules! signed_y {
    ($y:expr, $c:expr, $w:expr) => {{
        let yc = _mm512_set1_epi32(($y.add(4 * $c) as *const i32).read_unaligned());
        _mm512_mask_sub_epi8(yc, _mm512_movepi8_mask($w), _mm512_setzero_si512(), yc)
    }};
}

/// `vpmaddubsw` form: Σ_c |w[c]| · (±y[c]) per 32-bit lane, each pair of products widened first.
macro_rules! dot8_maddubs {
    ($w:expr, $abs_w:expr, $y:expr) => {{
        let (w, abs_w, y): (&[__m512i; 8], &[__m512i; 8], *const u8) = ($w, $abs_w, $y);
        let ones = _mm512_set1_epi16(1);
        let mut s = _mm512_setzero_si512();
        for c in 0..8 {
            let p = _mm512_maddubs_epi16(abs_w[c], signed_y!(y, c, w[c]));
            s = _mm512_add_epi32(s, _mm512_madd_epi16(p, ones));
        }
        s
    }};
}

/// `vpdpbusd` form of [`dot8_maddubs`]; `$dp` is the instruction (or, in tests, its emulation).
macro_rules! dot8_vnni {
    ($dp:path, $w:expr, $abs_w:expr, $y:expr) => {{
        let (w, abs_w, y): (&[__m512i; 8], &[__m512i; 8], *const u8) = ($w, $abs_w, $y);
        let mut s = _mm512_setzero_si512();
        for c in 0..8 {
            s = $dp(s, abs_w[c], signed_y!(y, c, w[c]));
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

macro_rules! q8_0_kernels_512 {
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
                let mut acc = [_mm512_setzero_ps(); T];
                for b in 0..nb {
                    // SAFETY: block column b of each group is COLUMN bytes at wg + COLUMN·b (the
                    // caller passes whole groups of nb columns); token rows have nb blocks of 34
                    // bytes and nb scales per token (checked by `matmul_packed_at`). Prefetches
                    // never fault.
                    unsafe {
                        let (p0, p1) = (wg0.add(b * COLUMN), wg1.add(b * COLUMN));
                        // Only the first tile streams the groups; the later ones find them in L1.
                        let dw = pair_scales::<5>(p0, p1, PREFETCH_AHEAD, t0 == 0);
                        // Chunk c holds quants 4c..4c+4 of each row.
                        let w: [__m512i; 8] = std::array::from_fn(|c| {
                            load_pair(p0.add(16 + 32 * c), p1.add(16 + 32 * c))
                        });
                        let abs_w: [__m512i; 8] = std::array::from_fn(|c| _mm512_abs_epi8(w[c]));
                        for t in 0..T {
                            let tok = t0 + t;
                            let y = args.acts.as_ptr().add(tok * ab + b * 34 + 2);
                            let dot = $dot8!(&w, &abs_w, y);
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

            pair_drivers!($features, matmul_q8_0x8);
        }
    };
}

q8_0_kernels_512!(bw, "avx2,fma,f16c,avx512f,avx512bw,avx512vl", dot8_maddubs);
q8_0_kernels_512!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot8_dpbusd
);
// The VNNI kernel with `vpdpbusd` emulated: tests run it on any AVX-512 BW CPU (and emulator).
#[cfg(test)]
q8_0_kernels_512!(
    vnni_emulated,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    dot8_dpbusd_emulated
);
