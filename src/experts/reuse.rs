//! Estimated time to an expert's next use, for the `reuse` eviction policy.
//!
//! Decoding visits the MoE layers in a fixed cycle, so an expert's next use can only come when
//! its layer comes round again: `d` layer steps from now (1 for the next layer, L for the layer
//! just served). If its layer routes to it with probability `p` per visit, the expected wait is
//! `d + L · (1/p − 1)` steps. Evicting the largest estimate approximates Belady's MIN, which
//! evicts the expert whose next use is furthest away; LRU, by contrast, evicts the layer that
//! comes next.
//!
//! `p` mixes two estimates: an exponential moving average of "routed at this visit", per expert,
//! and a first-order Markov estimate — how often, after the experts the layer routed to at its
//! last visit, this expert came next (per-layer expert-to-expert transition counts). Consecutive
//! tokens often share or trade experts in a pattern; the transition counts learn it online.

/// Weight of the newest visit in the moving average.
const ALPHA: f32 = 0.1;

/// Added to the moving average of an expert routed at its layer's last visit (consecutive
/// tokens often share experts).
const RECENT_BONUS: f32 = 0.1;

/// Weight of the Markov estimate in `p` (the rest is the moving average). Chosen on the traces
/// of BENCHMARKS.md: 0.2 gains 1–1.5 points of Belady's hit rate on the bundled model's natural
/// text at 25–50 % capacity and changes the random-weight synthetic model's by at most 0.001
/// (its routing has no pattern to learn).
const MARKOV_WEIGHT: f32 = 0.2;

/// A transition row is halved when its sum passes this many visits' worth, so the counts keep
/// following the recent text.
const TRANSITION_MEMORY: f32 = 1024.0;

use smallvec::SmallVec;

#[derive(Clone, Debug)]
pub struct ReuseEstimator {
    n_layers: usize,
    n_expert: usize,
    /// `[layer][expert]` use rate per visit of the layer.
    rate: Vec<f32>,
    /// `[layer][expert]` routed at the layer's last visit.
    last: Vec<bool>,
    /// `[layer][expert]` routed at the visit before the last (the Markov source set).
    before_last: Vec<bool>,
    /// `[layer][from][to]` transition counts between consecutive visits (with a uniform prior).
    trans: Vec<f32>,
    /// `[layer][from]` row sums of `trans`.
    trans_sum: Vec<f32>,
    /// `[layer][expert]` Markov estimate of being routed at the layer's next visit.
    markov: Vec<f32>,
    /// Experts a visit routes to (k), for the prior.
    k: f32,
    /// The layer served last.
    current: usize,
}

impl ReuseEstimator {
    /// `k`: experts a token routes to per layer (the prior use rate is k / n_expert).
    pub fn new(n_layers: usize, n_expert: usize, k: usize) -> ReuseEstimator {
        let (nl, ne) = (n_layers.max(1), n_expert.max(1));
        let prior = (k.max(1) as f32 / ne as f32).min(1.0);
        ReuseEstimator {
            n_layers: nl,
            n_expert: ne,
            rate: vec![prior; nl * ne],
            last: vec![false; nl * ne],
            before_last: vec![false; nl * ne],
            trans: vec![prior; nl * ne * ne],
            trans_sum: vec![prior * ne as f32; nl * ne],
            markov: vec![prior; nl * ne],
            k: k.max(1) as f32,
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
        let ne = self.n_expert;
        let same_visit = continued && layer == self.current;
        self.current = layer;
        let span = layer * ne..(layer + 1) * ne;
        if !same_visit {
            for r in &mut self.rate[span.clone()] {
                *r *= 1.0 - ALPHA;
            }
            // The last visit becomes the source set of this one's transitions.
            let (before, last) = (
                &mut self.before_last[span.clone()],
                &self.last[span.clone()],
            );
            before.copy_from_slice(last);
            self.last[span.clone()].fill(false);
        }
        let sources: SmallVec<[usize; 16]> = (0..ne)
            .filter(|&from| self.before_last[layer * ne + from])
            .collect();
        for &e in experts {
            if e >= ne || self.last[layer * ne + e] {
                continue;
            }
            self.rate[layer * ne + e] = (self.rate[layer * ne + e] + ALPHA).min(1.0);
            self.last[layer * ne + e] = true;
            for &from in &sources {
                let row = layer * ne + from;
                self.trans[row * ne + e] += 1.0;
                self.trans_sum[row] += 1.0;
                if self.trans_sum[row] > TRANSITION_MEMORY * self.k {
                    self.trans[row * ne..(row + 1) * ne]
                        .iter_mut()
                        .for_each(|c| *c *= 0.5);
                    self.trans_sum[row] *= 0.5;
                }
            }
        }
        // The next visit's estimate, from the experts just routed to.
        let routed: SmallVec<[usize; 16]> = (0..ne)
            .filter(|&from| self.last[layer * ne + from])
            .collect();
        if !routed.is_empty() {
            for to in 0..ne {
                let p: f32 = routed
                    .iter()
                    .map(|&from| {
                        let row = layer * ne + from;
                        self.trans[row * ne + to] / self.trans_sum[row]
                    })
                    .sum();
                self.markov[layer * ne + to] = (p / routed.len() as f32 * self.k).min(1.0);
            }
        }
    }

    /// The layer recorded last.
    pub fn current_layer(&self) -> usize {
        self.current
    }

    /// Estimated chance that (layer, expert) is routed at its layer's next visit.
    pub fn p(&self, layer: usize, expert: usize) -> f32 {
        let i = layer * self.n_expert + expert;
        let recent = if self.last.get(i).copied().unwrap_or(false) {
            RECENT_BONUS
        } else {
            0.0
        };
        let rate = self.rate.get(i).copied().unwrap_or(0.0) + recent;
        let markov = self.markov.get(i).copied().unwrap_or(0.0);
        (MARKOV_WEIGHT * markov + (1.0 - MARKOV_WEIGHT) * rate).clamp(1e-4, 1.0)
    }

    /// Expected layer steps until (layer, expert) is used again.
    pub fn steps_to_next_use(&self, layer: usize, expert: usize) -> f32 {
        expected_steps(self.n_layers, self.current, layer, self.p(layer, expert))
    }
}

/// Layer steps from serving `current` until `layer` comes round again (1 to `n_layers`).
pub fn steps_until_layer(n_layers: usize, current: usize, layer: usize) -> usize {
    let l = n_layers.max(1);
    (layer + l - current % l - 1) % l + 1
}

/// Expected layer steps until an expert of `layer` with chance `p` of being routed at each of
/// its layer's visits is used again: the steps to its layer's next visit plus a full pass per
/// expected miss, `d + L · (1/p − 1)`.
pub fn expected_steps(n_layers: usize, current: usize, layer: usize, p: f32) -> f32 {
    let d = steps_until_layer(n_layers, current, layer);
    d as f32 + n_layers as f32 * (1.0 / p - 1.0)
}
