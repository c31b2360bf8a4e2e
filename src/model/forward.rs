//! The forward pass: a batch of tokens at consecutive positions through every layer.
//!
//! One path serves prompt processing and generation (a batch of one). In MoE layers the batch's
//! tokens are grouped by expert, so each routed expert's weights are read once per batch.

use anyhow::{bail, Result};
use rayon::prelude::*;
use smallvec::SmallVec;
use std::sync::Mutex;

use super::config::{Config, QkNorm, RopeStyle};
use super::kv_cache::{k_rotation_size, rotate_hadamard, KvCache, KvType, KvTypes};
use super::linalg::{
    linear, linear_many, per_row, quantize_rows, rms_norm, rms_norm_inplace, rope_heads, sigmoid,
    LinearJob,
};
use super::scratch::{sized, zeroed, AttnScratch, PredictScratch, Scratch};
use super::weights::{DenseFfn, Ffn, LayerWeights, Matrix};
use super::Model;
use crate::router::Choice;

/// Which positions' logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    None,
    Last,
    All,
}

/// Sees every routing decision (traces, statistics). Called once per token and MoE layer.
pub trait RouteObserver {
    fn observe(&mut self, layer: usize, position: usize, choices: &[Choice]);
}

/// Activations and KV cache of one sequence. Allocated once per context size.
pub struct State {
    pub n_ctx: usize,
    /// Number of positions already in the cache.
    pub n_past: usize,
    kv: KvCache,
    scratch: Scratch,
    /// The pool's threads have their per-thread buffers sized for this state's context.
    threads_ready: bool,
}

impl State {
    pub fn new(cfg: &Config, n_ctx: usize, kv_types: KvTypes) -> State {
        State {
            n_ctx,
            n_past: 0,
            kv: KvCache::new(cfg, n_ctx, kv_types),
            scratch: Scratch::default(),
            threads_ready: false,
        }
    }

    /// Logits left by the last [`Model::forward_in_place`] call (`rows × n_vocab`).
    pub fn logits(&self) -> &[f32] {
        &self.scratch.logits
    }

    /// The same logits, mutable (samplers apply penalties in place).
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.scratch.logits
    }

    /// Forgets every position after `n` (the cache keeps its allocation).
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }

    /// Bytes the KV cache holds.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.bytes()
    }

    /// Element types of the KV cache.
    pub fn kv_types(&self) -> KvTypes {
        self.kv.types()
    }
}

/// Logits returned by a forward call: `rows` rows of `n_vocab`.
pub struct ForwardOutput {
    pub logits: Vec<f32>,
    pub rows: usize,
}

pub(super) fn apply_linear(
    m: &Matrix,
    x: &[f32],
    n_tok: usize,
    qbuf: &mut Vec<u8>,
    out: &mut [f32],
) {
    quantize_rows(m.ty, x, n_tok, qbuf);
    linear(m.view(), qbuf, n_tok, out);
}

fn add_bias(x: &mut [f32], bias: &Option<Vec<f32>>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
}

impl Model {
    /// Runs `tokens` at positions `state.n_past..` and appends them to the cache.
    pub fn forward(
        &self,
        state: &mut State,
        tokens: &[u32],
        wanted: LogitsWanted,
        observer: Option<&mut dyn RouteObserver>,
    ) -> Result<ForwardOutput> {
        let rows = self.forward_in_place(state, tokens, wanted, observer)?;
        Ok(ForwardOutput {
            logits: state.logits().to_vec(),
            rows,
        })
    }

