//! Prompt processing for packed Q4_0 (`Q4_0x8`, see `crate::packed`) on AVX2: two tokens per
//! activation broadcast.
//!
//! The one-token-per-broadcast tile (`packed_avx2`) spends one `vpbroadcastd` per `vpmaddubsw`,
//! and on Zen-class cores broadcasts and `vpmaddubsw` compete for the same two vector pipes.
//! Here the activations of a token pair are interleaved by 4-byte quad (`t0 q0, t1 q0, t0 q1,
//! …`), so one `vpbroadcastq` puts token `t0`'s quad in the even lanes and `t1`'s in the odd
//! ones. Multiplied by the weight chunk (row r in lane r) it gives (row r, token r mod 2); by the
//! chunk with adjacent rows swapped, (row r ^ 1, token r mod 2): one broadcast per two
//! `vpmaddubsw`, and the swap costs one shuffle per chunk for every token of the tile.
//!
//! Per (row, token) the integer sums and the f32 steps — `fma(d_w · d_a, dot − zero point,
//! acc)` per block, blocks in order — are those of the scalar twin, so the results are
//! bit-identical to it; the lanes are put back in row order once per tile.

use std::arch::x86_64::*;
use std::cell::RefCell;

use crate::packed::{PackedArgs, PACK_ROWS};

/// Token pairs per tile.
const PAIR_TILE: usize = 4;

/// Bytes of one block column of a packed Q4_0 group: 8 f16 scales, then 4 × 32 bytes of nibbles.
const COLUMN: usize = 144;

/// Software prefetch distance in bytes (as in `packed_avx2`).
const PREFETCH_AHEAD: usize = 1152;

/// Adjacent 32-bit lanes swapped (0 1 2 3 → 1 0 3 2 in each 128-bit half).
const SWAP: i32 = 0b10_11_00_01;

/// The activations of each token pair interleaved by quad, and their summaries by pair.
struct PairedActivations {
    /// `[pair][block]`: 64 bytes, quad q of the pair's first token then of its second, q = 0..8.
    quads: Vec<u8>,
    /// `[pair][block]`: the two tokens' block scales.
    d: Vec<f32>,
    /// `[pair][block]`: the two tokens' zero points (8 · Σ y).
    zero_points: Vec<i32>,
}

thread_local! {
    /// Per-thread paired activations (grown to the largest product seen, then reused).
    static PAIRED: RefCell<PairedActivations> = const {
        RefCell::new(PairedActivations { quads: Vec::new(), d: Vec::new(), zero_points: Vec::new() })
    };
}

impl PairedActivations {
    /// Pairs tokens (0, 1), (2, 3), …; an odd last token is paired with itself.
    ///
    /// # Safety
    /// The CPU must have AVX2; `args` as checked by `crate::packed::matmul_packed_at`.
    #[target_feature(enable = "avx2")]
    unsafe fn fill(&mut self, args: &PackedArgs<'_>) {
        let nb = args.n_cols / 32;
        let n_pairs = args.n_tokens.div_ceil(2);
        self.quads.resize(n_pairs * nb * 64, 0);
        self.d.clear();
        self.zero_points.clear();
        for p in 0..n_pairs {
            let (t0, t1) = (2 * p, (2 * p + 1).min(args.n_tokens - 1));
            let row = |t: usize| &args.acts[t * nb * 34..(t + 1) * nb * 34];
            let dst = &mut self.quads[p * nb * 64..(p + 1) * nb * 64];
            let blocks = row(t0).chunks_exact(34).zip(row(t1).chunks_exact(34));
            for ((b0, b1), out) in blocks.zip(dst.chunks_exact_mut(64)) {
                // SAFETY: each block has 32 quant bytes after its scale; `out` has 64 bytes.
                unsafe {
                    let a = _mm256_loadu_si256(b0.as_ptr().add(2) as *const __m256i);
                    let b = _mm256_loadu_si256(b1.as_ptr().add(2) as *const __m256i);
                    // Quads 0, 1 | 4, 5 and 2, 3 | 6, 7 of both tokens, interleaved.
                    let lo = _mm256_unpacklo_epi32(a, b);
                    let hi = _mm256_unpackhi_epi32(a, b);
                    let o = out.as_mut_ptr() as *mut __m256i;
                    _mm256_storeu_si256(o, _mm256_permute2x128_si256::<0x20>(lo, hi));
                    _mm256_storeu_si256(o.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
                }
            }
            for b in 0..nb {
                self.d
                    .extend([args.act_d[t0 * nb + b], args.act_d[t1 * nb + b]]);
                let s = [args.act_s[t0 * nb + b], args.act_s[t1 * nb + b]];
                self.zero_points.extend(s);
            }
        }
    }
}

/// The 8 bytes at `p` in every 64-bit lane.
///
/// # Safety
/// 8 bytes must be readable at `p`; the CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn broadcast_pair(p: *const u8) -> __m256i {
    // SAFETY: the caller's bound.
    unsafe { _mm256_set1_epi64x((p as *const i64).read_unaligned()) }
}

