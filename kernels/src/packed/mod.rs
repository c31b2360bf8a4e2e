//! Interleaved ("packed") weight layouts: groups of [`PACK_ROWS`] rows stored so that one SIMD
//! load reaches the same block column of every row in the group.
//!
//! The row-major ggml layout makes a matrix-vector product read `PACK_ROWS` separate streams and
//! finish each row with a horizontal sum; the packed layout gives one stream and leaves row `r`
//! of a group in lane `r` of the accumulator. A packed matrix has exactly as many bytes as the
//! row-major one, so it fits the same expert-cache slot and can be packed in place.
//!
//! The layouts, their arithmetic and the code that packs and unpacks them are in [`layouts`].

use std::cell::RefCell;

use crate::blocks::F16Bits;
use crate::level::KernelLevel;
use crate::types::GgmlType;

pub mod layouts;

use layouts::check_pack_shape;
pub use layouts::{pack_rows, pack_rows_in_place, unpack_rows};
pub(crate) use layouts::{q4_kx8_scale_min, q5_kx8_place};

/// Rows interleaved per group.
pub const PACK_ROWS: usize = 8;

/// Weights, quantized activations and their per-block summaries, as a packed kernel sees them.
pub(crate) struct PackedArgs<'a> {
    pub n_cols: usize,
    /// Packed weight groups, back to back.
    pub w: &'a [u8],
    /// `n_tokens` activation rows in the weight type's `vec_dot_type`.
    pub acts: &'a [u8],
    /// Activation block scales as f32, `[token][block]`.
    pub act_d: &'a [f32],
    /// Q4_0: `8 · Σ y` of each activation block (the zero point times the block sum; computed
    /// but unused for Q8_0, and empty for Q6_K),
    /// `[token][block]`. Q4_K: the sub-block sums of each block in 16-bit pairs,
    /// `[token][block][pair]` (see `summarize_q8_k`).
    pub act_s: &'a [i32],
    pub n_tokens: usize,
    /// The rows paired for the AVX2 prompt kernels, when [`ActivationSummaries`] paired them
    /// (a kernel uses them only if they are these rows in its form; else it pairs its own).
    #[cfg(target_arch = "x86_64")]
    pub paired: Option<&'a crate::x86::paired_avx2::PairedActivations>,
}

/// `out[t * n_rows + r]` for all packed rows and tokens.
pub(crate) type PackedMatmulFn = unsafe fn(args: &PackedArgs<'_>, out: &mut [f32]);

/// Whether `ty` has a packed layout and a `rows`-row matrix can use it.
pub fn can_pack(ty: GgmlType, rows: usize) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K
    ) && rows > 0
        && rows.is_multiple_of(PACK_ROWS)
}

/// Whether packing `ty` pays off at the active level (a SIMD packed kernel exists). Callers pack
/// only when this holds, so scalar-only builds keep the zero-copy row layout.
pub fn packing_pays(ty: GgmlType) -> bool {
    can_pack(ty, PACK_ROWS) && packed_kernel(crate::active_level(), ty).is_some()
}

/// The scalar twin whose bits `level`'s kernel for packed `ty` matches (the SSSE3 kernels
/// accumulate without FMA; see `scalar::packed`). Levels without a kernel of their own for `ty`
/// run this twin.
fn scalar_kernel(level: KernelLevel, ty: GgmlType) -> PackedMatmulFn {
    use crate::scalar::packed;
    match (level, ty) {
        (KernelLevel::Ssse3, GgmlType::Q4_0) => packed::matmul_q4_0x8_unfused,
        (KernelLevel::Ssse3, GgmlType::Q8_0) => packed::matmul_q8_0x8_unfused,
        (KernelLevel::Ssse3, GgmlType::Q4_K) => packed::matmul_q4_kx8_unfused,
        (KernelLevel::Ssse3, GgmlType::Q5_K) => packed::matmul_q5_kx8_unfused,
        (KernelLevel::Ssse3, GgmlType::Q6_K) => packed::matmul_q6_kx8_unfused,
        (_, GgmlType::Q4_K) => packed::matmul_q4_kx8,
        (_, GgmlType::Q6_K) => packed::matmul_q6_kx8,
        (_, GgmlType::Q8_0) => packed::matmul_q8_0x8,
        (_, GgmlType::Q5_K) => packed::matmul_q5_kx8,
        _ => packed::matmul_q4_0x8,
    }
}

