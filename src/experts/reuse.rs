//! Estimated time to an expert's next use, for the `reuse` eviction policy.
//!
//! Decoding visits the MoE layers in a fixed cycle, so an expert's next use can only come when
//! its layer comes round again: `d` layer steps from now (1 for the next layer, L for the layer
//! just served). If its layer routes to it with probability `p` per visit, the expected wait is
//! `d + L · (1/p − 1)` steps. Evicting the largest estimate approximates Belady's MIN, which
//! evicts the expert whose next use is furthest away; LRU, by contrast, evicts the layer that
//! comes next. `p` is an exponential moving average of "routed at this visit", per expert, plus
//! a small bonus when the expert was routed at its layer's last visit.

/// Weight of the newest visit in the moving average.
const ALPHA: f32 = 0.1;

/// Added to the rate of an expert routed at its layer's last visit (consecutive tokens
/// often share experts).
const RECENT_BONUS: f32 = 0.1;

#[derive(Clone, Debug)]
pub struct ReuseEstimator {
    n_layers: usize,
    n_expert: usize,
    /// `[layer][expert]` use rate per visit of the layer.
    rate: Vec<f32>,
    /// `[layer][expert]` routed at the layer's last visit.
    last: Vec<bool>,
    /// The layer served last.
    current: usize,
}

impl ReuseEstimator {
    /// `k`: experts a token routes to per layer (the prior use rate is k / n_expert).
    pub fn new(n_layers: usize, n_expert: usize, k: usize) -> ReuseEstimator {
        let prior = (k.max(1) as f32 / n_expert.max(1) as f32).min(1.0);
        ReuseEstimator {
            n_layers: n_layers.max(1),
            n_expert: n_expert.max(1),
            rate: vec![prior; n_layers.max(1) * n_expert.max(1)],
            last: vec![false; n_layers.max(1) * n_expert.max(1)],
            current: 0,
        }
    }

    /// Records a visit of `layer` that routed to `experts`.
    pub fn visit(&mut self, layer: usize, experts: &[usize]) {
        self.record(layer, experts, false);
    }

    /// Records `experts` of `layer`; with `continued`, as more experts of the visit recorded
    /// last (a batch served in several calls) rather than as a new visit.
    pub fn record(&mut self, layer: usize, experts: &[usize], continued: bool) {
        if layer >= self.n_layers {
            return;
        }
        let same_visit = continued && layer == self.current;
        self.current = layer;
        let span = layer * self.n_expert..(layer + 1) * self.n_expert;
        let row = &mut self.rate[span.clone()];
        let last = &mut self.last[span];
        if !same_visit {
            for r in row.iter_mut() {
                *r *= 1.0 - ALPHA;
            }
            last.fill(false);
        }
        for &e in experts {
            if let Some(r) = row.get_mut(e) {
                *r = (*r + ALPHA).min(1.0);
                last[e] = true;
            }
        }
    }

    /// The layer recorded last.
    pub fn current_layer(&self) -> usize {
        self.current
    }

    /// Expected layer steps until (layer, expert) is used again.
    pub fn steps_to_next_use(&self, layer: usize, expert: usize) -> f32 {
        let l = self.n_layers;
        let d = (layer + l - self.current - 1) % l + 1;
        let i = layer * self.n_expert + expert;
        let recent = if self.last.get(i).copied().unwrap_or(false) {
            RECENT_BONUS
        } else {
            0.0
        };
        let p = (self.rate.get(i).copied().unwrap_or(0.0) + recent).clamp(1e-4, 1.0);
        d as f32 + l as f32 * (1.0 / p - 1.0)
    }
}
