//! Token pairs for the AVX2 prompt kernels (`prompt_q4_0_avx2`, `prompt_q4_k_avx2`,
//! `prompt_q5_k_avx2`, `prompt_q6_k_avx2`).
//!
//! A packed group keeps row r of 8 rows in 32-bit lane r, and the one-token kernels broadcast a
//! token's 4-byte activation quad to all 8 lanes: one `vpbroadcastd` per `vpmaddubsw`. On
//! Zen-class cores broadcasts and shuffles share two vector pipes and `vpmaddubsw` the other two,
//! so the broadcasts bound a prompt. Here the activations of a token pair (t0, t1) are
//! interleaved by quad (`t0 q0, t1 q0, t0 q1, …`), so one `vpbroadcastq` puts t0's quad in the
//! even lanes and t1's in the odd ones. Times the weight chunk it gives (row r, token r mod 2) in
//! lane r; times the chunk with adjacent rows swapped ([`SWAP`], one shuffle per chunk shared by
//! every pair of a tile), (row r ^ 1, token r mod 2). Each broadcast then serves two
//! `vpmaddubsw`, and [`untangle`] puts the lanes back in row order once per tile.

use std::arch::x86_64::*;
use std::cell::RefCell;

use crate::level::KernelLevel;
use crate::packed::{PackedArgs, PACK_ROWS};
use crate::types::GgmlType;

/// Adjacent 32-bit lanes swapped (0 1 2 3 → 1 0 3 2 in each 128-bit half).
pub(super) const SWAP: i32 = 0b10_11_00_01;

/// Token pairs per tile of the prompt kernels.
pub(super) const PAIR_TILE: usize = 4;

/// The activations of each token pair interleaved by quad, and their summaries by pair.
/// Tokens are paired (0, 1), (2, 3), …; an odd last token is paired with itself.
///
/// A prompt kernel fills them in a per-thread buffer, or takes them ready-made from
/// [`crate::ActivationSummaries`]: the summaries are built once per set of activation rows and
/// shared by every row slice of every product with those rows (a thread pool cuts one product
/// into many slices, and each slice used to pair the same rows again).
#[derive(Debug, Default, Clone)]
pub(crate) struct PairedActivations {
    /// `[pair][block]`: the block's quads, quad q of the first token then of the second.
    pub quads: Vec<u8>,
    /// `[pair][block]`: the two tokens' block scales.
    pub d: Vec<f32>,
    /// `[pair][block][word]`: each summary word of the block (`PackedArgs::act_s`) of the first
    /// token, then of the second.
    pub sums: Vec<i32>,
    /// The form, columns and tokens of the rows paired last (`None`: nothing paired).
    paired: Option<(Activations, usize, usize)>,
}

thread_local! {
    /// Per-thread paired activations (grown to the largest product seen, then reused).
    static PAIRED: RefCell<PairedActivations> = const { RefCell::new(PairedActivations::new()) };
}

/// `a` and `b` (32 quant bytes each) interleaved by quad into `out` (64 bytes).
///
/// # Safety
/// The CPU must have AVX2; 32 bytes readable at `a` and `b`, 64 writable at `out`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn interleave32(a: *const u8, b: *const u8, out: *mut u8) {
    // SAFETY: the caller's bounds.
    unsafe {
        let a = _mm256_loadu_si256(a as *const __m256i);
        let b = _mm256_loadu_si256(b as *const __m256i);
        // Quads 0, 1 | 4, 5 and 2, 3 | 6, 7 of both tokens, interleaved.
        let lo = _mm256_unpacklo_epi32(a, b);
        let hi = _mm256_unpackhi_epi32(a, b);
        let o = out as *mut __m256i;
        _mm256_storeu_si256(o, _mm256_permute2x128_si256::<0x20>(lo, hi));
        _mm256_storeu_si256(o.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
    }
}

impl PairedActivations {
    /// Nothing paired yet.
    pub(crate) const fn new() -> Self {
        PairedActivations {
            quads: Vec::new(),
            d: Vec::new(),
            sums: Vec::new(),
            paired: None,
        }
    }