    /// As [`Model::forward`], leaving the logits in `state` ([`State::logits`]) and returning
    /// their row count. It reuses `state`'s buffers, so once they are sized a decode step
    /// allocates nothing.
    pub fn forward_in_place(
        &self,
        state: &mut State,
        tokens: &[u32],
        wanted: LogitsWanted,
        observer: Option<&mut dyn RouteObserver>,
    ) -> Result<usize> {
        let cfg = &self.cfg;
        let n = tokens.len();
        if n == 0 {
            bail!("no tokens to evaluate");
        }
        if state.n_past + n > state.n_ctx {
            bail!(
                "the context is full: {} tokens already, {} more would exceed the context size {} (raise -c)",
                state.n_past,
                n,
                state.n_ctx
            );
        }
        for &t in tokens {
            if t as usize >= cfg.n_vocab {
                bail!(
                    "token id {t} is outside the vocabulary ({} tokens)",
                    cfg.n_vocab
                );
            }
        }
        if !state.threads_ready {
            // Once per state: every pool thread sizes its attention scores and activation
            // summaries now, so a thread that first picks up such work mid-generation does not
            // allocate then.
            let (n_ctx, blocks) = (state.n_ctx, self.widest_input().div_ceil(32));
            rayon::broadcast(|_| {
                SCORES.with(|s| {
                    let mut s = s.borrow_mut();
                    let len = s.len();
                    s.reserve(n_ctx.saturating_sub(len));
                });
                moe_edge_kernels::reserve_thread_scratch(blocks);
            });
            super::pool::on_each_helper(&|| moe_edge_kernels::reserve_thread_scratch(blocks));
            state.threads_ready = true;
        }
        // The buffers leave `state` for the call (the attention needs `state` too) and go back
        // whatever the outcome.
        let mut s = std::mem::take(&mut state.scratch);
        let result = self.forward_layers(state, &mut s, tokens, wanted, observer);
        state.scratch = s;
        result
    }

    /// The widest input of any matrix (activation columns of one token).
    fn widest_input(&self) -> usize {
        let mut w = self.cfg.n_embd.max(self.cfg.n_head * self.cfg.head_dim_v);
        for l in &self.weights.layers {
            match &l.ffn {
                Ffn::Dense(d) => w = w.max(d.down.cols),
                Ffn::Moe {
                    experts, shared, ..
                } => {
                    w = w.max(experts.down.cols);
                    if let Some(sh) = shared {
                        w = w.max(sh.ffn.down.cols);
                    }
                }
            }
        }
        w
    }