/// The SIMD kernel of `level` for packed `ty`, if there is one.
fn packed_kernel(level: KernelLevel, ty: GgmlType) -> Option<PackedMatmulFn> {
    if !can_pack(ty, PACK_ROWS) {
        return None;
    }
    match (level, ty) {
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Ssse3, GgmlType::Q4_0) => Some(crate::x86::packed_ssse3::matmul_q4_0x8),
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Ssse3, GgmlType::Q8_0) => Some(crate::x86::packed_ssse3::matmul_q8_0x8),
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Ssse3, GgmlType::Q4_K) => Some(crate::x86::packed_k_ssse3::matmul_q4_kx8),
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Ssse3, GgmlType::Q5_K) => Some(crate::x86::packed_k_ssse3::matmul_q5_kx8),
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Ssse3, GgmlType::Q6_K) => Some(crate::x86::packed_k_ssse3::matmul_q6_kx8),
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Avx512 | KernelLevel::Avx512Vnni, _) if avx512_kernels_verified(level) => {
            avx512_kernel(level, ty)
        }
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::AvxVnni, GgmlType::Q4_0) => {
            Some(crate::x86::packed_avx2::avxvnni::matmul_q4_0x8)
        }
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::AvxVnni, GgmlType::Q4_K) => {
            Some(crate::x86::packed_avx2::avxvnni::matmul_q4_kx8)
        }
        #[cfg(target_arch = "x86_64")]
        (
            KernelLevel::Avx2
            | KernelLevel::AvxVnni
            | KernelLevel::Avx512
            | KernelLevel::Avx512Vnni,
            _,
        ) => Some(match ty {
            GgmlType::Q4_K => crate::x86::packed_avx2::avx2::matmul_q4_kx8,
            GgmlType::Q6_K => crate::x86::packed_q6k_avx2::matmul_q6_kx8,
            GgmlType::Q8_0 => crate::x86::packed_q8_avx2::matmul_q8_0x8,
            GgmlType::Q5_K => crate::x86::packed_q5k_avx2::matmul_q5_kx8,
            _ => crate::x86::packed_avx2::avx2::matmul_q4_0x8,
        }),
        #[cfg(target_arch = "aarch64")]
        (KernelLevel::Neon | KernelLevel::NeonDotprod, _) => {
            use crate::arm::packed_q8_neon;
            use crate::arm::{packed_neon, packed_q4k_neon, packed_q5k_neon, packed_q6k_neon};
            let sdot = level == KernelLevel::NeonDotprod;
            Some(match (ty, sdot) {
                (GgmlType::Q4_K, false) => packed_q4k_neon::matmul_q4_kx8_neon,
                (GgmlType::Q4_K, true) => packed_q4k_neon::matmul_q4_kx8_dotprod,
                (GgmlType::Q5_K, false) => packed_q5k_neon::matmul_q5_kx8_neon,
                (GgmlType::Q5_K, true) => packed_q5k_neon::matmul_q5_kx8_dotprod,
                (GgmlType::Q6_K, false) => packed_q6k_neon::matmul_q6_kx8_neon,
                (GgmlType::Q6_K, true) => packed_q6k_neon::matmul_q6_kx8_dotprod,
                (GgmlType::Q8_0, false) => packed_q8_neon::matmul_q8_0x8_neon,
                (GgmlType::Q8_0, true) => packed_q8_neon::matmul_q8_0x8_dotprod,
                (_, false) => packed_neon::matmul_q4_0x8_neon,
                (_, true) => packed_neon::matmul_q4_0x8_dotprod,
            })
        }
        _ => None,
    }
}