    /// Pairs `args`'s activation rows: blocks of `block` bytes whose `quant_bytes` quants start
    /// at `quants_at`, `words` summary words per block from `args.act_s` (or, with
    /// `words_in_block`, from the block's own bytes at that offset), and the block scale from
    /// `args.act_d` or (when that is empty, as for Q8_K) the block's leading f32.
    ///
    /// # Safety
    /// The CPU must have AVX2; `args` as checked by `crate::packed::matmul_packed_at`, with
    /// `n_cols / quant_bytes` blocks per row.
    #[target_feature(enable = "avx2")]
    unsafe fn fill(
        &mut self,
        args: &PackedArgs<'_>,
        (block, quants_at, quant_bytes, words): (usize, usize, usize, usize),
        words_in_block: Option<usize>,
    ) {
        let nb = args.n_cols / quant_bytes;
        let n_pairs = args.n_tokens.div_ceil(2);
        self.quads.resize(n_pairs * nb * 2 * quant_bytes, 0);
        self.d.clear();
        self.sums.clear();
        for p in 0..n_pairs {
            let tokens = [2 * p, (2 * p + 1).min(args.n_tokens - 1)];
            let [r0, r1] = tokens.map(|t| &args.acts[t * nb * block..(t + 1) * nb * block]);
            let dst = &mut self.quads[p * nb * 2 * quant_bytes..(p + 1) * nb * 2 * quant_bytes];
            let blocks = r0.chunks_exact(block).zip(r1.chunks_exact(block));
            for ((b0, b1), out) in blocks.zip(dst.chunks_exact_mut(2 * quant_bytes)) {
                for k in 0..quant_bytes / 32 {
                    let at = quants_at + 32 * k;
                    let dst = out[64 * k..].as_mut_ptr();
                    // SAFETY: each block has `quant_bytes` quants at `quants_at`; `out` holds
                    // twice that, so 64 bytes from `dst`.
                    unsafe { interleave32(b0.as_ptr().add(at), b1.as_ptr().add(at), dst) };
                }
                if args.act_d.is_empty() {
                    let scale = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.d.extend([scale(b0), scale(b1)]);
                }
            }
            for b in 0..nb {
                if !args.act_d.is_empty() {
                    self.d.extend(tokens.map(|t| args.act_d[t * nb + b]));
                }
                for w in 0..words {
                    self.sums.extend(tokens.map(|t| match words_in_block {
                        Some(at) => {
                            let i = (t * nb + b) * block + at + 4 * w;
                            let word = &args.acts[i..i + 4];
                            i32::from_le_bytes([word[0], word[1], word[2], word[3]])
                        }
                        None => args.act_s[(t * nb + b) * words + w],
                    }));
                }
            }
        }
    }

    /// Pairs `args`'s activation rows in form `acts` (the caller's AVX2 check done) and records
    /// what was paired.
    ///
    /// # Safety
    /// The CPU must have AVX2; `args` as checked by `crate::packed::matmul_packed_at` for a
    /// weight type whose activations are `acts` (its `w` is not read).
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn pair(&mut self, args: &PackedArgs<'_>, acts: Activations) {
        // SAFETY: same features; the block shapes are those of `acts`: Q8_0 blocks are 34
        // bytes with 32 quants after an f16 scale, Q8_K blocks 292 bytes (an f32 scale, 256
        // quants, then 16 sub-block sums as 8 words at byte 260).
        unsafe {
            match acts {
                Activations::Q8_0 => self.fill(args, (34, 2, 32, 1), None),
                Activations::Q8_K => self.fill(args, (292, 4, 256, 4), None),
                Activations::Q8_KBlockSums => self.fill(args, (292, 4, 256, 8), Some(260)),
            }
        }
        self.paired = Some((acts, args.n_cols, args.n_tokens));
    }

    /// Forgets the rows paired last (the buffers keep their memory).
    pub(crate) fn clear(&mut self) {
        self.paired = None;
    }

    /// Whether these are `args`'s rows paired in form `acts` (given that they were paired
    /// from the same activation bytes, as [`crate::ActivationSummaries`] checks).
    fn serve(&self, args: &PackedArgs<'_>, acts: Activations) -> bool {
        self.paired == Some((acts, args.n_cols, args.n_tokens))
    }
}

/// The 8 bytes at `p` in every 64-bit lane.
///
/// # Safety
/// 8 bytes must be readable at `p`; the CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn broadcast_pair(p: *const u8) -> __m256i {
    // SAFETY: the caller's bound.
    unsafe { _mm256_set1_epi64x((p as *const i64).read_unaligned()) }
}

/// A pair's accumulators — `a[0]` with (row r, token r mod 2) in lane r, `a[1]` with
/// (row r ^ 1, token r mod 2) — as the first token's 8 rows and the second's, in row order.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn untangle(a: [__m256; 2]) -> [__m256; 2] {
    // Row r of the first token: lane r of a[0] for even r, lane r - 1 of a[1] for odd r; of
    // the second: lane r of a[0] for odd r, lane r + 1 of a[1] for even r.
    let swapped = _mm256_permute_ps::<SWAP>(a[1]);
    [
        _mm256_blend_ps::<0b1010_1010>(a[0], swapped),
        _mm256_blend_ps::<0b0101_0101>(a[0], swapped),
    ]
}

