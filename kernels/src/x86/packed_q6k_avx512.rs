//! AVX-512 kernels for packed Q6_K (`Q6_Kx8`, see `crate::packed`): `packed_q6k_avx2`'s
//! arithmetic on two 8-row groups per 512-bit vector (lanes 0..8 and 8..16; adjacent groups for
//! a prompt, far-apart ones for one token, driven by `pair_drivers!`).
//!
//! Two forms of a sub-block's scaled dot product: `vpdpbusd` (AVX-512 VNNI) over its 4 chunks,
//! then a 32-bit multiply by the signed row scales; and `vpmaddubsw` (AVX-512 BW), two chunks
//! added in 16 bits (2 × 2 × 63 × 128 < 2^15) and widened by `vpmaddwd` with the scales. The
//! `−32` offset is applied once per super-block from the Q8_K block sums, as in the AVX2
//! kernel. All integer sums are exact, so the results match the scalar twin bit for bit.

use std::arch::x86_64::*;

use super::packed_avx512::{load_halves, load_pair};
use super::packed_q6k_avx2::{DUP_EVEN, DUP_ODD};
use crate::packed::{PackedArgs, PACK_ROWS};

/// Tokens sharing one rebuilt super-block column (per pair of groups).
pub(super) const TOKEN_TILE: usize = 8;

/// Bytes of a packed Q6_K group per 32 columns (1680 per super-block): `pair_drivers!`'s step.
const COLUMN: usize = 210;

/// Bytes of one super-block column of a packed Q6_K group.
const SUPER_COLUMN: usize = 1680;

/// A kernel for a pair of groups and a tile of tokens (`pair_tile::<T>` for T = 1..=8).
pub(super) type TileFn =
    unsafe fn(&PackedArgs<'_>, *const u8, *const u8, usize, &mut [__m512; TOKEN_TILE]);

/// Sub-block quants of both groups (96 bytes at `s0` and at `s1`: low nibbles `A`, `B`, top
/// bits `H`) as four vectors of 16 rows × 4 elements, unsigned 6-bit.
///
/// # Safety
/// 96 bytes must be readable at each address.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn q6_k_quads(s0: *const u8, s1: *const u8) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    // SAFETY: the caller's bound.
    let (va, vb, vh) = unsafe {
        (
            load_pair(s0, s1),
            load_pair(s0.add(32), s1.add(32)),
            load_pair(s0.add(64), s1.add(64)),
        )
    };
    let and = _mm512_and_si512;
    [
        _mm512_or_si512(and(va, m4), and(_mm512_slli_epi16::<4>(vh), m30)),
        _mm512_or_si512(
            and(_mm512_srli_epi16::<4>(va), m4),
            and(_mm512_slli_epi16::<2>(vh), m30),
        ),
        _mm512_or_si512(and(vb, m4), and(vh, m30)),
        _mm512_or_si512(
            and(_mm512_srli_epi16::<4>(vb), m4),
            and(_mm512_srli_epi16::<2>(vh), m30),
        ),
    ]
}

/// `vpmaddubsw` form. `$pair` holds row r's scales of the sub-block pair as the 16-bit halves
/// of lane r; `$h` picks the sub-block (0: low half, 1: high), copied into both halves.
macro_rules! dot4_maddubs {
    ($q:expr, $bc:expr, $pair:expr, $h:expr) => {{
        let (q, bc): (&[__m512i; 4], _) = ($q, $bc);
        let dup = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            [DUP_EVEN, DUP_ODD][$h].as_ptr() as *const __m256i
        ));
        let scale = _mm512_shuffle_epi8($pair, dup);
        let s01 = _mm512_add_epi16(
            _mm512_maddubs_epi16(q[0], bc(0)),
            _mm512_maddubs_epi16(q[1], bc(1)),
        );
        let s23 = _mm512_add_epi16(
            _mm512_maddubs_epi16(q[2], bc(2)),
            _mm512_maddubs_epi16(q[3], bc(3)),
        );
        _mm512_add_epi32(_mm512_madd_epi16(s01, scale), _mm512_madd_epi16(s23, scale))
    }};
}

/// `vpdpbusd` form: the exact 32-bit sum of the 4 chunks times the sub-block's signed scale
/// (sign-extended from its 16-bit half of `$pair`). `$dp` is the instruction (or, in tests,
/// its emulation).
macro_rules! dot4_vnni {
    ($dp:path, $q:expr, $bc:expr, $pair:expr, $h:expr) => {{
        let (q, bc): (&[__m512i; 4], _) = ($q, $bc);
        let scale = if $h == 0 {
            _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>($pair))
        } else {
            _mm512_srai_epi32::<16>($pair)
        };
        let mut s = $dp(_mm512_setzero_si512(), q[0], bc(0));
        for c in 1..4 {
            s = $dp(s, q[c], bc(c));
        }
        _mm512_mullo_epi32(scale, s)
    }};
}