    fn forward_layers(
        &self,
        state: &mut State,
        s: &mut Scratch,
        tokens: &[u32],
        wanted: LogitsWanted,
        mut observer: Option<&mut dyn RouteObserver>,
    ) -> Result<usize> {
        let cfg = &self.cfg;
        let n = tokens.len();
        let e = cfg.n_embd;
        let x = zeroed(&mut s.x, n * e);
        let emb = &self.weights.token_embd;
        let rb = emb.row_bytes();
        for (i, &t) in tokens.iter().enumerate() {
            let row = &emb.bytes()[t as usize * rb..(t as usize + 1) * rb];
            moe_edge_kernels::dequantize_row(emb.ty, row, &mut x[i * e..(i + 1) * e]);
        }
        zeroed(&mut s.xn, n * e);
        for (il, layer) in self.weights.layers.iter().enumerate() {
            let x = &s.x;
            per_row(&mut s.xn, e, |t, dst| {
                rms_norm(&x[t * e..(t + 1) * e], &layer.attn_norm, cfg.rms_eps, dst)
            });
            self.attention(il, layer, state, &s.xn, &mut s.qbuf, &mut s.attn, n);
            let attn = &s.attn.out;
            per_row(&mut s.x, e, |t, row| {
                for (v, a) in row.iter_mut().zip(&attn[t * e..(t + 1) * e]) {
                    *v += a;
                }
            });
            let x = &s.x;
            per_row(&mut s.xn, e, |t, dst| {
                rms_norm(&x[t * e..(t + 1) * e], &layer.ffn_norm, cfg.rms_eps, dst)
            });
            match &layer.ffn {
                Ffn::Dense(d) => dense_ffn(
                    d,
                    &s.xn,
                    n,
                    &mut s.qbuf,
                    [&mut s.dense_gate, &mut s.dense_up],
                    &mut s.ffn_out,
                ),
                Ffn::Moe {
                    router,
                    experts,
                    shared,
                } => {
                    if self.prefetcher.enabled {
                        self.predict_next_layer(il, &s.x, n, &mut s.predict);
                    }
                    self.moe_ffn(
                        il,
                        router,
                        experts,
                        &s.xn,
                        n,
                        state.n_past,
                        &mut observer,
                        &mut s.moe,
                        &mut s.ffn_out,
                    )?;
                    if let Some(sh) = shared {
                        dense_ffn(
                            &sh.ffn,
                            &s.xn,
                            n,
                            &mut s.qbuf,
                            [&mut s.dense_gate, &mut s.dense_up],
                            &mut s.shared_out,
                        );
                        if let Some(g) = &sh.gate_inp {
                            let gate = zeroed(&mut s.shared_gate, n);
                            apply_linear(g, &s.xn, n, &mut s.qbuf, gate);
                            for (row, &gv) in s.shared_out.chunks_exact_mut(e).zip(gate.iter()) {
                                let w = sigmoid(gv);
                                row.iter_mut().for_each(|v| *v *= w);
                            }
                        }
                        for (o, v) in s.ffn_out.iter_mut().zip(&s.shared_out) {
                            *o += v;
                        }
                    }
                }
            }
            let ffn_out = &s.ffn_out;
            per_row(&mut s.x, e, |t, row| {
                for (v, f) in row.iter_mut().zip(&ffn_out[t * e..(t + 1) * e]) {
                    *v += f;
                }
            });
        }
        state.n_past += n;

        let first = match wanted {
            LogitsWanted::None => {
                s.logits.clear();
                return Ok(0);
            }
            LogitsWanted::Last => n - 1,
            LogitsWanted::All => 0,
        };
        let rows = n - first;
        s.h.clear();
        s.h.extend_from_slice(&s.x[first * e..]);
        for row in s.h.chunks_exact_mut(e) {
            rms_norm_inplace(row, &self.weights.output_norm, cfg.rms_eps);
        }
        let logits = zeroed(&mut s.logits, rows * cfg.n_vocab);
        apply_linear(&self.weights.output, &s.h, rows, &mut s.qbuf, logits);
        Ok(rows)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        il: usize,
        layer: &LayerWeights,
        state: &mut State,
        xn: &[f32],
        qbuf: &mut Vec<u8>,
        a: &mut AttnScratch,
        n: usize,
    ) {
        let cfg = &self.cfg;
        let (qd, kd, vd, hd, hdv) = (
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.v_dim(),
            cfg.head_dim,
            cfg.head_dim_v,
        );
        let AttnScratch {
            q,
            k,
            v,
            qk,
            qv,
            heads,
            scores,
            out,
        } = a;
        let (q, k, v) = (sized(q, n * qd), sized(k, n * kd), sized(v, n * vd));
        // q, k and v in one parallel region; k and v usually share q's activation type, and
        // then its quantized activations.
        let vdt = layer.wq.ty.vec_dot_type();
        quantize_rows(layer.wq.ty, xn, n, qbuf);
        let k_own = layer.wk.ty.vec_dot_type() != vdt;
        let v_own = layer.wv.ty.vec_dot_type() != vdt;
        if k_own {
            quantize_rows(layer.wk.ty, xn, n, qk);
        }
        if v_own {
            quantize_rows(layer.wv.ty, xn, n, qv);
        }
        let xk: &[u8] = if k_own { qk } else { qbuf };
        let xv: &[u8] = if v_own { qv } else { qbuf };
        linear_many(&mut [
            LinearJob {
                w: layer.wq.view(),
                xq: qbuf,
                n_tok: n,
                out: q,
            },
            LinearJob {
                w: layer.wk.view(),
                xq: xk,
                n_tok: n,
                out: k,
            },
            LinearJob {
                w: layer.wv.view(),
                xq: xv,
                n_tok: n,
                out: v,
            },
        ]);
        if n == 1 {
            state.kv.prefetch_row(il, state.n_past);
        }
        add_bias(q, &layer.bq);
        add_bias(k, &layer.bk);
        add_bias(v, &layer.bv);
        match cfg.arch.qk_norm() {
            QkNorm::None => {}
            QkNorm::PerHead => {
                let (qn, kn) = (
                    layer.q_norm.as_ref().unwrap(),
                    layer.k_norm.as_ref().unwrap(),
                );
                q.chunks_exact_mut(hd)
                    .for_each(|h| rms_norm_inplace(h, qn, cfg.rms_eps));
                k.chunks_exact_mut(hd)
                    .for_each(|h| rms_norm_inplace(h, kn, cfg.rms_eps));
            }
            QkNorm::Full => {
                let (qn, kn) = (
                    layer.q_norm.as_ref().unwrap(),
                    layer.k_norm.as_ref().unwrap(),
                );
                q.chunks_exact_mut(qd)
                    .for_each(|h| rms_norm_inplace(h, qn, cfg.rms_eps));
                k.chunks_exact_mut(kd)
                    .for_each(|h| rms_norm_inplace(h, kn, cfg.rms_eps));
            }
        }
        let neox = cfg.arch.rope_style() == RopeStyle::Neox;
        let p0 = state.n_past;
        for (rows, width) in [(&mut *q, qd), (&mut *k, kd)] {
            per_row(rows, width, |t, row| {
                rope_heads(row, hd, p0 + t, cfg.rope_dims, cfg.rope_base, neox);
            });
        }
        if let Some(n_rot) = k_rotation_size(state.kv.types(), hd) {
            rotate_hadamard(q, n_rot);
            rotate_hadamard(k, n_rot);
        }
        state.kv.store(il, p0, k, v);
        // As llama.cpp: against f16 keys the queries are rounded to f16 too, and against f16
        // values so are the attention weights (its matrix products convert the f32 operand to
        // the f16 one's type). Without it, logits on quantized fixtures drift to a cosine of
        // 0.99994 from llama.cpp's (tests/logits_parity.rs, `.kv_f16` fixtures).
        let kv_types = state.kv.types();
        if kv_types.k == KvType::F16 {
            moe_edge_kernels::round_to_f16(q);
        }
        let round_weights = kv_types.v == KvType::F16;
        let n_ctx = state.n_ctx;
        let group = cfg.n_head / cfg.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let heads = zeroed(heads, n * cfg.n_head * hdv);
        let head = AttnHead {
            q,
            kv: &state.kv,
            il,
            qd,
            hd,
            n_head: cfg.n_head,
            group,
            scale,
            p0,
            round_weights,
        };
        if n == 1 {
            // Decode: on the spinning pool, a few heads per task, each task with its own row
            // of `scores` (sized once per state).
            let tasks = cfg.n_head.min(DECODE_ATTN_TASKS);
            let per = cfg.n_head.div_ceil(tasks);
            let scores = sized(scores, tasks * n_ctx);
            let cells: SmallVec<[HeadTask<'_>; DECODE_ATTN_TASKS]> = heads
                .chunks_mut(per * hdv)
                .zip(scores.chunks_exact_mut(n_ctx))
                .map(Mutex::new)
                .collect();
            let run = |task: usize| {
                let mut cell = cells[task].lock().expect("a task runs once");
                let (out, scores) = &mut *cell;
                for (j, o) in out.chunks_exact_mut(hdv).enumerate() {
                    head.attend(task * per + j, scores, o);
                }
            };
            if !super::pool::try_run(cells.len(), &run) {
                (0..cells.len()).for_each(run);
            }
        } else {
            heads.par_chunks_mut(hdv).enumerate().for_each(|(i, o)| {
                SCORES.with(|s| {
                    let mut scores = s.borrow_mut();
                    if scores.capacity() < n_ctx {
                        // Once per thread and context size, not per token.
                        let len = scores.len();
                        scores.reserve(n_ctx - len);
                    }
                    let n_keys = p0 + i / cfg.n_head + 1;
                    scores.resize(n_keys, 0.0);
                    head.attend(i, &mut scores, o);
                });
            });
        }
        let out = zeroed(out, n * cfg.n_embd);
        apply_linear(&layer.wo, heads, n, qbuf, out);
        add_bias(out, &layer.bo);
    }
}

impl Model {
    /// Speculative prefetch: apply layer `il + 1`'s router to the residual stream as it enters
    /// layer `il`'s FFN, and ask the store to load the predicted experts in the background
    /// while layer `il` computes.
    fn predict_next_layer(&self, il: usize, x: &[f32], n: usize, p: &mut PredictScratch) {
        let Some(next) = self.weights.layers.get(il + 1) else {
            return;
        };
        let Ffn::Moe { router, .. } = &next.ffn else {
            return;
        };
        let (e, ne) = (self.cfg.n_embd, self.cfg.n_expert);
        let xn = zeroed(&mut p.xn, n * e);
        for (src, dst) in x.chunks_exact(e).zip(xn.chunks_exact_mut(e)) {
            rms_norm(src, &next.ffn_norm, self.cfg.rms_eps, dst);
        }
        let logits = zeroed(&mut p.logits, n * ne);
        apply_linear(router, &p.xn, n, &mut p.qbuf, logits);
        let probs = zeroed(&mut p.probs, ne);
        p.experts.clear();
        p.starts.clear();
        p.starts.push(0);
        p.union.clear();
        for t in 0..n {
            self.router.route(
                il + 1,
                &logits[t * ne..(t + 1) * ne],
                probs,
                &|_| true,
                &mut p.choices,
            );
            for c in &p.choices {
                p.experts.push(c.expert);
                if !p.union.contains(&c.expert) {
                    p.union.push(c.expert);
                }
            }
            p.starts.push(p.experts.len());
        }
        self.store.prefetch(il + 1, &p.union);
        self.prefetcher
            .set_prediction(il + 1, &p.experts, &p.starts);
    }
}

/// Tasks of a decode step's attention (at most; fewer for fewer heads).
const DECODE_ATTN_TASKS: usize = 16;

/// A decode attention task: its heads' outputs and its scores row.
type HeadTask<'a> = Mutex<(&'a mut [f32], &'a mut [f32])>;

/// What one head's attention over the cache needs (one layer, tokens at positions `p0..`).
struct AttnHead<'a> {
    q: &'a [f32],
    kv: &'a KvCache,
    il: usize,
    qd: usize,
    hd: usize,
    n_head: usize,
    group: usize,
    scale: f32,
    p0: usize,
    /// Round the softmax weights to f16 before the weighted sum of values.
    round_weights: bool,
}

