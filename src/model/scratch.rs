//! Buffers of the forward pass that live in `State` between calls, so that once the first
//! steps have sized them a decode step allocates nothing (tested by `tests/no_alloc.rs`).

use crate::router::Choice;

/// Activations of one forward call, reused by the next.
#[derive(Default)]
pub(super) struct Scratch {
    /// Residual stream `[n][n_embd]`.
    pub x: Vec<f32>,
    /// Normalised residual stream.
    pub xn: Vec<f32>,
    /// Activations quantized for the weight type at hand.
    pub qbuf: Vec<u8>,
    pub attn: AttnScratch,
    pub moe: MoeScratch,
    pub predict: PredictScratch,
    /// A layer's FFN output.
    pub ffn_out: Vec<f32>,
    /// Shared expert (or dense FFN) gate, up and output.
    pub dense_gate: Vec<f32>,
    pub dense_up: Vec<f32>,
    pub shared_out: Vec<f32>,
    pub shared_gate: Vec<f32>,
    /// Final hidden rows and the logits of the last call.
    pub h: Vec<f32>,
    pub logits: Vec<f32>,
}

#[derive(Default)]
pub(super) struct AttnScratch {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Quantized activations for k and v when their type differs from q's.
    pub qk: Vec<u8>,
    pub qv: Vec<u8>,
    /// Per-head outputs `[n][n_head][head_dim_v]`.
    pub heads: Vec<f32>,
    /// A decode step's attention scores, one row of `n_ctx` per task.
    pub scores: Vec<f32>,
    /// After the output projection `[n][n_embd]`.
    pub out: Vec<f32>,
}

#[derive(Default)]
pub(super) struct MoeScratch {
    pub qbuf: Vec<u8>,
    pub router_logits: Vec<f32>,
    pub probs: Vec<f32>,
    pub choices: Vec<Choice>,
    /// Every token's choices back to back; token `t`'s are `routes[route_start[t]..route_start[t + 1]]`.
    pub routes: Vec<Choice>,
    pub route_start: Vec<usize>,
    /// Per expert: its (token, slot) pairs.
    pub by_expert: Vec<Vec<(usize, usize)>>,
    /// Experts with at least one token, ascending.
    pub used: Vec<usize>,
    /// The experts of the current ready group.
    pub group: Vec<usize>,
    /// Every token's row quantized once for the gate (and, if its activation type differs,
    /// the up) projection; each expert's rows are gathered from these.
    pub xq_tokens: Vec<u8>,
    pub xq_tokens_up: Vec<u8>,
    /// Where each group member's (token, slot) pairs start in the flat buffers below.
    pub starts: Vec<usize>,
    /// Per (token, slot): its pair in the current group, or `usize::MAX`.
    pub pair_of: Vec<usize>,
    /// Per (token, slot) pair of the group, member after member: gathered quantized
    /// activations, and the products.
    pub xq_gate: Vec<u8>,
    pub xq_up: Vec<u8>,
    pub xq_down: Vec<u8>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
    /// Weighted expert outputs per (token, slot), summed in slot order at the end.
    pub slot_out: Vec<f32>,
}

/// Speculative prefetch: the next layer's router applied to the current residual stream.
#[derive(Default)]
pub(super) struct PredictScratch {
    pub xn: Vec<f32>,
    pub qbuf: Vec<u8>,
    pub logits: Vec<f32>,
    pub probs: Vec<f32>,
    pub choices: Vec<Choice>,
    /// Predicted experts token by token, and where each token's start.
    pub experts: Vec<usize>,
    pub starts: Vec<usize>,
    /// The distinct predicted experts (what to load).
    pub union: Vec<usize>,
}

/// `v` as `n` zeros, keeping its allocation when it is large enough.
pub(super) fn zeroed<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.clear();
    v.resize(n, T::default());
    v
}

/// `v` resized to `n` entries without clearing what it held: for outputs that are written in
/// full before they are read (only growth is zero-filled, once).
pub(super) fn sized<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.resize(n, T::default());
    v
}

/// Makes `v` at least `n` long (new entries empty), keeping the buffers already there.
pub(super) fn at_least<T: Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize_with(n, T::default);
    }
}
