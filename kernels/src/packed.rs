//! Interleaved ("packed") weight layouts: groups of [`PACK_ROWS`] rows stored so that one SIMD
//! load reaches the same block column of every row in the group.
//!
//! The row-major ggml layout makes a matrix-vector product read `PACK_ROWS` separate streams and
//! finish each row with a horizontal sum; the packed layout gives one stream and leaves row `r`
//! of a group in lane `r` of the accumulator. A packed matrix has exactly as many bytes as the
//! row-major one, so it fits the same expert-cache slot and can be packed in place.
//!
//! Packed Q4_0 (`Q4_0x8`): for each group of 8 rows, for each block column `b`, 144 bytes:
//! - 8 block scales (f16), rows 0..8;
//! - 4 chunks of 32 bytes; chunk `c` holds, for rows 0..8 in turn, bytes `4c..4c+4` of that
//!   row's 16 nibble bytes (low nibbles are elements `4c..4c+4`, high nibbles `16+4c..16+4c+4`).
//!
//! Arithmetic (identical at every level, so every level gives bit-identical results): with the
//! activation quantized to Q8_0, for each row and block the exact integer dot
//! `Σ (q - 8) · y` is formed, and the row's f32 accumulator becomes
//! `fma(d_w · d_a, dot, acc)`, blocks in order.

use std::cell::RefCell;

use crate::blocks::F16Bits;
use crate::level::KernelLevel;
use crate::types::GgmlType;

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
    /// `8 · Σ y` of each activation block (Q4_0's zero point times the block sum), `[token][block]`.
    pub act_s: &'a [i32],
    pub n_tokens: usize,
}

/// `out[t * n_rows + r]` for all packed rows and tokens.
pub(crate) type PackedMatmulFn = unsafe fn(args: &PackedArgs<'_>, out: &mut [f32]);

/// Whether `ty` has a packed layout and a `rows`-row matrix can use it.
pub fn can_pack(ty: GgmlType, rows: usize) -> bool {
    ty == GgmlType::Q4_0 && rows > 0 && rows.is_multiple_of(PACK_ROWS)
}

/// Whether packing `ty` pays off at the active level (a SIMD packed kernel exists). Callers pack
/// only when this holds, so scalar-only builds keep the zero-copy row layout.
pub fn packing_pays(ty: GgmlType) -> bool {
    ty == GgmlType::Q4_0 && packed_kernel(crate::active_level(), ty).is_some()
}

fn packed_kernel(level: KernelLevel, ty: GgmlType) -> Option<PackedMatmulFn> {
    if ty != GgmlType::Q4_0 {
        return None;
    }
    match level {
        KernelLevel::Scalar => Some(crate::scalar::packed::matmul_q4_0x8),
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni => {
            Some(crate::x86::packed_avx2::matmul_q4_0x8)
        }
        _ => None,
    }
}

fn check_pack_shape(ty: GgmlType, n_cols: usize, len: usize) -> (usize, usize) {
    let rb = crate::row_bytes_of(ty, n_cols);
    assert!(
        len.is_multiple_of(rb) && can_pack(ty, len / rb),
        "{ty}: {len} bytes of {n_cols}-column rows cannot be packed in groups of {PACK_ROWS}"
    );
    (rb, len / rb)
}

/// Packs row-major rows `src` into `dst` (same length).
pub fn pack_rows(ty: GgmlType, n_cols: usize, src: &[u8], dst: &mut [u8]) {
    let (rb, _) = check_pack_shape(ty, n_cols, src.len());
    assert_eq!(src.len(), dst.len(), "pack_rows: destination length");
    let nb = rb / 18;
    for (g_src, g_dst) in src
        .chunks_exact(rb * PACK_ROWS)
        .zip(dst.chunks_exact_mut(rb * PACK_ROWS))
    {
        for b in 0..nb {
            let out = &mut g_dst[b * 144..(b + 1) * 144];
            for r in 0..PACK_ROWS {
                let blk = &g_src[r * rb + b * 18..r * rb + (b + 1) * 18];
                out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
                for c in 0..4 {
                    let at = 16 + 32 * c + 4 * r;
                    out[at..at + 4].copy_from_slice(&blk[2 + 4 * c..2 + 4 * c + 4]);
                }
            }
        }
    }
}

/// Packs `buf` in place; `scratch` is reused between calls.
pub fn pack_rows_in_place(ty: GgmlType, n_cols: usize, buf: &mut [u8], scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.extend_from_slice(buf);
    pack_rows(ty, n_cols, scratch, buf);
}

/// The inverse of [`pack_rows`].
pub fn unpack_rows(ty: GgmlType, n_cols: usize, src: &[u8], dst: &mut [u8]) {
    let (rb, _) = check_pack_shape(ty, n_cols, src.len());
    assert_eq!(src.len(), dst.len(), "unpack_rows: destination length");
    let nb = rb / 18;
    for (g_src, g_dst) in src
        .chunks_exact(rb * PACK_ROWS)
        .zip(dst.chunks_exact_mut(rb * PACK_ROWS))
    {
        for b in 0..nb {
            let inp = &g_src[b * 144..(b + 1) * 144];
            for r in 0..PACK_ROWS {
                let blk = &mut g_dst[r * rb + b * 18..r * rb + (b + 1) * 18];
                blk[..2].copy_from_slice(&inp[2 * r..2 * r + 2]);
                for c in 0..4 {
                    let at = 16 + 32 * c + 4 * r;
                    blk[2 + 4 * c..2 + 4 * c + 4].copy_from_slice(&inp[at..at + 4]);
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread activation summaries (grown once, reused: no allocation per call).
    static SUMMARY: RefCell<(Vec<f32>, Vec<i32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
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
    if out.is_empty() {
        return;
    }
    let f = packed_kernel(level, ty).unwrap_or(crate::scalar::packed::matmul_q4_0x8);
    let nb = n_cols / 32;
    SUMMARY.with(|s| {
        let mut s = s.borrow_mut();
        let (act_d, act_s) = &mut *s;
        act_d.clear();
        act_s.clear();
        for blk in acts.chunks_exact(34) {
            act_d.push(F16Bits([blk[0], blk[1]]).to_f32());
            let sum: i32 = blk[2..].iter().map(|&v| v as i8 as i32).sum();
            act_s.push(8 * sum);
        }
        debug_assert_eq!(act_d.len(), nb * n_tokens);
        let args = PackedArgs {
            n_cols,
            w,
            acts,
            act_d,
            act_s,
            n_tokens,
        };
        // SAFETY: the kernel is for a level this CPU supports (asserted above); `w` is whole
        // packed groups of `n_cols` columns, `acts` and the summaries hold `n_tokens` rows, and
        // `out` has `n_rows * n_tokens` entries (all checked above).
        unsafe { f(&args, out) }
    });
}
