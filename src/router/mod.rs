//! The router: from a layer's router logits to the experts a token runs, and their weights.
//!
//! Default routing is llama.cpp's: softmax over all experts, the `expert_used_count` highest
//! probabilities, and for architectures that renormalise (llama/Mixtral, qwen3moe) the selected
//! weights divided by their sum (clamped below at 6.1e-5); olmoe and qwen2moe keep the raw
//! softmax probabilities. `expert_weights_scale` (when set and not 1) multiplies the result.
//! Caps (see `caps.rs`) may route fewer experts; they never change the default path when unset.

pub mod args;
pub mod caps;

pub use args::RouterArgs;
pub use caps::RouterCaps;

use smallvec::SmallVec;

/// Routing rules of one model.
#[derive(Clone, Debug)]
pub struct Router {
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub renormalize: bool,
    pub weights_scale: f32,
    pub caps: RouterCaps,
}

/// One routed expert of one token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub expert: usize,
    pub weight: f32,
}

impl Router {
    /// Routes one token: `logits` are the router outputs (`n_expert` values); `probs` is scratch
    /// of the same length; the choices replace `out`'s contents, highest probability first.
    pub fn route(
        &self,
        layer: usize,
        logits: &[f32],
        probs: &mut [f32],
        is_resident: &dyn Fn(usize) -> bool,
        out: &mut Vec<Choice>,
    ) {
        self.route_at(layer, None, logits, probs, is_resident, out)
    }

    /// As [`Router::route`], for the token at `pos` (position-specific overrides apply).
    pub fn route_at(
        &self,
        layer: usize,
        pos: Option<usize>,
        logits: &[f32],
        probs: &mut [f32],
        is_resident: &dyn Fn(usize) -> bool,
        out: &mut Vec<Choice>,
    ) {
        softmax_into(logits, probs, self.caps.mask_for(layer));
        out.clear();
        let k = self
            .caps
            .select_at(layer, pos, probs, self.n_expert_used, is_resident, out);
        debug_assert_eq!(k, out.len());
        if self.renormalize {
            let sum: f32 = out.iter().map(|c| c.weight).sum();
            let sum = sum.max(6.103_515_6e-5);
            for c in out.iter_mut() {
                c.weight /= sum;
            }
        }
        if self.weights_scale != 0.0 && self.weights_scale != 1.0 {
            for c in out.iter_mut() {
                c.weight *= self.weights_scale;
            }
        }
    }
}

/// Softmax of `logits` into `probs`, with masked experts at probability zero (−∞ logits).
pub fn softmax_into(logits: &[f32], probs: &mut [f32], mask: Option<&[bool]>) {
    let masked = |i: usize| mask.is_some_and(|m| m.get(i).copied().unwrap_or(false));
    let mut max = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if !masked(i) && l > max {
            max = l;
        }
    }
    let mut sum = 0f64;
    for (i, (&l, p)) in logits.iter().zip(probs.iter_mut()).enumerate() {
        *p = if masked(i) { 0.0 } else { (l - max).exp() };
        sum += *p as f64;
    }
    let inv = if sum > 0.0 { (1.0 / sum) as f32 } else { 0.0 };
    for p in probs.iter_mut() {
        *p *= inv;
    }
}

/// Indices of the `k` largest values, descending; ties go to the lower index. Experts already
/// in `out` and those `exclude` names are skipped.
pub fn top_k_into(probs: &[f32], k: usize, exclude: &dyn Fn(usize) -> bool, out: &mut Vec<Choice>) {
    // Who may still be picked, decided once per expert: asking `exclude` and scanning `out`
    // in every pass took half of a decode step's routing time (64 experts, top 8).
    let mut open: SmallVec<[bool; 512]> = (0..probs.len())
        .map(|i| !exclude(i) && !out.iter().any(|c| c.expert == i))
        .collect();
    for _ in 0..k {
        let mut best: Option<usize> = None;
        for (i, &p) in probs.iter().enumerate() {
            if open[i] && best.is_none_or(|b| p > probs[b]) {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        open[b] = false;
        out.push(Choice {
            expert: b,
            weight: probs[b],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experts(out: &[Choice]) -> Vec<usize> {
        out.iter().map(|c| c.expert).collect()
    }

    #[test]
    fn top_k_is_descending_with_ties_to_the_lower_index() {
        let probs = [0.1, 0.3, 0.05, 0.3, 0.25, 0.0];
        let mut out = Vec::new();
        top_k_into(&probs, 4, &|_| false, &mut out);
        assert_eq!(experts(&out), [1, 3, 4, 0]);
        assert_eq!(out[2].weight, 0.25);
    }

    #[test]
    fn top_k_skips_excluded_and_already_chosen_experts() {
        let probs = [0.1, 0.3, 0.05, 0.3, 0.25, 0.0];
        // Expert 3 is already in the list; expert 4 is excluded.
        let mut out = vec![Choice {
            expert: 3,
            weight: 0.3,
        }];
        top_k_into(&probs, 3, &|i| i == 4, &mut out);
        assert_eq!(experts(&out), [3, 1, 0, 2]);
        // Fewer candidates than asked for: every one, then stop.
        let mut out = Vec::new();
        top_k_into(&probs, 5, &|i| i % 2 == 0, &mut out);
        assert_eq!(experts(&out), [1, 3, 5]);
    }
}
