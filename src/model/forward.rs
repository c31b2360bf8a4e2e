//! The forward pass: a batch of tokens at consecutive positions through every layer.
//!
//! One path serves prompt processing and generation (a batch of one). In MoE layers the batch's
//! tokens are grouped by expert, so each routed expert's weights are read once per batch.

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::config::{Config, QkNorm, RopeStyle};
use super::linalg::{
    linear, linear_many, quantize_rows, rms_norm, rms_norm_inplace, rope, sigmoid, silu, LinearJob,
};
use super::weights::{DenseFfn, ExpertLayout, Ffn, LayerWeights, Matrix};
use super::Model;
use crate::experts::ExpertBytes;
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
    /// `[layer][pos][kv_dim]`.
    k_cache: Vec<Vec<f32>>,
    /// `[layer][pos][v_dim]`.
    v_cache: Vec<Vec<f32>>,
    qbuf: Vec<u8>,
}

impl State {
    pub fn new(cfg: &Config, n_ctx: usize) -> State {
        State {
            n_ctx,
            n_past: 0,
            k_cache: (0..cfg.n_layer)
                .map(|_| vec![0f32; n_ctx * cfg.kv_dim()])
                .collect(),
            v_cache: (0..cfg.n_layer)
                .map(|_| vec![0f32; n_ctx * cfg.v_dim()])
                .collect(),
            qbuf: Vec::new(),
        }
    }

    /// Forgets every position after `n` (the cache keeps its allocation).
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }

    /// Bytes the KV cache holds.
    pub fn kv_bytes(&self) -> u64 {
        self.k_cache
            .iter()
            .chain(&self.v_cache)
            .map(|c| c.len() as u64 * 4)
            .sum()
    }
}

/// Logits returned by a forward call: `rows` rows of `n_vocab`.
pub struct ForwardOutput {
    pub logits: Vec<f32>,
    pub rows: usize,
}