thread_local! {
    /// Per-thread activation summaries (grown once, reused: no allocation per call).
    static SUMMARY: RefCell<(Vec<f32>, Vec<i32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Sizes this thread's activation summaries for products of up to `n_blocks` activation blocks
/// (tokens × columns / 32), so later calls of that size allocate nothing. Run it on every worker
/// (`rayon::broadcast`) before a loop that must not allocate.
pub fn reserve_thread_scratch(n_blocks: usize) {
    SUMMARY.with(|s| {
        let mut s = s.borrow_mut();
        let (d, sums) = &mut *s;
        d.reserve(n_blocks.saturating_sub(d.len()));
        sums.reserve(n_blocks.saturating_sub(sums.len()));
    });
}

/// Packed weights times `n_tokens` activation rows (quantized to `ty.vec_dot_type()`):
/// `out[t * n_rows + r]`, like [`crate::matmul`] on the unpacked rows. Single-threaded; split
/// rows over threads at group boundaries (multiples of [`PACK_ROWS`] rows).
pub fn matmul_packed(
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    matmul_packed_at(crate::active_level(), ty, n_cols, w, acts, n_tokens, out)
}

/// [`matmul_packed`] at an explicit level (which this CPU must support). Levels without a
/// packed kernel of their own use the scalar twin.
pub fn matmul_packed_at(
    level: KernelLevel,
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    if has_work(ty, n_cols, w, acts, n_tokens, out) {
        let f = packed_kernel(level, ty).unwrap_or(scalar_kernel(level, ty));
        call_kernel(f, ty, n_cols, w, acts, n_tokens, out);
    }
}

/// The scalar twin of `level`'s packed kernel for `ty`, the specification that kernel matches
/// bit for bit: what the property tests compare every level with.
pub fn matmul_packed_twin(
    level: KernelLevel,
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    if has_work(ty, n_cols, w, acts, n_tokens, out) {
        call_kernel(scalar_kernel(level, ty), ty, n_cols, w, acts, n_tokens, out);
    }
}

/// Checks a packed product's shapes (panics on a caller's bug) and says whether there is
/// anything to compute.
fn has_work(
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &[f32],
) -> bool {
    let (_, n_rows) = check_pack_shape(ty, n_cols, w.len());
    let vdt = ty.vec_dot_type();
    let ab = crate::row_bytes_of(vdt, n_cols);
    assert_eq!(
        Some(acts.len()),
        ab.checked_mul(n_tokens),
        "matmul_packed: {vdt} activations length"
    );
    assert_eq!(
        Some(out.len()),
        n_rows.checked_mul(n_tokens),
        "matmul_packed: output length"
    );
    !out.is_empty()
}

/// Runs packed kernel `f` (for `ty`, on a CPU that has its features) on checked arguments,
/// building the activation summaries it needs in this thread's scratch.
fn call_kernel(
    f: PackedMatmulFn,
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    SUMMARY.with(|s| {
        let mut s = s.borrow_mut();
        let (act_d, act_s) = &mut *s;
        summarize_into(ty, acts, act_d, act_s);
        // SAFETY: the summaries were just built from `acts`; the rest as this function's
        // callers checked.
        unsafe { call_summarized(f, n_cols, w, acts, (act_d, act_s, None), n_tokens, out) }
    });
}

/// `act_d`, `act_s` and the paired rows, if any, of a set of activations.
type Summaries<'a> = (&'a [f32], &'a [i32], Option<&'a PairedRows>);

/// The paired rows of the AVX2 prompt kernels (nothing elsewhere).
#[cfg(target_arch = "x86_64")]
type PairedRows = crate::x86::paired_avx2::PairedActivations;
#[cfg(not(target_arch = "x86_64"))]
type PairedRows = ();

/// Runs packed kernel `f` with activation summaries built beforehand.
///
/// # Safety
/// The CPU must have `f`'s features; the shapes must have passed [`has_work`]; `act_d` and
/// `act_s` must be `summarize_into(ty, acts, ..)`'s output for `f`'s weight type `ty` (or at
/// least as long: the kernels index them without bounds checks), and paired rows, if any,
/// paired from `acts` (a kernel checks their form and shape itself).
unsafe fn call_summarized(
    f: PackedMatmulFn,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    (act_d, act_s, paired): Summaries<'_>,
    n_tokens: usize,
    out: &mut [f32],
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = paired;
    let args = PackedArgs {
        n_cols,
        w,
        acts,
        act_d,
        act_s,
        n_tokens,
        #[cfg(target_arch = "x86_64")]
        paired,
    };
    // SAFETY: the kernel is for a level this CPU supports; `w` is whole packed groups of
    // `n_cols` columns, `acts` and its summaries hold `n_tokens` rows, and `out` has
    // `n_rows * n_tokens` entries (the caller's contract).
    unsafe { f(&args, out) }
}

/// The summaries the packed kernels for `ty` read, of activations `acts` (in
/// `ty.vec_dot_type()`), into `act_d` / `act_s` (cleared first).
fn summarize_into(ty: GgmlType, acts: &[u8], act_d: &mut Vec<f32>, act_s: &mut Vec<i32>) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 => summarize_q8_0(acts, act_d, act_s),
        // The Q6_K kernels read the Q8_K blocks' own 16-element sums.
        GgmlType::Q6_K => {
            act_d.clear();
            act_s.clear();
        }
        _ => {
            act_d.clear();
            summarize_q8_k(acts, act_s)
        }
    }
}