impl AttnHead<'_> {
    /// Head `i % n_head` of token `i / n_head` into `o`; `scores` holds at least its keys.
    fn attend(&self, i: usize, scores: &mut [f32], o: &mut [f32]) {
        let (t, h) = (i / self.n_head, i % self.n_head);
        let kvh = h / self.group;
        let hd = self.hd;
        let qh = &self.q[t * self.qd + h * hd..t * self.qd + (h + 1) * hd];
        let n_keys = self.p0 + t + 1;
        let scores = &mut scores[..n_keys];
        let keys = self.kv.keys(self.il, kvh, n_keys);
        keys.scores(qh, self.scale, scores);
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0f64;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s as f64;
        }
        let inv = (1.0 / sum) as f32;
        scores.iter_mut().for_each(|s| *s *= inv);
        if self.round_weights {
            moe_edge_kernels::round_to_f16(scores);
        }
        self.kv.values(self.il, kvh, n_keys).weighted_sum(scores, o);
    }
}

thread_local! {
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A SwiGLU FFN into `out`; `tmp` holds the gate and up products.
fn dense_ffn(
    d: &DenseFfn,
    xn: &[f32],
    n: usize,
    qbuf: &mut Vec<u8>,
    tmp: [&mut Vec<f32>; 2],
    out: &mut Vec<f32>,
) {
    let ff = d.gate.rows;
    let e = d.down.rows;
    let [g, u] = tmp;
    let g = zeroed(g, n * ff);
    let u = zeroed(u, n * ff);
    apply_linear(&d.gate, xn, n, qbuf, g);
    apply_linear(&d.up, xn, n, qbuf, u);
    moe_edge_kernels::swiglu(g, u);
    let out = zeroed(out, n * e);
    apply_linear(&d.down, g, n, qbuf, out);
}
