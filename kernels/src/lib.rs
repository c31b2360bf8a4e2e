//! moe-edge kernels: ggml-compatible quantized block formats, scalar reference kernels and
//! SIMD kernels chosen at run time.
//!
//! Every operation has a scalar twin (`scalar`), the specification the SIMD versions
//! (`x86::avx2`, `arm::neon`, …) are tested against. The level is picked once by run-time
//! feature detection ([`active_level`]); nothing depends on compile-time CPU flags.
//!
//! Row layout: a row of `n` elements of type `ty` is `ty.row_bytes(n)` bytes of ggml blocks.
//! Activations are first quantized to `ty.vec_dot_type()` with [`quantize_activation`], then
//! multiplied with [`vec_dot`], [`matvec`] or [`matmul`].
//!
//! Length preconditions are checked with `assert!` (the callers validate shapes first, so a
//! failure is a bug in the caller, never bad input reaching here).
#![deny(clippy::undocumented_unsafe_blocks)]
// Kernels index several arrays with one counter to mirror the reference algorithms.
#![allow(clippy::needless_range_loop)]

pub mod activation;
pub mod attention;
pub mod blocks;
mod dispatch;
mod level;
pub mod packed;
pub mod scalar;
pub mod types;
pub mod vector;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use activation::{silu, swiglu, swiglu_at};
pub use attention::{
    dot_rows, dot_rows_at, f32_to_f16_row, round_to_f16, weighted_rows, weighted_rows_at,
    CacheValue,
};
pub use level::{active_level, choose_level, KernelLevel, LevelChoice, UnknownLevel};
pub use packed::{
    can_pack, matmul_packed, matmul_packed_at, matmul_packed_summarized, matmul_packed_twin,
    pack_rows, pack_rows_in_place, packing_pays, reserve_thread_scratch, unpack_rows,
    ActivationSummaries, PACK_ROWS,
};
pub use types::GgmlType;
pub use vector::{axpy, axpy_at, dot_f32, dot_f32_at, prefetch, stream_read, stream_read_at};

fn row_bytes_of(ty: GgmlType, n: usize) -> usize {
    match ty.row_bytes(n) {
        Some(b) => b,
        None => panic!(
            "{n} elements is not a whole number of {ty} blocks of {}",
            ty.block_size()
        ),
    }
}

/// Dequantizes one row: `dst.len()` elements from `src` (`ty.row_bytes(dst.len())` bytes).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    dequantize_row_at(active_level(), ty, src, dst)
}

/// [`dequantize_row`] at an explicit level (which this CPU must support).
pub fn dequantize_row_at(level: KernelLevel, ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let bytes = row_bytes_of(ty, dst.len());
    assert_eq!(src.len(), bytes, "dequantize_row: {ty} source length");
    let f = dispatch::table(level).get(ty).dequantize;
    // SAFETY: the table is for a level this CPU supports (checked in `table`), lengths match.
    unsafe { f(src, dst) }
}

/// Quantizes an activation row to `vec_dot_ty` (normally `weight_ty.vec_dot_type()`:
/// Q8_0, Q8_1, Q8_K, F16, BF16 or F32) with ggml's reference rounding, byte-identical to ggml.
/// `dst.len()` must be `vec_dot_ty.row_bytes(src.len())`. Other types use the reference weight
/// quantizer, so this also quantizes weights.
pub fn quantize_activation(vec_dot_ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    quantize_activation_at(active_level(), vec_dot_ty, src, dst)
}

/// [`quantize_activation`] at an explicit level.
pub fn quantize_activation_at(level: KernelLevel, ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let bytes = row_bytes_of(ty, src.len());
    assert_eq!(
        dst.len(),
        bytes,
        "quantize_activation: {ty} destination length"
    );
    let f = dispatch::table(level).get(ty).quantize;
    // SAFETY: supported level (checked in `table`); lengths checked above.
    unsafe { f(src, dst) }
}

/// Quantizes weights with ggml's reference algorithm (`quantize_row_*_ref`), scalar; for model
/// tools and tests. `dst.len()` must be `ty.row_bytes(src.len())`.
pub fn quantize_row_ref(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    quantize_activation_at(KernelLevel::Scalar, ty, src, dst)
}