/// What the packed kernels need to know about a set of quantized activation rows besides the
/// rows themselves (block scales as f32, block sums, and for the AVX2 prompt kernels the rows
/// interleaved by token pair): built once with
/// [`ActivationSummaries::build`] and shared by every packed product with those rows —
/// the gate and up projections of a token, every row slice a thread pool cuts a product
/// into — instead of rebuilt by each call of [`matmul_packed`].
#[derive(Debug, Default, Clone)]
pub struct ActivationSummaries {
    /// The weight type they were built for (their layout depends on it) and the activation
    /// bytes they describe.
    built_for: Option<(GgmlType, usize)>,
    act_d: Vec<f32>,
    act_s: Vec<i32>,
    /// The rows paired by token for the AVX2 prompt kernels, when the active level's kernel
    /// for the type pairs them and there are enough tokens.
    #[cfg(target_arch = "x86_64")]
    paired: crate::x86::paired_avx2::PairedActivations,
}

impl ActivationSummaries {
    /// Empty summaries; [`Self::build`] fills them (reusing their memory).
    pub const fn new() -> Self {
        ActivationSummaries {
            built_for: None,
            act_d: Vec::new(),
            act_s: Vec::new(),
            #[cfg(target_arch = "x86_64")]
            paired: crate::x86::paired_avx2::PairedActivations::new(),
        }
    }

    /// Summarizes `acts`, activation rows of `n_cols` columns quantized to
    /// `ty.vec_dot_type()`, for products with packed `ty` weights; where the active level's
    /// prompt kernel for `ty` pairs tokens (AVX2, 4 or more rows), pairs the rows too, once for
    /// every product that shares them. Panics if `acts` is not a whole number of such rows.
    pub fn build(&mut self, ty: GgmlType, n_cols: usize, acts: &[u8]) {
        let rb = crate::row_bytes_of(ty.vec_dot_type(), n_cols);
        assert!(
            rb > 0 && acts.len().is_multiple_of(rb),
            "activations: {} bytes is not a whole number of {}-column {} rows",
            acts.len(),
            n_cols,
            ty.vec_dot_type()
        );
        summarize_into(ty, acts, &mut self.act_d, &mut self.act_s);
        self.built_for = Some((ty, acts.len()));
        #[cfg(target_arch = "x86_64")]
        self.pair_rows(ty, n_cols, acts, acts.len() / rb);
    }

