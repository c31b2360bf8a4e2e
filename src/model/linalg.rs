//! Row-parallel linear layers over the kernels crate, and the small elementwise operations of
//! the forward pass (written to match ggml's CPU arithmetic where it matters for parity).

use moe_edge_kernels::GgmlType;
use rayon::prelude::*;

/// Activations quantized for one weight type: `n` rows back to back.
pub fn quantize_rows(ty: GgmlType, x: &[f32], n_rows: usize, out: &mut Vec<u8>) {
    let vt = ty.vec_dot_type();
    let cols = x.len() / n_rows;
    let rb = vt
        .row_bytes(cols)
        .expect("activation width is a multiple of the block size");
    out.resize(rb * n_rows, 0);
    for (src, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        moe_edge_kernels::quantize_activation(vt, src, dst);
    }
}

/// Rows per parallel task: enough work per task to amortise scheduling, enough tasks to balance.
fn rows_per_task(rows: usize, cols: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let min_rows = (16384 / cols.max(1)).clamp(4, 256);
    rows.div_ceil(threads * 4).max(min_rows).next_multiple_of(4)
}

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for `n_tok` tokens; `xq` holds the tokens' activations
/// quantized with [`quantize_rows`] for `ty`.
pub fn linear(
    ty: GgmlType,
    cols: usize,
    rows: usize,
    w: &[u8],
    xq: &[u8],
    n_tok: usize,
    out: &mut [f32],
) {
    let rb = ty.row_bytes(cols).expect("validated shape");
    debug_assert_eq!(w.len(), rb * rows);
    debug_assert_eq!(out.len(), rows * n_tok);
    let chunk = rows_per_task(rows, cols);
    if n_tok == 1 {
        if rows <= chunk {
            moe_edge_kernels::matvec(ty, cols, w, xq, out);
        } else {
            out.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| {
                let r0 = i * chunk;
                moe_edge_kernels::matvec(ty, cols, &w[r0 * rb..(r0 + o.len()) * rb], xq, o);
            });
        }
        return;
    }
    if rows <= chunk {
        moe_edge_kernels::matmul(ty, cols, w, xq, n_tok, out);
        return;
    }
    let n_chunks = rows.div_ceil(chunk);
    let parts: Vec<(usize, Vec<f32>)> = (0..n_chunks)
        .into_par_iter()
        .map(|i| {
            let r0 = i * chunk;
            let r1 = (r0 + chunk).min(rows);
            let mut part = vec![0f32; (r1 - r0) * n_tok];
            moe_edge_kernels::matmul(ty, cols, &w[r0 * rb..r1 * rb], xq, n_tok, &mut part);
            (r0, part)
        })
        .collect();
    for (r0, part) in parts {
        let n = part.len() / n_tok;
        for t in 0..n_tok {
            out[t * rows + r0..t * rows + r0 + n].copy_from_slice(&part[t * n..(t + 1) * n]);
        }
    }
}

/// RMSNorm as ggml computes it (sum of squares in f64), times `weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// In-place RMSNorm times `weight`.
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Rotary embedding of one head in place, ggml's way (theta advanced by repeated products).
pub fn rope(head: &mut [f32], pos: usize, n_rot: usize, base: f32, neox: bool) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for i in (0..n_rot).step_by(2) {
        let (sin, cos) = theta.sin_cos();
        let (a, b) = if neox {
            (i / 2, i / 2 + n_rot / 2)
        } else {
            (i, i + 1)
        };
        let x0 = head[a];
        let x1 = head[b];
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
        theta *= theta_scale;
    }
}