/// A tile kernel: columns `nb`, group `wg` times pairs `p0..p0 + P` of `paired`, each pair's
/// two tokens in row order into `acc_out`.
pub(super) type PairFn =
    unsafe fn(usize, *const u8, &PairedActivations, usize, &mut [[__m256; 2]; PAIR_TILE]);

/// Every group (`group_bytes` each, `nb` columns) times every token pair, `PAIR_TILE` pairs at
/// a time (`tiles[p - 1]` runs `p` pairs), into `out` (`[token][row]`).
///
/// # Safety
/// The CPU must have AVX2; `paired` filled from `args`; the tiles' own requirements hold for
/// whole groups of `args.w` and `nb` columns.
#[target_feature(enable = "avx2")]
unsafe fn drive_pairs(
    args: &PackedArgs<'_>,
    out: &mut [f32],
    nb: usize,
    group_bytes: usize,
    paired: &PairedActivations,
    tiles: [PairFn; PAIR_TILE],
) {
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let n_pairs = args.n_tokens.div_ceil(2);
    let mut acc = [[_mm256_setzero_ps(); 2]; PAIR_TILE];
    for g in 0..n_groups {
        // SAFETY: group g lies inside `w` (n_groups whole groups).
        let wg = unsafe { args.w.as_ptr().add(g * group_bytes) };
        let mut p0 = 0;
        while p0 < n_pairs {
            let p = PAIR_TILE.min(n_pairs - p0);
            // SAFETY: pairs p0..p0 + p were filled; the caller's bounds for the tile.
            unsafe { tiles[p - 1](nb, wg, paired, p0, &mut acc) };
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
}

/// The activation blocks a prompt kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)] // ggml's block names, as in `GgmlType`
pub(crate) enum Activations {
    /// Q8_0 (for Q4_0 weights): 32 quants per block.
    Q8_0,
    /// Q8_K (for Q4_K and Q5_K): 256 quants per block, 4 summary words per block (`act_s`).
    Q8_K,
    /// Q8_K with the block's own 16 sub-block sums as 8 words (for Q6_K).
    Q8_KBlockSums,
}

impl Activations {
    /// The form the prompt kernels of `level` pair for packed `ty`, if they pair tokens: the
    /// AVX2 kernels of Q4_0, Q4_K, Q5_K and Q6_K, which the AVX-512 levels run only when their
    /// own 512-bit kernels failed the start-up check (`avx512` false; `crate::packed`'s
    /// dispatch). A wrong answer costs
    /// time only: a kernel pairs its own rows when the ones it is given are not in its form.
    pub(crate) fn paired_by(level: KernelLevel, ty: GgmlType, avx512: bool) -> Option<Self> {
        if !matches!(
            level,
            KernelLevel::Avx2
                | KernelLevel::AvxVnni
                | KernelLevel::Avx512
                | KernelLevel::Avx512Vnni
        ) {
            return None;
        }
        match ty {
            GgmlType::Q4_0 if !avx512 => Some(Activations::Q8_0),
            GgmlType::Q4_K if !avx512 => Some(Activations::Q8_K),
            GgmlType::Q5_K if !avx512 => Some(Activations::Q8_K),
            GgmlType::Q6_K if !avx512 => Some(Activations::Q8_KBlockSums),
            _ => None,
        }
    }
}

/// A prompt kernel's product: the paired activations `args` brings when they are its rows in
/// form `acts`, else this thread's, filled from `args`; then every group (`column_bytes` per
/// column of `acts`'s block size) times every token pair.
///
/// # Safety
/// The CPU must have AVX2; arguments as checked by `crate::packed::matmul_packed_at` for a
/// weight type whose activations are `acts`; the tiles' own requirements hold for whole groups
/// and pairs filled this way.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn matmul_pairs(
    args: &PackedArgs<'_>,
    out: &mut [f32],
    acts: Activations,
    column_bytes: usize,
    tiles: [PairFn; PAIR_TILE],
) {
    let nb = match acts {
        Activations::Q8_0 => args.n_cols / 32,
        Activations::Q8_K | Activations::Q8_KBlockSums => args.n_cols / 256,
    };
    if let Some(paired) = args.paired.filter(|p| p.serve(args, acts)) {
        // SAFETY: same features; `paired` holds `args`'s rows in form `acts`; the caller's
        // bounds.
        return unsafe { drive_pairs(args, out, nb, nb * column_bytes, paired, tiles) };
    }
    PAIRED.with(|cell| {
        let paired = &mut cell.borrow_mut();
        // SAFETY: same features; the caller's bounds.
        unsafe {
            paired.pair(args, acts);
            drive_pairs(args, out, nb, nb * column_bytes, paired, tiles)
        }
    })
}

/// The public `matmul_tokens(args, out)` of a prompt kernel module (packed weights times several
/// tokens: every group times every token pair): the module's `pair_tile::<1..=4>` over
/// [`matmul_pairs`] with activations `$acts` and the module's `COLUMN` bytes per column, built
/// for `$features` (AVX2, FMA and F16C unless given).
macro_rules! paired_entry {
    ($acts:expr) => {
        paired_entry!($acts, "avx2,fma,f16c");
    };
    ($acts:expr, $features:literal) => {
        /// Packed weights times several tokens: every group times every token pair.
        ///
        /// # Safety
        /// The CPU must have this module's features (at least AVX2, FMA and F16C); arguments
        /// as checked by `crate::packed::matmul_packed_at`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn matmul_tokens(args: &PackedArgs<'_>, out: &mut [f32]) {
            let tiles: [PairFn; PAIR_TILE] = [
                pair_tile::<1>,
                pair_tile::<2>,
                pair_tile::<3>,
                pair_tile::<4>,
            ];
            // SAFETY: same features; arguments as checked by the caller.
            unsafe { matmul_pairs(args, out, $acts, COLUMN, tiles) }
        }
    };
}
pub(super) use paired_entry;