    /// Pairs the rows for the active level's prompt kernel for `ty`, if it pairs them.
    #[cfg(target_arch = "x86_64")]
    fn pair_rows(&mut self, ty: GgmlType, n_cols: usize, acts: &[u8], n_tokens: usize) {
        use crate::x86::paired_avx2::Activations;
        self.paired.clear();
        // A decode step's single row returns here first.
        if n_tokens < crate::x86::packed_avx2::PAIRED_FROM || !can_pack(ty, PACK_ROWS) {
            return;
        }
        let level = crate::active_level();
        let Some(form) = Activations::paired_by(level, ty, avx512_kernels_verified(level)) else {
            return;
        };
        let args = PackedArgs {
            n_cols,
            w: &[],
            acts,
            act_d: &self.act_d,
            act_s: &self.act_s,
            n_tokens,
            paired: None,
        };
        // SAFETY: the active level is AVX2 or above (`paired_by`), so the CPU has AVX2; `acts`
        // is `n_tokens` whole rows of `n_cols` columns (checked by `build`) and `act_d`/`act_s`
        // were just summarized from them for `ty`, whose activations take `form`.
        unsafe { self.paired.pair(&args, form) };
    }

    /// Whether these summaries were built for products of packed `ty` with `acts`'s length.
    pub fn fits(&self, ty: GgmlType, acts: &[u8]) -> bool {
        self.built_for == Some((ty, acts.len()))
    }

    /// The summaries as a kernel reads them.
    fn parts(&self) -> Summaries<'_> {
        #[cfg(target_arch = "x86_64")]
        let paired = Some(&self.paired);
        #[cfg(not(target_arch = "x86_64"))]
        let paired = None;
        (&self.act_d, &self.act_s, paired)
    }
}

/// [`matmul_packed`] with the activations' summaries built beforehand (for the same `ty` and
/// these `acts`; panics if they were built for another type or length). The result is the
/// same as [`matmul_packed`]'s.
pub fn matmul_packed_summarized(
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    summaries: &ActivationSummaries,
    n_tokens: usize,
    out: &mut [f32],
) {
    assert!(
        summaries.fits(ty, acts),
        "matmul_packed_summarized: summaries built for {:?}, used for {ty} with {} activation bytes",
        summaries.built_for,
        acts.len()
    );
    let level = crate::active_level();
    if has_work(ty, n_cols, w, acts, n_tokens, out) {
        let f = packed_kernel(level, ty).unwrap_or(scalar_kernel(level, ty));
        // SAFETY: the active level is this CPU's; shapes checked by `has_work`; the summaries
        // were built by `summarize_into` for this type from activations of this length, so
        // they are exactly as long as the kernel reads.
        unsafe { call_summarized(f, n_cols, w, acts, summaries.parts(), n_tokens, out) }
    }
}

/// The Q4_K kernels' activation summaries of Q8_K blocks: for each block, 4 words, word `i`
/// holding the quant sums of sub-blocks `2i` (low 16 bits) and `2i + 1` (high 16 bits), each
/// the sum of two of the block's 16-element `bsums` (|sum| ≤ 32 × 128, so it fits in 16 bits).
/// A kernel multiplies a word by a pair of 6-bit mins with one `vpmaddwd`.
fn summarize_q8_k(acts: &[u8], act_s: &mut Vec<i32>) {
    act_s.clear();
    for blk in acts.chunks_exact(292) {
        let bsum = |i: usize| i16::from_le_bytes([blk[260 + 2 * i], blk[261 + 2 * i]]) as i32;
        for i in 0..4 {
            let lo = bsum(4 * i) + bsum(4 * i + 1);
            let hi = bsum(4 * i + 2) + bsum(4 * i + 3);
            act_s.push((lo as u16 as u32 | (hi as u16 as u32) << 16) as i32);
        }
    }
}

