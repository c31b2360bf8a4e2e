//! Row-parallel linear layers over the kernels crate, and the small elementwise operations of
//! the forward pass (written to match ggml's CPU arithmetic where it matters for parity).

use moe_edge_kernels::{ActivationSummaries, GgmlType};
use rayon::prelude::*;
use smallvec::SmallVec;
use std::sync::Mutex;

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

/// SwiGLU of `n_rows` rows (`gate[i] = silu(gate[i]) · up[i]`) and the result quantized for
/// `ty` into `out`, row by row: over rayon for a batch, and for a decode step's few rows on
/// the spinning decode pool (`super::pool`) (the SiLU's `exp` would otherwise run on one thread while the others wait).
pub fn swiglu_quantize_rows(
    ty: GgmlType,
    gate: &mut [f32],
    up: &[f32],
    n_rows: usize,
    out: &mut Vec<u8>,
) {
    let vt = ty.vec_dot_type();
    let cols = gate.len() / n_rows.max(1);
    let rb = vt
        .row_bytes(cols)
        .expect("activation width is a multiple of the block size");
    out.resize(rb * n_rows, 0);
    let one_row = |g: &mut [f32], u: &[f32], dst: &mut [u8]| {
        moe_edge_kernels::swiglu(g, u);
        moe_edge_kernels::quantize_activation(vt, g, dst);
    };
    if gate.len() >= PARALLEL_MIN {
        gate.par_chunks_exact_mut(cols)
            .zip(up.par_chunks_exact(cols))
            .zip(out.par_chunks_exact_mut(rb))
            .for_each(|((g, u), dst)| one_row(g, u, dst));
        return;
    }
    type RowTask<'a> = std::sync::Mutex<(&'a mut [f32], &'a mut [u8])>;
    let cells: SmallVec<[RowTask<'_>; 16]> = gate
        .chunks_exact_mut(cols)
        .zip(out.chunks_exact_mut(rb))
        .map(std::sync::Mutex::new)
        .collect();
    let run = |i: usize| {
        let mut cell = cells[i].lock().expect("a row runs once");
        let (g, dst) = &mut *cell;
        one_row(g, &up[i * cols..(i + 1) * cols], dst);
    };
    if n_rows < 2 || !super::pool::try_run(n_rows, &run) {
        (0..n_rows).for_each(run);
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
    sums: Option<&ActivationSummaries>,
    n_tok: usize,
    out: &mut [f32],
) {
    let rb = w.ty.row_bytes(w.cols).expect("validated shape");
    let bytes = &w.bytes[r0 * rb..(r0 + n_rows) * rb];
    if let (true, Some(sums)) = (w.packed, sums) {
        moe_edge_kernels::matmul_packed_summarized(w.ty, w.cols, bytes, xq, sums, n_tok, out);
    } else if w.packed {
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
    /// The activations' summaries for packed weights, built once for all of the job's tasks.
    sums: Option<&'a ActivationSummaries>,
    n_tok: usize,
    r0: usize,
    n_rows: usize,
    out: TaskOut<'a>,
}

/// Where a task's `n_tok × n_rows` results go.
enum TaskOut<'a> {
    /// One token: the task's rows of the output, contiguous.
    Rows(&'a mut [f32]),
    /// Several tokens: rows `r0..r0 + n_rows` of every token's row of the job's token-major
    /// output, which the job's other tasks share (each writes only its own rows).
    Shared(SharedOut<'a>),
}

/// A job's token-major output (`n_tok` rows of `rows`), handed to all of its tasks.
#[derive(Clone, Copy)]
struct SharedOut<'a> {
    ptr: *mut f32,
    rows: usize,
    n_tok: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a `SharedOut` is made from a `&mut [f32]` that stays borrowed (and otherwise unused)
// until every task of its job has finished; tasks write through it only to their own rows,
// which no other task of the job writes (see `SharedOut::write`).
unsafe impl Send for SharedOut<'_> {}
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    fn new(out: &'a mut [f32], rows: usize, n_tok: usize) -> Self {
        assert_eq!(out.len(), rows * n_tok, "token-major output");
        SharedOut {
            ptr: out.as_mut_ptr(),
            rows,
            n_tok,
            _out: std::marker::PhantomData,
        }
    }

    /// Copies `src` (`[t][r]`, `n_rows` per token) into rows `r0..r0 + n_rows` of every token.
    fn write(&self, r0: usize, n_rows: usize, src: &[f32]) {
        assert!(r0 + n_rows <= self.rows && src.len() == n_rows * self.n_tok);
        for (t, part) in src.chunks_exact(n_rows.max(1)).enumerate() {
            // SAFETY: t < n_tok and r0 + n_rows <= rows, so the range lies inside the output
            // (n_tok × rows elements). The tasks of a job cover disjoint row ranges, so no other
            // thread touches these elements while this slice lives.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(self.ptr.add(t * self.rows + r0), n_rows) };
            dst.copy_from_slice(part);
        }
    }
}

impl Task<'_> {
    fn run(&mut self) {
        let Task {
            w,
            xq,
            sums,
            n_tok,
            r0,
            n_rows,
            out,
        } = self;
        let product = |o: &mut [f32]| rows_times_tokens(w, *r0, *n_rows, xq, *sums, *n_tok, o);
        match out {
            TaskOut::Rows(out) => product(out),
            TaskOut::Shared(shared) => TASK_OUT.with(|cell| {
                // The results land in this thread's buffer (still in cache) and go straight to
                // their rows of the job's output.
                let mut own = Vec::new();
                let mut held = cell.try_borrow_mut();
                let buf = match held.as_deref_mut() {
                    Ok(buf) => buf,
                    Err(_) => &mut own,
                };
                // Every entry is written by the kernel: no clearing.
                buf.resize(*n_rows * *n_tok, 0.0);
                product(buf);
                shared.write(*r0, *n_rows, buf);
            }),
        }
    }
}

/// Weight bytes below which splitting a product further costs more than it balances.
const MIN_TASK_BYTES: usize = 32 << 10;

/// Tasks per pool thread in a product of several tokens.
const TASKS_PER_THREAD_BATCH: usize = 16;

/// A decode task takes 1 / (threads × this) of the work left in its region (guided
/// self-scheduling on the spinning pool, which hands tasks out in order).
const DECODE_GUIDE: usize = 2;

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
/// tasks of whole packed groups, and one pool takes them all at once (one region for, say, the
/// gate and up projections of every routed expert, instead of one per matrix): rayon for a
/// batch, the spinning decode pool (`super::pool`) for a decode step.
/// A decode step (one token per job) allocates nothing: the task list lives on the stack.
pub fn linear_many(jobs: &mut [LinearJob<'_>]) {
    SUMMARIES.with(|cell| {
        // A nested call (a rayon thread that steals another product while it waits) gets a
        // list of its own.
        let mut own = Vec::new();
        let mut held = cell.try_borrow_mut();
        let list = match held.as_deref_mut() {
            Ok(list) => list,
            Err(_) => &mut own,
        };
        let which = summarize_jobs(jobs, list);
        run_jobs(jobs, list, &which);
    })
}

/// Activation blocks summarized in the calling thread; more are summarized over rayon.
const SUMMARY_PARALLEL_MIN: usize = 1 << 14;

/// Builds, once per distinct activation set, the summaries the packed jobs' kernels read
/// (the tasks of a job, and jobs with the same activations such as a token's gate and up
/// projections, share them), into `list`; returns each job's index in `list`.
fn summarize_jobs(
    jobs: &[LinearJob<'_>],
    list: &mut Vec<ActivationSummaries>,
) -> SmallVec<[Option<usize>; 32]> {
    // Activations are keyed by where they are, their length, the weight type (the summaries'
    // layout) and the row width (how they pair into tokens).
    let key_of = |j: &LinearJob<'_>| (j.xq.as_ptr() as usize, j.xq.len(), j.w.ty, j.w.cols);
    let mut keys: SmallVec<[(usize, usize, GgmlType, usize); 16]> = SmallVec::new();
    let which = jobs
        .iter()
        .map(|j| {
            if !j.w.packed || j.n_tok == 0 || j.w.rows == 0 {
                return None;
            }
            let key = key_of(j);
            Some(keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                keys.push(key);
                keys.len() - 1
            }))
        })
        .collect();
    if list.len() < keys.len() {
        list.resize_with(keys.len(), ActivationSummaries::new);
    }
    // Each key's activations: the first job's with that key.
    let acts_of = |k: usize| {
        let job = jobs
            .iter()
            .find(|j| j.w.packed && key_of(j) == keys[k])
            .expect("every key comes from a job");
        (job.w.ty, job.w.cols, job.xq)
    };
    let blocks: usize = (0..keys.len())
        .map(|k| {
            let (ty, _, xq) = acts_of(k);
            xq.len() / ty.vec_dot_type().type_size()
        })
        .sum();
    let build = |(k, s): (usize, &mut ActivationSummaries)| {
        let (ty, cols, xq) = acts_of(k);
        s.build(ty, cols, xq);
    };
    if blocks >= SUMMARY_PARALLEL_MIN {
        list[..keys.len()]
            .par_iter_mut()
            .enumerate()
            .for_each(build);
    } else {
        list[..keys.len()].iter_mut().enumerate().for_each(build);
    }
    which
}

/// [`linear_many`]'s work, with the packed jobs' activation summaries built.
fn run_jobs(
    jobs: &mut [LinearJob<'_>],
    summaries: &[ActivationSummaries],
    which: &[Option<usize>],
) {
    let threads = rayon::current_num_threads().max(1);
    // Tasks are sized by work (weight bytes times tokens), since the jobs of a prompt's MoE
    // have different token counts: a batch's into TASKS_PER_THREAD_BATCH equal shares per
    // thread, a decode step's into guided shares (below).
    let single = jobs.iter().all(|j| j.n_tok == 1);
    let total_work: usize = jobs.iter().map(|j| j.w.bytes.len() * j.n_tok).sum();
    let task_work = (total_work / (threads * TASKS_PER_THREAD_BATCH)).max(MIN_TASK_BYTES);
    let mut work_left = total_work;
    // Built in place as the cells the pool's threads claim them from: moving a list this size
    // (or collecting it into cells) copied kilobytes per region, serially, in every decode step.
    let mut tasks: SmallVec<[Mutex<Task<'_>>; 64]> = SmallVec::new();
    for (j, which) in jobs.iter_mut().zip(which) {
        debug_assert_eq!(j.out.len(), j.w.rows * j.n_tok);
        let (w, xq, n_tok) = (j.w, j.xq, j.n_tok);
        let sums = which.map(|k| &summaries[k]);
        if n_tok == 0 || w.rows == 0 {
            continue;
        }
        let c = rows_per_task(&w, n_tok, task_work);
        let task = |r0: usize, out| Task {
            w,
            xq,
            sums,
            n_tok,
            r0,
            n_rows: c.min(w.rows - r0),
            out,
        };
        if n_tok == 1 {
            // One token: the tasks' rows are contiguous slices of the output. Guided sizes:
            // each task takes a share of the work still left in the region, so tasks shrink
            // toward its end and the thread that finishes first waits for a small one.
            let rb = w.ty.row_bytes(w.cols).expect("validated shape");
            let mut rest = &mut *j.out;
            let mut r0 = 0;
            while !rest.is_empty() {
                let share = (work_left / (threads * DECODE_GUIDE)).max(MIN_TASK_BYTES);
                let c = rows_per_task(&w, 1, share).min(rest.len());
                let (part, tail) = std::mem::take(&mut rest).split_at_mut(c);
                rest = tail;
                tasks.push(Mutex::new(Task {
                    w,
                    xq,
                    sums,
                    n_tok,
                    r0,
                    n_rows: c,
                    out: TaskOut::Rows(part),
                }));
                r0 += c;
                work_left = work_left.saturating_sub(c * rb);
            }
        } else if w.rows <= c {
            tasks.push(Mutex::new(task(0, TaskOut::Rows(&mut *j.out))));
        } else {
            let shared = SharedOut::new(&mut *j.out, w.rows, n_tok);
            for r0 in (0..w.rows).step_by(c) {
                tasks.push(Mutex::new(task(r0, TaskOut::Shared(shared))));
            }
        }
    }
    let run = |i: usize| tasks[i].lock().expect("a task runs once").run();
    match tasks.len() {
        0 => {}
        1 => run(0),
        // One task per rayon leaf: with few threads rayon otherwise runs a quarter of the
        // list as one unsplittable sequence, and the last of those leaves one thread idle.
        n => {
            // A decode step's regions are short: the spinning pool starts them without a
            // fork-join (rayon takes a batch's, or a region while the pool is busy).
            if single && super::pool::try_run(n, &run) {
                return;
            }
            (0..n).into_par_iter().with_max_len(1).for_each(run);
        }
    }
}

thread_local! {
    /// The activation summaries of the products this thread publishes (grown, never shrunk:
    /// a decode step reuses them without allocating).
    static SUMMARIES: std::cell::RefCell<Vec<ActivationSummaries>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// A task's results before they go to their rows of a shared output (grown, never
    /// cleared).
    static TASK_OUT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One product over the rayon pool: [`linear_many`] with a single job.
pub fn linear(w: WeightView<'_>, xq: &[u8], n_tok: usize, out: &mut [f32]) {
    linear_many(&mut [LinearJob { w, xq, n_tok, out }]);
}

/// Independent f64 partial sums in [`sum_of_squares`]: enough to hide the adds' latency, and
/// in a fixed order, so the result is the same on every machine.
const SQUARE_LANES: usize = 8;

/// Σ v² as ggml's RMSNorm takes it: each square rounded in f32, summed in f64. ggml sums in one
/// chain of dependent adds; here [`SQUARE_LANES`] chains, summed at the end, which the compiler
/// can vectorize (2048 values: 0.40 µs against 1.95 µs for one chain). The f64 sums differ
/// from ggml's by about 1e-13 relative, far below the f32 rounding of the mean that follows
/// (`rms_norm_scale_matches_one_f64_chain`).
fn sum_of_squares(x: &[f32]) -> f64 {
    let mut lanes = [0f64; SQUARE_LANES];
    let mut chunks = x.chunks_exact(SQUARE_LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += (v * v) as f64;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| (v * v) as f64).sum();
    lanes.iter().sum::<f64>() + tail
}

/// RMSNorm as ggml computes it (sum of squares in f64), times `weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean = (sum_of_squares(x) / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// In-place RMSNorm times `weight`.
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let mean = (sum_of_squares(x) / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Rotary embedding in place of every `head_dim`-wide head of one token's row, ggml's way
/// (theta advanced by repeated products).
pub fn rope_heads(
    row: &mut [f32],
    head_dim: usize,
    pos: usize,
    n_rot: usize,
    base: f32,
    neox: bool,
) {
    // The angles depend only on the position and the dimension pair: computed once for all
    // the row's heads (on the stack for up to 256 rotated dimensions).
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    let mut angles: SmallVec<[(f32, f32); 128]> = SmallVec::new();
    for _ in (0..n_rot).step_by(2) {
        angles.push(theta.sin_cos());
        theta *= theta_scale;
    }
    for head in row.chunks_exact_mut(head_dim) {
        for (k, &(sin, cos)) in angles.iter().enumerate() {
            let (a, b) = if neox {
                (k, k + n_rot / 2)
            } else {
                (2 * k, 2 * k + 1)
            };
            let x0 = head[a];
            let x1 = head[b];
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::XorShift64;

    #[test]
    fn rms_norm_scale_matches_one_f64_chain() {
        // ggml's order: one chain of f64 adds. The lanes' sum must give the same f32 mean on
        // rows of every length, with values spread over many magnitudes.
        let mut rng = XorShift64::new(7);
        for len in (1..40).chain([63, 64, 65, 127, 2048, 2049, 5120]) {
            for _ in 0..50 {
                let x: Vec<f32> = (0..len)
                    .map(|_| (rng.unit() - 0.5) * 2f32.powi(rng.below(24) as i32 - 12))
                    .collect();
                let chain: f64 = x.iter().map(|&v| (v * v) as f64).sum();
                let want = (chain / len as f64) as f32;
                let got = (sum_of_squares(&x) / len as f64) as f32;
                assert_eq!(got.to_bits(), want.to_bits(), "length {len}");
            }
        }
    }

    /// `rows` random rows of `cols` quantized to `ty`, packed if asked.
    fn weights(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        packed: bool,
        rng: &mut XorShift64,
    ) -> Vec<u8> {
        let rb = ty.row_bytes(cols).unwrap();
        let mut q = vec![0u8; rows * rb];
        for row in q.chunks_exact_mut(rb) {
            let x: Vec<f32> = (0..cols).map(|_| rng.unit() * 2.0 - 1.0).collect();
            moe_edge_kernels::quantize_row_ref(ty, &x, row);
        }
        if !packed {
            return q;
        }
        let mut p = vec![0u8; q.len()];
        moe_edge_kernels::pack_rows(ty, cols, &q, &mut p);
        p
    }

    /// A batch product cut into tasks (several per job, rows shared between tasks through
    /// `SharedOut`) gives, bit for bit, what each job gives computed whole by the kernel.
    fn check_batch(ty: GgmlType, packed: bool, shapes: &[(usize, usize)], cols: usize) {
        let mut rng = XorShift64::new(7 + shapes.len() as u64);
        let ws: Vec<Vec<u8>> = shapes
            .iter()
            .map(|&(rows, _)| weights(ty, rows, cols, packed, &mut rng))
            .collect();
        let xqs: Vec<Vec<u8>> = shapes
            .iter()
            .map(|&(_, n_tok)| {
                let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.unit() - 0.5).collect();
                let mut xq = Vec::new();
                if n_tok > 0 {
                    quantize_rows(ty, &x, n_tok, &mut xq);
                }
                xq
            })
            .collect();
        let view = |i: usize| WeightView {
            ty,
            cols,
            rows: shapes[i].0,
            bytes: &ws[i],
            packed,
        };
        // NaN everywhere first: a row no task writes would show.
        let mut outs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|&(rows, n_tok)| vec![f32::NAN; rows * n_tok])
            .collect();
        let mut jobs: Vec<LinearJob<'_>> = outs
            .iter_mut()
            .enumerate()
            .map(|(i, out)| LinearJob {
                w: view(i),
                xq: &xqs[i],
                n_tok: shapes[i].1,
                out,
            })
            .collect();
        linear_many(&mut jobs);
        drop(jobs);
        for (i, &(rows, n_tok)) in shapes.iter().enumerate() {
            let mut whole = vec![0f32; rows * n_tok];
            if n_tok > 0 {
                rows_times_tokens(&view(i), 0, rows, &xqs[i], None, n_tok, &mut whole);
            }
            let same = outs[i]
                .iter()
                .zip(&whole)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{ty} packed={packed}: job {i} ({rows} rows × {n_tok} tokens) differs"
            );
        }
    }

    #[test]
    fn prompt_products_match_whole_jobs() {
        // Token counts like a prompt's experts (0, 1, a few, many); enough work that the
        // larger jobs are cut into several tasks on any pool.
        let shapes = [(256, 17), (64, 1), (128, 0), (512, 40), (96, 3), (200, 9)];
        check_batch(GgmlType::Q4_0, true, &shapes, 512);
        check_batch(GgmlType::Q4_K, true, &shapes, 512);
        let odd = [(203, 17), (61, 1), (517, 33), (7, 5)];
        check_batch(GgmlType::Q8_0, false, &odd, 256);
        check_batch(GgmlType::Q4_0, false, &odd, 256);
    }

    /// Jobs reading one activation buffer (a token's gate and up, several weight types on
    /// the same rows, a job on the first token only) share summaries where they may and get
    /// their own where they must: each job still equals its product computed whole.
    #[test]
    fn jobs_sharing_activations_match_whole_jobs() {
        let mut rng = XorShift64::new(41);
        let (cols, n_tok) = (512, 6);
        let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.unit() - 0.5).collect();
        let mut xq8_0 = Vec::new();
        quantize_rows(GgmlType::Q4_0, &x, n_tok, &mut xq8_0);
        let mut xq8_k = Vec::new();
        quantize_rows(GgmlType::Q4_K, &x, n_tok, &mut xq8_k);
        let ab = xq8_0.len() / n_tok;
        // (type, rows, activations)
        let specs: [(GgmlType, usize, &[u8]); 6] = [
            (GgmlType::Q4_0, 256, &xq8_0),
            (GgmlType::Q4_0, 128, &xq8_0),
            (GgmlType::Q8_0, 64, &xq8_0),
            (GgmlType::Q4_0, 72, &xq8_0[..ab]),
            (GgmlType::Q4_K, 96, &xq8_k),
            (GgmlType::Q5_K, 64, &xq8_k),
        ];
        for tokens in [n_tok, 1] {
            let ws: Vec<Vec<u8>> = specs
                .iter()
                .map(|&(ty, rows, _)| weights(ty, rows, cols, true, &mut rng))
                .collect();
            let view = |i: usize| WeightView {
                ty: specs[i].0,
                cols,
                rows: specs[i].1,
                bytes: &ws[i],
                packed: true,
            };
            // Job i's activations: its buffer's first `tokens` rows (at most as many as it has).
            let acts = |i: usize| {
                let (ty, _, a) = specs[i];
                let per = ty.vec_dot_type().row_bytes(cols).unwrap();
                let n = tokens.min(a.len() / per);
                (&a[..per * n], n)
            };
            let mut outs: Vec<Vec<f32>> = (0..specs.len())
                .map(|i| vec![f32::NAN; specs[i].1 * acts(i).1])
                .collect();
            let mut jobs: Vec<LinearJob<'_>> = outs
                .iter_mut()
                .enumerate()
                .map(|(i, out)| {
                    let (xq, n_tok) = acts(i);
                    LinearJob {
                        w: view(i),
                        xq,
                        n_tok,
                        out,
                    }
                })
                .collect();
            linear_many(&mut jobs);
            drop(jobs);
            for i in 0..specs.len() {
                let (xq, n) = acts(i);
                let mut whole = vec![0f32; specs[i].1 * n];
                rows_times_tokens(&view(i), 0, specs[i].1, xq, None, n, &mut whole);
                let same = outs[i]
                    .iter()
                    .zip(&whole)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "job {i} ({:?}, {tokens} tokens) differs", specs[i].0);
            }
        }
    }

    #[test]
    fn decode_products_match_whole_jobs() {
        let shapes = [(1024, 1), (256, 1), (2048, 1)];
        check_batch(GgmlType::Q4_0, true, &shapes, 1024);
        check_batch(GgmlType::Q6_K, false, &[(1000, 1), (333, 1)], 1024);
    }
}
