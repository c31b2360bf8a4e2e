//! Row-parallel linear layers over the kernels crate, and the small elementwise operations of
//! the forward pass (written to match ggml's CPU arithmetic where it matters for parity).

use moe_edge_kernels::GgmlType;
use rayon::prelude::*;
use smallvec::SmallVec;

/// Activations quantized for one weight type: `n` rows back to back.
pub fn quantize_rows(ty: GgmlType, x: &[f32], n_rows: usize, out: &mut Vec<u8>) {
    let vt = ty.vec_dot_type();
    let cols = x.len() / n_rows;
    let rb = vt
        .row_bytes(cols)
        .expect("activation width is a multiple of the block size");
    out.resize(rb * n_rows, 0);
    if n_rows > 1 && x.len() >= PARALLEL_MIN {
        x.par_chunks_exact(cols)
            .zip(out.par_chunks_exact_mut(rb))
            .for_each(|(src, dst)| moe_edge_kernels::quantize_activation(vt, src, dst));
    } else {
        for (src, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
            moe_edge_kernels::quantize_activation(vt, src, dst);
        }
    }
}

/// Elements of elementwise work below which it stays in the calling thread: a fork-join costs
/// more than a token's worth (decode never forks for it, and so never allocates for it).
const PARALLEL_MIN: usize = 1 << 16;

/// Runs `f(t, row)` on each `width`-wide row of `rows`: over the pool for a batch of tokens, in
/// this thread for less than [`PARALLEL_MIN`] elements.
pub fn per_row<T, F>(rows: &mut [T], width: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if rows.len() > width && rows.len() >= PARALLEL_MIN {
        rows.par_chunks_mut(width)
            .enumerate()
            .for_each(|(t, row)| f(t, row));
    } else {
        for (t, row) in rows.chunks_mut(width).enumerate() {
            f(t, row);
        }
    }
}

/// A weight matrix as the kernels see it: `rows` rows of `cols` elements of `ty`, row-major
/// (ggml layout) or packed in interleaved row groups (`moe_edge_kernels::packed`).
#[derive(Clone, Copy)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    pub bytes: &'a [u8],
    pub packed: bool,
}

/// Rows `r0..r0 + n_rows` of `w` times `n_tok` tokens into `out` (`out[t * n_rows + r]`).
fn rows_times_tokens(
    w: &WeightView<'_>,
    r0: usize,
    n_rows: usize,
    xq: &[u8],
    n_tok: usize,
    out: &mut [f32],
) {
    let rb = w.ty.row_bytes(w.cols).expect("validated shape");
    let bytes = &w.bytes[r0 * rb..(r0 + n_rows) * rb];
    if w.packed {
        moe_edge_kernels::matmul_packed(w.ty, w.cols, bytes, xq, n_tok, out);
    } else if n_tok == 1 {
        moe_edge_kernels::matvec(w.ty, w.cols, bytes, xq, out);
    } else {
        moe_edge_kernels::matmul(w.ty, w.cols, bytes, xq, n_tok, out);
    }
}

/// One matrix product of a batch run by [`linear_many`]: `out[t][r] = Σ_c w[r][c] · x[t][c]`
/// for `n_tok` tokens whose activations `xq` were quantized with [`quantize_rows`] for `w.ty`.
pub struct LinearJob<'a> {
    pub w: WeightView<'a>,
    pub xq: &'a [u8],
    pub n_tok: usize,
    pub out: &'a mut [f32],
}

/// A slice of rows of one job, and where its results go.
struct Task<'a> {
    w: WeightView<'a>,
    xq: &'a [u8],
    n_tok: usize,
    r0: usize,
    n_rows: usize,
    out: &'a mut [f32],
}

/// Weight bytes below which splitting a product further costs more than it balances.
const MIN_TASK_BYTES: usize = 32 << 10;

/// Tasks per pool thread in a product of several tokens (a decode step uses 4).
const TASKS_PER_THREAD_BATCH: usize = 16;

/// Rows per task of `w` times `n_tok` tokens when a task should do about `task_work` (weight
/// bytes times tokens): whole packed groups, at most the whole matrix.
fn rows_per_task(w: &WeightView<'_>, n_tok: usize, task_work: usize) -> usize {
    let rb = w.ty.row_bytes(w.cols).expect("validated shape").max(1);
    (task_work / (rb * n_tok.max(1)))
        .max(1)
        .next_multiple_of(moe_edge_kernels::PACK_ROWS)
        .min(w.rows.max(1))
}