/// The Q4_0 kernels' activation summaries of Q8_0 blocks: each block's scale as f32 and 8 × the
/// sum of its quants (exact integer and exact f16 → f32 arithmetic, so every form agrees).
fn summarize_q8_0(acts: &[u8], act_d: &mut Vec<f32>, act_s: &mut Vec<i32>) {
    act_d.clear();
    act_s.clear();
    #[cfg(target_arch = "x86_64")]
    if KernelLevel::Avx2.is_supported() {
        // SAFETY: the CPU has AVX2 and F16C (both part of the AVX2 level).
        return unsafe { crate::x86::packed_avx2::summarize_q8_0(acts, act_d, act_s) };
    }
    summarize_q8_0_scalar(acts, act_d, act_s);
}

/// Scalar twin of [`summarize_q8_0`].
fn summarize_q8_0_scalar(acts: &[u8], act_d: &mut Vec<f32>, act_s: &mut Vec<i32>) {
    for blk in acts.chunks_exact(34) {
        act_d.push(F16Bits([blk[0], blk[1]]).to_f32());
        let sum: i32 = blk[2..].iter().map(|&v| v as i8 as i32).sum();
        act_s.push(8 * sum);
    }
}

/// The AVX-512 packed kernel of `level` (`Avx512` or `Avx512Vnni`) for `ty`, before the
/// start-up check: 512-bit kernels for every packed type (`packed_avx512`, `packed_q8_avx512`,
/// `packed_q4k_avx512`, `packed_q5k_avx512`, `packed_q6k_avx512`: two groups per vector,
/// `vpdpbusd` with VNNI, `vpmaddubsw` without).
#[cfg(target_arch = "x86_64")]
fn avx512_kernel(level: KernelLevel, ty: GgmlType) -> Option<PackedMatmulFn> {
    use crate::x86::{
        packed_avx512, packed_q4k_avx512, packed_q5k_avx512, packed_q6k_avx512, packed_q8_avx512,
    };
    Some(match (level, ty) {
        (KernelLevel::Avx512Vnni, GgmlType::Q4_0) => packed_avx512::vnni::matmul_q4_0x8,
        (KernelLevel::Avx512Vnni, GgmlType::Q8_0) => packed_q8_avx512::vnni::matmul_q8_0x8,
        (KernelLevel::Avx512Vnni, GgmlType::Q4_K) => packed_q4k_avx512::vnni::matmul_q4_kx8,
        (KernelLevel::Avx512, GgmlType::Q4_0) => packed_avx512::bw::matmul_q4_0x8,
        (KernelLevel::Avx512, GgmlType::Q8_0) => packed_q8_avx512::bw::matmul_q8_0x8,
        (KernelLevel::Avx512, GgmlType::Q4_K) => packed_q4k_avx512::bw::matmul_q4_kx8,
        (KernelLevel::Avx512Vnni, GgmlType::Q5_K) => packed_q5k_avx512::vnni::matmul_q5_kx8,
        (KernelLevel::Avx512Vnni, GgmlType::Q6_K) => packed_q6k_avx512::vnni::matmul_q6_kx8,
        (KernelLevel::Avx512, GgmlType::Q5_K) => packed_q5k_avx512::bw::matmul_q5_kx8,
        (KernelLevel::Avx512, GgmlType::Q6_K) => packed_q6k_avx512::bw::matmul_q6_kx8,
        _ => return None,
    })
}