/// Group `wg` (8 rows) times token pairs `p0..p0 + P`: `acc_out[k]` holds pair k's two tokens
/// in row order.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; the group is whole (n_cols / 32 columns) and pairs
/// `p0..p0 + P` exist in `paired`, built by [`PairedActivations::fill`] for these arguments.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_tile<const P: usize>(
    nb: usize,
    wg: *const u8,
    paired: &PairedActivations,
    p0: usize,
    acc_out: &mut [[__m256; 2]; PAIR_TILE],
) {
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // acc[k][0]: (row r, token r mod 2) in lane r; acc[k][1]: (row r ^ 1, token r mod 2).
    let mut acc = [[_mm256_setzero_ps(); 2]; P];
    // Opaque to the compiler: unrolled, the four chunk steps get interleaved across tokens and
    // their unpacked weights spill (16 registers hold one step, not four).
    let steps = std::hint::black_box(4usize);
    for b in 0..nb {
        // SAFETY: block column b of the group is COLUMN bytes at wg + COLUMN·b (the caller's
        // bound); pair k's block b has 64 quad bytes, two scales and two zero points at index
        // (p0 + k)·nb + b of `paired` (filled for every pair). Prefetches never fault.
        unsafe {
            let col = wg.add(b * COLUMN);
            // Only the first tile streams the group; the later ones find it in L1.
            if p0 == 0 {
                for line in 0..3 {
                    let at = PREFETCH_AHEAD + 64 * line;
                    _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(at) as *const i8);
                }
            }
            // 16-bit sums of 8 chunk products (|sum| ≤ 8 × 2 × 15 × 128 < 2^15).
            let mut sums = [[_mm256_setzero_si256(); 2]; P];
            for i in 0..steps {
                // Chunk 2i (quants 4i.., low nibbles) and 2i + 1 (quants 16 + 4i.., high).
                let v = _mm256_loadu_si256(col.add(16 + 32 * i) as *const __m256i);
                let lo = _mm256_and_si256(v, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                let lo_swap = _mm256_shuffle_epi32::<SWAP>(lo);
                let hi_swap = _mm256_shuffle_epi32::<SWAP>(hi);
                for (k, s) in sums.iter_mut().enumerate() {
                    let quads = paired.quads.as_ptr().add(((p0 + k) * nb + b) * 64);
                    let y_lo = broadcast_pair(quads.add(8 * i));
                    let y_hi = broadcast_pair(quads.add(8 * (4 + i)));
                    let straight = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, y_lo),
                        _mm256_maddubs_epi16(hi, y_hi),
                    );
                    let swapped = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo_swap, y_lo),
                        _mm256_maddubs_epi16(hi_swap, y_hi),
                    );
                    s[0] = _mm256_add_epi16(s[0], straight);
                    s[1] = _mm256_add_epi16(s[1], swapped);
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i));
            let dw = [dw, _mm256_permute_ps::<SWAP>(dw)];
            for (k, (a, s)) in acc.iter_mut().zip(&sums).enumerate() {
                let at = (p0 + k) * nb + b;
                let zero_point =
                    broadcast_pair(paired.zero_points.as_ptr().add(2 * at) as *const u8);
                let d_act =
                    _mm256_castsi256_ps(broadcast_pair(paired.d.as_ptr().add(2 * at) as *const u8));
                for j in 0..2 {
                    let dot = _mm256_sub_epi32(_mm256_madd_epi16(s[j], ones), zero_point);
                    let d = _mm256_mul_ps(dw[j], d_act);
                    a[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), a[j]);
                }
            }
        }
    }
    for (out, a) in acc_out.iter_mut().zip(&acc) {
        // Row r of the first token: lane r of a[0] for even r, lane r - 1 of a[1] for odd r;
        // of the second: lane r of a[0] for odd r, lane r + 1 of a[1] for even r.
        let swapped = _mm256_permute_ps::<SWAP>(a[1]);
        out[0] = _mm256_blend_ps::<0b1010_1010>(a[0], swapped);
        out[1] = _mm256_blend_ps::<0b0101_0101>(a[0], swapped);
    }
}

/// A tile kernel: one group times `P` token pairs (`pair_tile::<P>`).
type PairFn = unsafe fn(usize, *const u8, &PairedActivations, usize, &mut [[__m256; 2]; PAIR_TILE]);

/// Packed Q4_0 times several tokens (Q8_0 activations): every group times every token pair,
/// `PAIR_TILE` pairs at a time.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; arguments as checked by
/// `crate::packed::matmul_packed_at`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn matmul_tokens(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 32;
    let group_bytes = nb * COLUMN;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let n_pairs = args.n_tokens.div_ceil(2);
    let tiles: [PairFn; PAIR_TILE] = [
        pair_tile::<1>,
        pair_tile::<2>,
        pair_tile::<3>,
        pair_tile::<4>,
    ];
    PAIRED.with(|cell| {
        let mut paired = cell.borrow_mut();
        // SAFETY: same features; arguments as checked by the caller.
        unsafe { paired.fill(args) };
        let mut acc = [[_mm256_setzero_ps(); 2]; PAIR_TILE];
        for g in 0..n_groups {
            // SAFETY: group g lies inside `w` (n_groups whole groups).
            let wg = unsafe { args.w.as_ptr().add(g * group_bytes) };
            let mut p0 = 0;
            while p0 < n_pairs {
                let p = PAIR_TILE.min(n_pairs - p0);
                // SAFETY: pairs p0..p0 + p were filled; the tiles need this function's
                // features.
                unsafe { tiles[p - 1](nb, wg, &paired, p0, &mut acc) };
                for (k, pair) in acc[..p].iter().enumerate() {
                    for (j, a) in pair.iter().enumerate() {
                        let t = 2 * (p0 + k) + j;
                        if t < args.n_tokens {
                            let at = t * n_rows + g * PACK_ROWS;
                            let dst = &mut out[at..at + PACK_ROWS];
                            // SAFETY: dst has exactly 8 f32.
                            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), *a) };
                        }
                    }
                }
                p0 += p;
            }
        }
    });
}