fn apply_linear(m: &Matrix, x: &[f32], n_tok: usize, qbuf: &mut Vec<u8>, out: &mut [f32]) {
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
        mut observer: Option<&mut dyn RouteObserver>,
    ) -> Result<ForwardOutput> {
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
        let e = cfg.n_embd;
        let mut x = vec![0f32; n * e];
        let emb = &self.weights.token_embd;
        let rb = emb.row_bytes();
        for (i, &t) in tokens.iter().enumerate() {
            let row = &emb.bytes()[t as usize * rb..(t as usize + 1) * rb];
            moe_edge_kernels::dequantize_row(emb.ty, row, &mut x[i * e..(i + 1) * e]);
        }
        let mut xn = vec![0f32; n * e];
        for (il, layer) in self.weights.layers.iter().enumerate() {
            for (src, dst) in x.chunks_exact(e).zip(xn.chunks_exact_mut(e)) {
                rms_norm(src, &layer.attn_norm, cfg.rms_eps, dst);
            }
            let attn = self.attention(il, layer, state, &xn, n);
            for (v, a) in x.iter_mut().zip(&attn) {
                *v += a;
            }
            for (src, dst) in x.chunks_exact(e).zip(xn.chunks_exact_mut(e)) {
                rms_norm(src, &layer.ffn_norm, cfg.rms_eps, dst);
            }
            let ffn_out = match &layer.ffn {
                Ffn::Dense(d) => dense_ffn(d, &xn, n, &mut state.qbuf),
                Ffn::Moe {
                    router,
                    experts,
                    shared,
                } => {
                    if self.prefetcher.enabled {
                        self.predict_next_layer(il, &x, n);
                    }
                    let mut out =
                        self.moe_ffn(il, router, experts, &xn, n, state.n_past, &mut observer)?;
                    if let Some(sh) = shared {
                        let mut s = dense_ffn(&sh.ffn, &xn, n, &mut state.qbuf);
                        if let Some(g) = &sh.gate_inp {
                            let mut gate = vec![0f32; n];
                            apply_linear(g, &xn, n, &mut state.qbuf, &mut gate);
                            for (row, &gv) in s.chunks_exact_mut(e).zip(&gate) {
                                let w = sigmoid(gv);
                                row.iter_mut().for_each(|v| *v *= w);
                            }
                        }
                        for (o, v) in out.iter_mut().zip(&s) {
                            *o += v;
                        }
                    }
                    out
                }
            };
            for (v, f) in x.iter_mut().zip(&ffn_out) {
                *v += f;
            }
        }
        state.n_past += n;

        let first = match wanted {
            LogitsWanted::None => {
                return Ok(ForwardOutput {
                    logits: Vec::new(),
                    rows: 0,
                })
            }
            LogitsWanted::Last => n - 1,
            LogitsWanted::All => 0,
        };
        let rows = n - first;
        let mut h = x[first * e..].to_vec();
        for row in h.chunks_exact_mut(e) {
            rms_norm_inplace(row, &self.weights.output_norm, cfg.rms_eps);
        }
        let mut logits = vec![0f32; rows * cfg.n_vocab];
        apply_linear(&self.weights.output, &h, rows, &mut state.qbuf, &mut logits);
        Ok(ForwardOutput { logits, rows })
    }

    fn attention(
        &self,
        il: usize,
        layer: &LayerWeights,
        state: &mut State,
        xn: &[f32],
        n: usize,
    ) -> Vec<f32> {
        let cfg = &self.cfg;
        let (qd, kd, vd, hd, hdv) = (
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.v_dim(),
            cfg.head_dim,
            cfg.head_dim_v,
        );
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kd];
        let mut v = vec![0f32; n * vd];
        let qbuf = &mut state.qbuf;
        // q, k and v in one parallel region; k and v usually share q's activation type, and
        // then its quantized activations.
        let vdt = layer.wq.ty.vec_dot_type();
        quantize_rows(layer.wq.ty, xn, n, qbuf);
        let mut qk = Vec::new();
        let mut qv = Vec::new();
        if layer.wk.ty.vec_dot_type() != vdt {
            quantize_rows(layer.wk.ty, xn, n, &mut qk);
        }
        if layer.wv.ty.vec_dot_type() != vdt {
            quantize_rows(layer.wv.ty, xn, n, &mut qv);
        }
        let xk: &[u8] = if qk.is_empty() { qbuf } else { &qk };
        let xv: &[u8] = if qv.is_empty() { qbuf } else { &qv };
        linear_many(&mut [
            LinearJob {
                w: layer.wq.view(),
                xq: qbuf,
                n_tok: n,
                out: &mut q,
            },
            LinearJob {
                w: layer.wk.view(),
                xq: xk,
                n_tok: n,
                out: &mut k,
            },
            LinearJob {
                w: layer.wv.view(),
                xq: xv,
                n_tok: n,
                out: &mut v,
            },
        ]);
        add_bias(&mut q, &layer.bq);
        add_bias(&mut k, &layer.bk);
        add_bias(&mut v, &layer.bv);
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
        for t in 0..n {
            for h in q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                rope(h, p0 + t, cfg.rope_dims, cfg.rope_base, neox);
            }
            for h in k[t * kd..(t + 1) * kd].chunks_exact_mut(hd) {
                rope(h, p0 + t, cfg.rope_dims, cfg.rope_base, neox);
            }
        }
        state.k_cache[il][p0 * kd..(p0 + n) * kd].copy_from_slice(&k);
        state.v_cache[il][p0 * vd..(p0 + n) * vd].copy_from_slice(&v);

        let kc = &state.k_cache[il];
        let vc = &state.v_cache[il];
        let group = cfg.n_head / cfg.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; n * cfg.n_head * hdv];
        out.par_chunks_mut(hdv).enumerate().for_each(|(i, o)| {
            let (t, h) = (i / cfg.n_head, i % cfg.n_head);
            let kvh = h / group;
            let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
            let n_keys = p0 + t + 1;
            SCORES.with(|s| {
                let mut scores = s.borrow_mut();
                scores.resize(n_keys, 0.0);
                moe_edge_kernels::dot_rows(qh, &kc[kvh * hd..], kd, scale, &mut scores);
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut sum = 0f64;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s as f64;
                }
                let inv = (1.0 / sum) as f32;
                scores.iter_mut().for_each(|s| *s *= inv);
                moe_edge_kernels::weighted_rows(&scores, &vc[kvh * hdv..], vd, o);
            });
        });
        let mut res = vec![0f32; n * cfg.n_embd];
        apply_linear(&layer.wo, &out, n, &mut state.qbuf, &mut res);
        add_bias(&mut res, &layer.bo);
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn moe_ffn(
        &self,
        il: usize,
        router: &Matrix,
        layout: &ExpertLayout,
        xn: &[f32],
        n: usize,
        pos0: usize,
        observer: &mut Option<&mut dyn RouteObserver>,
    ) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let e = cfg.n_embd;
        let ne = cfg.n_expert;
        let mut qbuf = Vec::new();
        let mut logits = vec![0f32; n * ne];
        apply_linear(router, xn, n, &mut qbuf, &mut logits);

        // Route every token; group (token, slot) pairs by expert.
        let mut probs = vec![0f32; ne];
        let mut choices = Vec::with_capacity(cfg.n_expert_used);
        let mut routes: Vec<Vec<Choice>> = Vec::with_capacity(n);
        let store = &self.store;
        let resident = |x: usize| store.is_resident(il, x);
        let predicted = self.prefetcher.take_prediction(il);
        for t in 0..n {
            self.router.route_at(
                il,
                Some(pos0 + t),
                &logits[t * ne..(t + 1) * ne],
                &mut probs,
                &resident,
                &mut choices,
            );
            if let Some(p) = &predicted {
                self.prefetcher.score(&p[t], &choices);
            }
            if let Some(obs) = observer.as_deref_mut() {
                obs.observe(il, pos0 + t, &choices);
            }
            routes.push(choices.clone());
        }
        let max_slots = routes.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut by_expert: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ne];
        for (t, r) in routes.iter().enumerate() {
            for (slot, c) in r.iter().enumerate() {
                by_expert[c.expert].push((t, slot));
            }
        }
        let used: Vec<usize> = (0..ne).filter(|&x| !by_expert[x].is_empty()).collect();

        // Per (token, slot) outputs, summed in slot order afterwards like llama.cpp.
        let mut slot_out = vec![0f32; n * max_slots * e];
        let ff = layout.gate.rows;
        for chunk in used.chunks(self.store.max_batch().max(1)) {
            // Resident experts are computed while the missing ones load; the results land in
            // per-(token, slot) rows summed in slot order below, so the order does not matter.
            self.store.with_experts_as_ready(
                il,
                chunk,
                &mut |ready, experts: &[ExpertBytes<'_>]| {
                    let group: Vec<usize> = ready.iter().map(|&i| chunk[i]).collect();
                    let group = &group[..];
                    // Activations of each expert's tokens, quantized for gate and up.
                    let mut xq_gate = vec![Vec::new(); group.len()];
                    let mut xq_up = vec![Vec::new(); group.len()];
                    let same_act = layout.up.ty.vec_dot_type() == layout.gate.ty.vec_dot_type();
                    let mut xs = Vec::new();
                    for (j, &ex) in group.iter().enumerate() {
                        let toks = &by_expert[ex];
                        xs.clear();
                        for &(t, _) in toks {
                            xs.extend_from_slice(&xn[t * e..(t + 1) * e]);
                        }
                        quantize_rows(layout.gate.ty, &xs, toks.len(), &mut xq_gate[j]);
                        if !same_act {
                            quantize_rows(layout.up.ty, &xs, toks.len(), &mut xq_up[j]);
                        }
                    }
                    let m_of = |j: usize| by_expert[group[j]].len();
                    let mut g: Vec<Vec<f32>> =
                        (0..group.len()).map(|j| vec![0f32; m_of(j) * ff]).collect();
                    let mut u = g.clone();
                    // Gate and up of every expert in the group: one parallel region.
                    let mut jobs = Vec::with_capacity(2 * group.len());
                    for (j, (gj, uj)) in g.iter_mut().zip(u.iter_mut()).enumerate() {
                        let xu = if same_act { &xq_gate[j] } else { &xq_up[j] };
                        jobs.push(LinearJob {
                            w: layout.gate.view(experts[j].gate),
                            xq: &xq_gate[j],
                            n_tok: m_of(j),
                            out: gj,
                        });
                        jobs.push(LinearJob {
                            w: layout.up.view(experts[j].up),
                            xq: xu,
                            n_tok: m_of(j),
                            out: uj,
                        });
                    }
                    linear_many(&mut jobs);
                    drop(jobs);
                    let mut xq_down = vec![Vec::new(); group.len()];
                    for j in 0..group.len() {
                        for (a, b) in g[j].iter_mut().zip(&u[j]) {
                            *a = silu(*a) * b;
                        }
                        quantize_rows(layout.down.ty, &g[j], m_of(j), &mut xq_down[j]);
                    }
                    let mut d: Vec<Vec<f32>> =
                        (0..group.len()).map(|j| vec![0f32; m_of(j) * e]).collect();
                    let mut jobs: Vec<LinearJob<'_>> = d
                        .iter_mut()
                        .enumerate()
                        .map(|(j, dj)| LinearJob {
                            w: layout.down.view(experts[j].down),
                            xq: &xq_down[j],
                            n_tok: m_of(j),
                            out: dj,
                        })
                        .collect();
                    linear_many(&mut jobs);
                    drop(jobs);
                    for (j, &ex) in group.iter().enumerate() {
                        for (i, &(t, slot)) in by_expert[ex].iter().enumerate() {
                            let w = routes[t][slot].weight;
                            let dst = &mut slot_out
                                [(t * max_slots + slot) * e..(t * max_slots + slot + 1) * e];
                            for (o, &v) in dst.iter_mut().zip(&d[j][i * e..(i + 1) * e]) {
                                *o = v * w;
                            }
                        }
                    }
                    Ok(())
                },
            )?;
        }
        let mut out = vec![0f32; n * e];
        for t in 0..n {
            let o = &mut out[t * e..(t + 1) * e];
            for slot in 0..routes[t].len() {
                let s = &slot_out[(t * max_slots + slot) * e..(t * max_slots + slot + 1) * e];
                for (a, &b) in o.iter_mut().zip(s) {
                    *a += b;
                }
            }
        }
        Ok(out)
    }
}