/// Whether `level`'s AVX-512 packed kernels give the scalar twins' exact bits on this CPU,
/// checked once per level on small known problems of each type (odd and even group counts,
/// every tile of up to 8 tokens). The property tests check them wherever the CPU has AVX-512 and
/// under emulation (`tools/avx512-emu`, in CI), and this
/// check keeps a CPU from ever running them unverified — on a mismatch the AVX2 kernels serve
/// instead, with a warning.
#[cfg(target_arch = "x86_64")]
fn avx512_kernels_verified(level: KernelLevel) -> bool {
    use std::sync::OnceLock;
    static VERIFIED: [OnceLock<bool>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = match level {
        KernelLevel::Avx512 => &VERIFIED[0],
        KernelLevel::Avx512Vnni => &VERIFIED[1],
        _ => return false,
    };
    *slot.get_or_init(|| {
        if !level.is_supported() {
            return false;
        }
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let Some(f) = avx512_kernel(level, ty) else {
                continue;
            };
            if !agrees_with_twin(level, f, ty, 512, &[16, 24], 9) {
                log::warn!(
                    "the {level} packed {ty} kernel differs from its scalar twin on this CPU; using the AVX2 kernels"
                );
                return false;
            }
        }
        log::debug!("{level} packed kernels verified against their scalar twins");
        true
    })
}