/// How a prompt kernel sums chunk products, as a macro of four rules (the Q4_0 and Q4_K
/// prompt kernels are stamped out once per form):
/// - `first w0, y0, w1, y1`: the sum of two chunk products `w0 · y0 + w1 · y1` (unsigned
///   weight bytes times signed activation bytes, per 32-bit lane);
/// - `add s, w0, y0, w1, y1`: the same added into `s`;
/// - `plain s`: the 32-bit lane sums of `s`;
/// - `scaled s, k`: those sums times the lanes' scales `k` (in the form the module's
///   `q4_k_header` builds).
///
/// `maddubs_form`: `vpmaddubsw` and 16-bit adds, widened by one `vpmaddwd` (exact while at most
/// 8 chunks are summed: 8 × 2 × 15 × 128 < 2^15, and k < 2^6 in the scaled widening).
macro_rules! maddubs_form {
    (first $w0:expr, $y0:expr, $w1:expr, $y1:expr) => {
        _mm256_add_epi16(_mm256_maddubs_epi16($w0, $y0), _mm256_maddubs_epi16($w1, $y1))
    };
    (add $s:expr, $w0:expr, $y0:expr, $w1:expr, $y1:expr) => {
        _mm256_add_epi16($s, $crate::x86::paired_avx2::maddubs_form!(first $w0, $y0, $w1, $y1))
    };
    (plain $s:expr) => {
        _mm256_madd_epi16($s, _mm256_set1_epi16(1))
    };
    (scaled $s:expr, $k:expr) => {
        _mm256_madd_epi16($s, $k)
    };
}
pub(super) use maddubs_form;

/// The `vpdpbusd` form of [`maddubs_form`] with instruction `$dp`: products accumulate in
/// 32 bits and the scale is a 32-bit multiply. Equal sums: both are exact.
macro_rules! vnni_form {
    ($dp:path, first $w0:expr, $y0:expr, $w1:expr, $y1:expr) => {
        $dp($dp(_mm256_setzero_si256(), $w0, $y0), $w1, $y1)
    };
    ($dp:path, add $s:expr, $w0:expr, $y0:expr, $w1:expr, $y1:expr) => {
        $dp($dp($s, $w0, $y0), $w1, $y1)
    };
    ($dp:path, plain $s:expr) => {
        $s
    };
    ($dp:path, scaled $s:expr, $k:expr) => {
        _mm256_mullo_epi32($s, $k)
    };
}
pub(super) use vnni_form;

/// [`vnni_form`] with AVX-VNNI's `vpdpbusd`.
macro_rules! dpbusd_form {
    ($($rule:tt)*) => {
        $crate::x86::paired_avx2::vnni_form!(_mm256_dpbusd_avx_epi32, $($rule)*)
    };
}
pub(super) use dpbusd_form;

/// [`vnni_form`] with `vpdpbusd` emulated in AVX2 (tests: see `x86::vnni_emulation`).
#[cfg(test)]
macro_rules! dpbusd_emulated_form {
    ($($rule:tt)*) => {
        $crate::x86::paired_avx2::vnni_form!($crate::x86::vnni_emulation::dpbusd_256, $($rule)*)
    };
}
#[cfg(test)]
pub(super) use dpbusd_emulated_form;