/// Runs several independent products in one parallel region: every job's rows are cut into
/// tasks of whole packed groups, and the rayon pool takes them all at once (one fork-join for,
/// say, the gate and up projections of every routed expert, instead of one per matrix).
/// With one token per job it allocates nothing (the task list lives on the stack).
pub fn linear_many(jobs: &mut [LinearJob<'_>]) {
    let threads = rayon::current_num_threads().max(1);
    // Tasks are sized by work (weight bytes times tokens), since the jobs of a prompt's MoE
    // have different token counts. A batch is cut finer than a decode step: its tasks are
    // long, so the one a thread finishes last would otherwise leave the other idle.
    let single = jobs.iter().all(|j| j.n_tok == 1);
    let total_work: usize = jobs.iter().map(|j| j.w.bytes.len() * j.n_tok).sum();
    let per_thread = if single { 4 } else { TASKS_PER_THREAD_BATCH };
    let task_work = (total_work / (threads * per_thread)).max(MIN_TASK_BYTES);
    let n_tasks: usize = jobs
        .iter()
        .map(|j| {
            debug_assert_eq!(j.out.len(), j.w.rows * j.n_tok);
            j.w.rows.div_ceil(rows_per_task(&j.w, j.n_tok, task_work))
        })
        .sum();
    if n_tasks <= 1 {
        for j in jobs.iter_mut() {
            rows_times_tokens(&j.w, 0, j.w.rows, j.xq, j.n_tok, j.out);
        }
        return;
    }
    if single {
        return run_tasks(jobs, task_work, None);
    }
    BATCH_OUT.with(|cell| {
        // A product started while this thread waits inside another one (work stealing) gets
        // a buffer of its own.
        let mut own = Vec::new();
        let mut held = cell.try_borrow_mut();
        let scratch = match held.as_deref_mut() {
            Ok(buf) => buf,
            Err(_) => &mut own,
        };
        // Every entry is written by a task before it is copied out: no clearing.
        scratch.resize(jobs.iter().map(|j| j.out.len()).sum(), 0.0);
        run_tasks(jobs, task_work, Some(scratch));
        // Back into the token-major outputs, job by job over the pool.
        let mut starts: SmallVec<[usize; 64]> = SmallVec::new();
        let mut at = 0;
        for j in jobs.iter() {
            starts.push(at);
            at += j.out.len();
        }
        let scratch = &scratch[..];
        jobs.par_iter_mut()
            .zip(starts.par_iter())
            .for_each(|(j, &start)| {
                let c = rows_per_task(&j.w, j.n_tok, task_work);
                let (rows, n_tok) = (j.w.rows, j.n_tok);
                let (mut r0, mut at) = (0, start);
                while r0 < rows {
                    let n = c.min(rows - r0);
                    for t in 0..n_tok {
                        let src = &scratch[at + t * n..at + (t + 1) * n];
                        j.out[t * rows + r0..t * rows + r0 + n].copy_from_slice(src);
                    }
                    at += n * n_tok;
                    r0 += n;
                }
            });
    });
}

thread_local! {
    /// Task outputs of a batch product before they are copied into place (grown, never
    /// cleared).
    static BATCH_OUT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Cuts every job into tasks of whole packed groups and runs them over the pool. One token per
/// job (`scratch` is `None`): each task writes its rows of the output directly. Several
/// tokens: outputs are token-major, so a row slice is strided; tasks write `[t][r]` parts to
/// `scratch`, job after job.
fn run_tasks(jobs: &mut [LinearJob<'_>], task_work: usize, scratch: Option<&mut [f32]>) {
    let single = scratch.is_none();
    {
        let mut tasks: SmallVec<[Task<'_>; 64]> = SmallVec::new();
        let mut rest: &mut [f32] = scratch.unwrap_or_default();
        for j in jobs.iter_mut() {
            let c = rows_per_task(&j.w, j.n_tok, task_work);
            let mut dst: &mut [f32] = if single {
                &mut *j.out
            } else {
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(j.out.len());
                rest = tail;
                mine
            };
            let mut r0 = 0;
            while r0 < j.w.rows {
                let n_rows = c.min(j.w.rows - r0);
                let (part, tail) = std::mem::take(&mut dst).split_at_mut(n_rows * j.n_tok);
                dst = tail;
                tasks.push(Task {
                    w: j.w,
                    xq: j.xq,
                    n_tok: j.n_tok,
                    r0,
                    n_rows,
                    out: part,
                });
                r0 += n_rows;
            }
        }
        // One task per rayon leaf: with few threads rayon otherwise runs a quarter of the
        // list as one unsplittable sequence, and the last of those leaves one thread idle.
        tasks.par_iter_mut().with_max_len(1).for_each(|t| {
            rows_times_tokens(&t.w, t.r0, t.n_rows, t.xq, t.n_tok, t.out);
        });
    }
}

/// One product over the rayon pool: [`linear_many`] with a single job.
pub fn linear(w: WeightView<'_>, xq: &[u8], n_tok: usize, out: &mut [f32]) {
    linear_many(&mut [LinearJob { w, xq, n_tok, out }]);
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