/// Whether packed kernel `f` for `ty` (of `level`, on a CPU that has its features) gives the
/// exact bits of `level`'s scalar twin on known problems: `cols` columns, each row count of
/// `rows`, 1 to `tokens` tokens.
#[cfg(target_arch = "x86_64")]
fn agrees_with_twin(
    level: KernelLevel,
    f: PackedMatmulFn,
    ty: GgmlType,
    cols: usize,
    rows: &[usize],
    tokens: usize,
) -> bool {
    let value = |i: usize| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * (1.0 + (i % 13) as f32);
    for &rows in rows {
        let rb = crate::row_bytes_of(ty, cols);
        let mut w = vec![0u8; rb * rows];
        for (r, dst) in w.chunks_exact_mut(rb).enumerate() {
            let x: Vec<f32> = (0..cols).map(|c| value(r * cols + c)).collect();
            crate::quantize_row_ref(ty, &x, dst);
        }
        let mut packed = vec![0u8; w.len()];
        pack_rows(ty, cols, &w, &mut packed);
        let vdt = ty.vec_dot_type();
        let ab = crate::row_bytes_of(vdt, cols);
        let mut acts = vec![0u8; ab * tokens];
        for (t, dst) in acts.chunks_exact_mut(ab).enumerate() {
            let x: Vec<f32> = (0..cols).map(|c| value(31 + t * cols + 3 * c)).collect();
            crate::quantize_activation_at(KernelLevel::Scalar, vdt, &x, dst);
        }
        for n in 1..=tokens {
            let a = &acts[..ab * n];
            let mut want = vec![0f32; rows * n];
            let mut got = vec![0f32; rows * n];
            call_kernel(scalar_kernel(level, ty), ty, cols, &packed, a, n, &mut want);
            call_kernel(f, ty, cols, &packed, a, n, &mut got);
            if want
                .iter()
                .zip(&got)
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU with AVX-512 the AVX-512 packed kernels must pass their start-up check, so that
    /// the packed property tests at those levels run them rather than the AVX2 fallback.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernels_serve_where_the_cpu_has_avx512() {
        for level in [KernelLevel::Avx512, KernelLevel::Avx512Vnni] {
            let has = level.is_supported();
            assert_eq!(avx512_kernels_verified(level), has, "{level}");
            for ty in [
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q5_K,
                GgmlType::Q6_K,
            ] {
                if has {
                    let used = packed_kernel(level, ty).map(|f| f as usize);
                    assert_eq!(
                        used,
                        avx512_kernel(level, ty).map(|f| f as usize),
                        "{level} {ty}"
                    );
                }
            }
            println!("{level} on this CPU: {has}");
        }
    }

    /// The VNNI kernels, with `vpdpbusd` emulated (`x86::vnni_emulation`), give their scalar
    /// twins' bits: the 512-bit Q4_0, Q8_0, Q4_K, Q5_K and Q6_K forms, where AVX-512 BW runs (natively, or
    /// `tools/avx512-emu` in CI, whose CPU model has no VNNI). Group counts odd and even, 1 to 9
    /// tokens (the one-token path and every tile of up to 8 tokens).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_kernels_with_dpbusd_emulated_match_their_scalar_twins() {
        use crate::x86::{
            packed_avx512, packed_q4k_avx512, packed_q5k_avx512, packed_q6k_avx512,
            packed_q8_avx512,
        };
        if !KernelLevel::Avx512.is_supported() {
            return;
        }
        let vnni = KernelLevel::Avx512Vnni;
        let kernels: [(PackedMatmulFn, GgmlType, &[usize]); 5] = [
            (
                packed_avx512::vnni_emulated::matmul_q4_0x8,
                GgmlType::Q4_0,
                &[96],
            ),
            (
                packed_q8_avx512::vnni_emulated::matmul_q8_0x8,
                GgmlType::Q8_0,
                &[96],
            ),
            (
                packed_q4k_avx512::vnni_emulated::matmul_q4_kx8,
                GgmlType::Q4_K,
                &[256, 768],
            ),
            (
                packed_q5k_avx512::vnni_emulated::matmul_q5_kx8,
                GgmlType::Q5_K,
                &[256, 768],
            ),
            (
                packed_q6k_avx512::vnni_emulated::matmul_q6_kx8,
                GgmlType::Q6_K,
                &[256, 768],
            ),
        ];
        for (f, ty, widths) in kernels {
            for &cols in widths {
                let ok = agrees_with_twin(vnni, f, ty, cols, &[8, 24, 40], 9);
                assert!(ok, "{ty}, {cols} columns");
            }
        }
    }

    /// The AVX-VNNI kernels (packed Q4_0 and Q4_K, with the prompt kernels they hand 4 or more
    /// tokens to), with `vpdpbusd` emulated in AVX2, give their scalar twins' bits on any AVX2
    /// CPU; where the CPU has AVX-VNNI, the property tests run the real ones at level `avxvnni`.
    /// Group counts odd and even, 1 to 9 tokens (decode, the one-group tiles, odd and even
    /// token pairs).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_vnni_kernels_with_dpbusd_emulated_match_their_scalar_twins() {
        use crate::x86::packed_avx2::avxvnni_emulated;
        if !KernelLevel::Avx2.is_supported() {
            return;
        }
        let kernels: [(PackedMatmulFn, GgmlType, &[usize]); 2] = [
            (avxvnni_emulated::matmul_q4_0x8, GgmlType::Q4_0, &[96]),
            (avxvnni_emulated::matmul_q4_kx8, GgmlType::Q4_K, &[256, 768]),
        ];
        for (f, ty, widths) in kernels {
            for &cols in widths {
                let ok = agrees_with_twin(KernelLevel::AvxVnni, f, ty, cols, &[8, 24, 40], 9);
                assert!(ok, "{ty}, {cols} columns");
            }
        }
    }

    #[test]
    fn activation_summaries_match_the_scalar_twin() {
        // Blocks of every byte value, in both scale and quants (NaN scales compared by bits).
        let mut acts = vec![0u8; 34 * 300];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for (i, b) in acts.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = if i < 34 * 4 {
                (i * 37 % 256) as u8
            } else {
                x as u8
            };
        }
        acts[2..34].fill(0x80);
        acts[36..68].fill(0x7F);
        let (mut d, mut s) = (Vec::new(), Vec::new());
        summarize_q8_0(&acts, &mut d, &mut s);
        let (mut d_ref, mut s_ref) = (Vec::new(), Vec::new());
        summarize_q8_0_scalar(&acts, &mut d_ref, &mut s_ref);
        assert_eq!(s, s_ref);
        assert_eq!(s[0], 8 * 32 * -128);
        assert_eq!(s[1], 8 * 32 * 127);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&d), bits(&d_ref));
    }
}