/// [`dot4_vnni`] with the VNNI instruction.
macro_rules! dot4_dpbusd {
    ($($arg:expr),+) => {
        dot4_vnni!(_mm512_dpbusd_epi32, $($arg),+)
    };
}

/// [`dot4_vnni`] with `vpdpbusd` emulated in AVX-512 BW (tests: see `x86::vnni_emulation`).
#[cfg(test)]
macro_rules! dot4_dpbusd_emulated {
    ($($arg:expr),+) => {
        dot4_vnni!(crate::x86::vnni_emulation::dpbusd_512, $($arg),+)
    };
}

/// The kernels for one instruction set: `$features` for `#[target_feature]` and `$dot4` the
/// scaled dot product of a sub-block.
macro_rules! q6_k_kernels_512 {
    ($name:ident, $features:literal, $dot4:ident) => {
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
                let mut acc = [_mm512_setzero_ps(); T];
                // Only the first tile streams the groups; the later ones find them in L1.
                let stream = t0 == 0;
                for b in 0..nb {
                    // SAFETY: super-block column b of each group is 1680 bytes at
                    // wg + 1680b (the caller passes whole groups of nb columns); token t's
                    // Q8_K block b is 292 bytes at acts + t·ab + 292b (d at 0, quants at
                    // 4..260, sums at 260..292; checked by `matmul_packed_at`). Prefetches
                    // past the end never fault.
                    unsafe {
                        let (c0, c1) = (wg0.add(b * SUPER_COLUMN), wg1.add(b * SUPER_COLUMN));
                        let acts: [*const u8; T] = std::array::from_fn(|t| {
                            args.acts.as_ptr().add((t0 + t) * ab + b * 292)
                        });
                        let mut isum = [_mm512_setzero_si512(); T];
                        let mut bias = [_mm512_setzero_si512(); T];
                        for p in 0..8 {
                            if stream {
                                for c in [c0, c1] {
                                    let next = c.wrapping_add(SUPER_COLUMN);
                                    for line in 0..4 {
                                        let at = 256 * p + 64 * line;
                                        _mm_prefetch::<_MM_HINT_T0>(
                                            next.wrapping_add(at) as *const i8
                                        );
                                    }
                                }
                            }
                            // Row r's scales of sub-blocks 2p and 2p + 1 as the i16 halves
                            // of lane r, group 0 in lanes 0..8 and group 1 in 8..16.
                            let at = 16 + 16 * p;
                            let pair = _mm512_cvtepi8_epi16(load_halves(c0.add(at), c1.add(at)));
                            for (t, a) in acts.iter().enumerate() {
                                let sums = (a.add(260 + 4 * p) as *const i32).read_unaligned();
                                let sums = _mm512_set1_epi32(sums);
                                bias[t] = _mm512_add_epi32(bias[t], _mm512_madd_epi16(pair, sums));
                            }
                            for h in 0..2 {
                                let s = 2 * p + h;
                                let at = 144 + 96 * s;
                                let q = q6_k_quads(c0.add(at), c1.add(at));
                                for (t, a) in acts.iter().enumerate() {
                                    let y = a.add(4 + 16 * s);
                                    let bc = |c: usize| {
                                        _mm512_set1_epi32(
                                            (y.add(4 * c) as *const i32).read_unaligned(),
                                        )
                                    };
                                    let dot = $dot4!(&q, bc, pair, h);
                                    isum[t] = _mm512_add_epi32(isum[t], dot);
                                }
                            }
                        }
                        let d = _mm512_cvtph_ps(load_halves(c0, c1));
                        for (t, a) in acts.iter().enumerate() {
                            let d_a = _mm512_set1_ps((*a as *const f32).read_unaligned());
                            let total = _mm512_sub_epi32(isum[t], _mm512_slli_epi32::<5>(bias[t]));
                            acc[t] = _mm512_fmadd_ps(
                                _mm512_mul_ps(d, d_a),
                                _mm512_cvtepi32_ps(total),
                                acc[t],
                            );
                        }
                    }
                }
                acc_out[..T].copy_from_slice(&acc);
            }

            pair_drivers!($features, matmul_q6_kx8, [1, 2, 3, 4, 5, 6, 7, 8]);
        }
    };
}

q6_k_kernels_512!(bw, "avx2,fma,f16c,avx512f,avx512bw,avx512vl", dot4_maddubs);
q6_k_kernels_512!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot4_dpbusd
);
// The VNNI kernel with `vpdpbusd` emulated: tests run it on any AVX-512 BW CPU (and emulator).
#[cfg(test)]
q6_k_kernels_512!(
    vnni_emulated,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    dot4_dpbusd_emulated
);