impl Model {
    /// Speculative prefetch: apply layer `il + 1`'s router to the residual stream as it enters
    /// layer `il`'s FFN, and ask the store to load the predicted experts in the background
    /// while layer `il` computes.
    fn predict_next_layer(&self, il: usize, x: &[f32], n: usize) {
        let Some(next) = self.weights.layers.get(il + 1) else {
            return;
        };
        let Ffn::Moe { router, .. } = &next.ffn else {
            return;
        };
        let (e, ne) = (self.cfg.n_embd, self.cfg.n_expert);
        let mut xn = vec![0f32; n * e];
        for (src, dst) in x.chunks_exact(e).zip(xn.chunks_exact_mut(e)) {
            rms_norm(src, &next.ffn_norm, self.cfg.rms_eps, dst);
        }
        let mut logits = vec![0f32; n * ne];
        let mut qbuf = Vec::new();
        apply_linear(router, &xn, n, &mut qbuf, &mut logits);
        let mut probs = vec![0f32; ne];
        let mut choices = Vec::new();
        let mut per_token = Vec::with_capacity(n);
        let mut union: Vec<usize> = Vec::new();
        for t in 0..n {
            self.router.route(
                il + 1,
                &logits[t * ne..(t + 1) * ne],
                &mut probs,
                &|_| true,
                &mut choices,
            );
            let ids: Vec<usize> = choices.iter().map(|c| c.expert).collect();
            for &i in &ids {
                if !union.contains(&i) {
                    union.push(i);
                }
            }
            per_token.push(ids);
        }
        self.store.prefetch(il + 1, &union);
        self.prefetcher.set_prediction(il + 1, per_token);
    }
}

thread_local! {
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn dense_ffn(d: &DenseFfn, xn: &[f32], n: usize, qbuf: &mut Vec<u8>) -> Vec<f32> {
    let ff = d.gate.rows;
    let e = d.down.rows;
    let mut g = vec![0f32; n * ff];
    let mut u = vec![0f32; n * ff];
    apply_linear(&d.gate, xn, n, qbuf, &mut g);
    apply_linear(&d.up, xn, n, qbuf, &mut u);
    for (a, b) in g.iter_mut().zip(&u) {
        *a = silu(*a) * b;
    }
    let mut out = vec![0f32; n * e];
    apply_linear(&d.down, &g, n, qbuf, &mut out);
    out
}