/// Dot product of an `n`-element weight row of type `ty` with an activation row quantized to
/// `ty.vec_dot_type()`.
pub fn vec_dot(ty: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
    vec_dot_at(active_level(), ty, n, w_row, act)
}

/// [`vec_dot`] at an explicit level.
pub fn vec_dot_at(level: KernelLevel, ty: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
    assert_eq!(
        w_row.len(),
        row_bytes_of(ty, n),
        "vec_dot: {ty} weight row length"
    );
    let vdt = ty.vec_dot_type();
    assert_eq!(
        act.len(),
        row_bytes_of(vdt, n),
        "vec_dot: {vdt} activation row length"
    );
    let f = dispatch::table(level).get(ty).vec_dot;
    // SAFETY: supported level (checked in `table`); both rows have exactly `n` elements.
    unsafe { f(n, w_row, act) }
}

/// `out[r] = vec_dot(row r, act)` for `out.len()` weight rows of `n_cols` elements stored back to
/// back in `w_rows`. Single-threaded: callers split rows over threads.
pub fn matvec(ty: GgmlType, n_cols: usize, w_rows: &[u8], act: &[u8], out: &mut [f32]) {
    matvec_at(active_level(), ty, n_cols, w_rows, act, out)
}

/// [`matvec`] at an explicit level.
pub fn matvec_at(
    level: KernelLevel,
    ty: GgmlType,
    n_cols: usize,
    w_rows: &[u8],
    act: &[u8],
    out: &mut [f32],
) {
    let rb = row_bytes_of(ty, n_cols);
    assert_eq!(
        Some(w_rows.len()),
        rb.checked_mul(out.len()),
        "matvec: {ty} weight length"
    );
    let vdt = ty.vec_dot_type();
    assert_eq!(
        act.len(),
        row_bytes_of(vdt, n_cols),
        "matvec: {vdt} activation row length"
    );
    let k = dispatch::table(level).get(ty);
    if out.is_empty() {
        return;
    }
    match k.matvec {
        // SAFETY: supported level; `w_rows` holds exactly `out.len()` rows, `act` one row.
        Some(f) => unsafe { f(n_cols, w_rows, act, out) },
        None => {
            for (o, row) in out.iter_mut().zip(w_rows.chunks_exact(rb)) {
                // SAFETY: supported level; one whole row each.
                *o = unsafe { (k.vec_dot)(n_cols, row, act) };
            }
        }
    }
}

/// Weight rows times several activation rows: `acts` holds `n_tokens` rows (quantized to
/// `ty.vec_dot_type()`) back to back; `out[t * n_rows + r]` receives row `r` · token `t`, where
/// `n_rows = w_rows.len() / ty.row_bytes(n_cols)` and `out.len() == n_tokens * n_rows`.
/// Each weight row is read from memory once for all tokens.
pub fn matmul(
    ty: GgmlType,
    n_cols: usize,
    w_rows: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    matmul_at(active_level(), ty, n_cols, w_rows, acts, n_tokens, out)
}

/// [`matmul`] at an explicit level.
pub fn matmul_at(
    level: KernelLevel,
    ty: GgmlType,
    n_cols: usize,
    w_rows: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    let rb = row_bytes_of(ty, n_cols);
    let n_rows = w_rows.len().checked_div(rb).unwrap_or(0);
    assert_eq!(
        w_rows.len(),
        n_rows * rb,
        "matmul: {ty} weight length is not whole rows"
    );
    let vdt = ty.vec_dot_type();
    let ab = row_bytes_of(vdt, n_cols);
    assert_eq!(
        Some(acts.len()),
        ab.checked_mul(n_tokens),
        "matmul: {vdt} activations length"
    );
    assert_eq!(
        Some(out.len()),
        n_rows.checked_mul(n_tokens),
        "matmul: output length"
    );
    if out.is_empty() {
        return;
    }
    let k = dispatch::table(level).get(ty);
    match k.matmul {
        // SAFETY: supported level; lengths checked above.
        Some(f) => unsafe { f(n_cols, w_rows, acts, n_tokens, out) },
        None => {
            for (r, row) in w_rows.chunks_exact(rb).enumerate() {
                for (t, act) in acts.chunks_exact(ab).enumerate() {
                    // SAFETY: supported level; one whole row each.
                    out[t * n_rows + r] = unsafe { (k.vec_dot)(n_cols, row, act) };
                }
            }
        }
    }
}
