//! Routing-context estimates for the `context` eviction policy.
//!
//! `ReuseEstimator` predicts a layer's next routing from per-expert rates and a first-order
//! Markov term that averages one transition row per expert routed last. On a top-2 model the
//! *set* a layer routed to last is a far sharper context than its experts taken one at a time:
//! the bundled model's 8-choose-2 = 28 sets per layer each predict the next pair with their own
//! distribution. This model keeps, per layer, counts of what followed each set (order 1) and
//! each pair of consecutive sets (order 2), learned online, and predicts
//!
//! ```text
//! q1 = (count1[e] + B1 · p_reuse) / (total1 + B1)      (p_reuse: ReuseEstimator's estimate)
//! q2 = (count2[e] + B2 · q1)      / (total2 + B2)
//! ```
//!
//! — an unseen context falls back to the level below it, so on models whose sets never repeat
//! (many experts, large top-k) the estimate stays `ReuseEstimator`'s — and uses
//! `p = ½ q2 + ½ p_reuse`, which adapts faster when the text changes.
//!
//! The `context` policy ranks as `reuse` does, by expected layer steps to the next use,
//! `d + L·(1/p − 1)`, with this p; experts of the visit being served are never preferred victims
//! (`reuse` may evict an expert of the current group that is not claimed yet to load another of
//! it). `density_score` ranks by *hit density* instead, `d / p` (layer steps held per expected
//! hit at the layer's next visit): it gained most on the bundled model's perplexity trace with
//! p from the context counts alone, but with `reuse`'s own p it lost up to 0.1 of Belady's rate
//! on a trace of generated text, so it is only a simulator policy (`context-density`).
//!
//! Contexts are stored in fixed, preallocated tables (a few ways per hash bucket, the row with
//! the fewest counts replaced), so recording allocates nothing and memory stays bounded however
//! many distinct sets a model produces.

use super::reuse::{expected_steps, steps_until_layer};
use super::ReuseEstimator;

/// Prior weight (in visits) of the level below in the order-1 estimate.
const B1: f32 = 16.0;
/// Prior weight (in visits) of the order-1 estimate in the order-2 estimate.
const B2: f32 = 16.0;
/// Weight of the context estimate in p (the rest is `ReuseEstimator`'s own). Alone (1.0) it
/// gained most on the bundled model's perplexity trace but lost up to 0.03 of Belady's rate at
/// half capacity on short traces of generated text, where the routing changes regime faster
/// than the rows forget; half and half kept all of the 25 % gain there and lost nothing.
const CONTEXT_WEIGHT: f32 = 0.5;
/// A context row is halved when its visits pass this, so the counts follow the recent text.
const ROW_MEMORY: f32 = 64.0;
/// Rows per bucket.
const WAYS: usize = 4;
/// Counts (f32) each of the two tables may hold over all layers.
const TABLE_FLOATS: usize = 1 << 19;
/// Most rows per layer and table.
const MAX_ROWS: usize = 4096;
/// Lowest probability an estimate may give (keeps `d / p` finite).
const MIN_P: f32 = 1e-3;

/// Counts of what followed each context, per layer, in fixed memory.
#[derive(Clone, Debug)]
struct ContextTable {
    n_expert: usize,
    buckets: usize,
    /// `[layer][bucket][way]` context hash (0: empty).
    tags: Vec<u64>,
    /// `[layer][bucket][way]` visits counted in the row.
    totals: Vec<f32>,
    /// `[layer][bucket][way][expert]` times the expert followed the context.
    counts: Vec<f32>,
}

impl ContextTable {
    /// Buckets per layer for `n_layers × n_expert` (at most `TABLE_FLOATS` counts in all).
    fn buckets_for(n_layers: usize, n_expert: usize) -> usize {
        let rows = (TABLE_FLOATS / (n_layers * n_expert)).clamp(WAYS, MAX_ROWS);
        (rows / WAYS).max(1)
    }

    /// Heap bytes of a table for `n_layers × n_expert`: per row a tag, a total and the counts.
    fn bytes_for(n_layers: usize, n_expert: usize) -> u64 {
        let rows = n_layers * Self::buckets_for(n_layers, n_expert) * WAYS;
        (rows * (8 + 4 + 4 * n_expert)) as u64
    }

    fn new(n_layers: usize, n_expert: usize) -> ContextTable {
        let buckets = Self::buckets_for(n_layers, n_expert);
        let n = n_layers * buckets * WAYS;
        ContextTable {
            n_expert,
            buckets,
            tags: vec![0; n],
            totals: vec![0.0; n],
            counts: vec![0.0; n * n_expert],
        }
    }

    fn bucket(&self, layer: usize, tag: u64) -> usize {
        (layer * self.buckets + (tag % self.buckets as u64) as usize) * WAYS
    }

    /// The row of `tag` at `layer`, if stored.
    fn find(&self, layer: usize, tag: u64) -> Option<usize> {
        let b = self.bucket(layer, tag);
        (b..b + WAYS).find(|&r| self.tags[r] == tag)
    }

    /// The row of `tag` at `layer`, taking over the bucket's least-counted row if not stored.
    fn find_or_insert(&mut self, layer: usize, tag: u64) -> usize {
        if let Some(r) = self.find(layer, tag) {
            return r;
        }
        let b = self.bucket(layer, tag);
        let r = (b..b + WAYS)
            .min_by(|&x, &y| self.totals[x].total_cmp(&self.totals[y]))
            .unwrap_or(b);
        self.tags[r] = tag;
        self.totals[r] = 0.0;
        self.counts[r * self.n_expert..(r + 1) * self.n_expert].fill(0.0);
        r
    }

    /// Counts `experts` after `tag`; with `new_visit`, also one more visit.
    fn learn(&mut self, layer: usize, tag: u64, experts: &[usize], new_visit: bool) {
        let ne = self.n_expert;
        let r = self.find_or_insert(layer, tag);
        if new_visit {
            self.totals[r] += 1.0;
        }
        for &e in experts {
            self.counts[r * ne + e] += 1.0;
        }
        if self.totals[r] > ROW_MEMORY {
            self.totals[r] *= 0.5;
            self.counts[r * ne..(r + 1) * ne]
                .iter_mut()
                .for_each(|c| *c *= 0.5);
        }
    }

    /// `(count of expert, visits)` after `tag`, or `None` for an unseen context.
    fn get(&self, layer: usize, tag: u64, e: usize) -> Option<(f32, f32)> {
        self.find(layer, tag)
            .map(|r| (self.counts[r * self.n_expert + e], self.totals[r]))
    }
}

/// A well-mixed hash of one expert id (splitmix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Nonzero tag for the order-2 context (`before`, `last`).
fn pair_tag(before: u64, last: u64) -> u64 {
    (mix(before) ^ last.rotate_left(17)).max(1)
}

#[derive(Clone, Debug)]
pub struct ContextModel {
    n_layers: usize,
    n_expert: usize,
    /// Order 1: what followed each set.
    order1: ContextTable,
    /// Order 2: what followed each pair of consecutive sets.
    order2: ContextTable,
    /// `[layer]` set hash of the visit being served or last served (sum of `mix(expert)`; 0:
    /// no visit yet).
    cur: Vec<u64>,
    /// `[layer]` set hash of the visit before `cur`.
    prev1: Vec<u64>,
    /// `[layer]` set hash of the visit before `prev1`.
    prev2: Vec<u64>,
    /// `[layer][expert]` routed at the visit `cur`.
    in_cur: Vec<bool>,
    /// `[layer][expert]` estimated chance of being routed at the layer's next visit.
    p: Vec<f32>,
    current: usize,
}

impl ContextModel {
    pub fn new(n_layers: usize, n_expert: usize, k: usize) -> ContextModel {
        let (nl, ne) = (n_layers.max(1), n_expert.max(1));
        let prior = (k.max(1) as f32 / ne as f32).min(1.0);
        ContextModel {
            n_layers: nl,
            n_expert: ne,
            order1: ContextTable::new(nl, ne),
            order2: ContextTable::new(nl, ne),
            cur: vec![0; nl],
            prev1: vec![0; nl],
            prev2: vec![0; nl],
            in_cur: vec![false; nl * ne],
            p: vec![prior; nl * ne],
            current: 0,
        }
    }

    /// Heap bytes the model for `n_layers × n_expert` keeps (its two tables and per-expert
    /// vectors), for the RAM budget.
    pub fn bytes_for(n_layers: usize, n_expert: usize) -> u64 {
        let (nl, ne) = (n_layers.max(1), n_expert.max(1));
        2 * ContextTable::bytes_for(nl, ne) + (nl * ne * 5 + nl * 3 * 8) as u64
    }

    /// Records `experts` of `layer` (after `reuse` recorded them); with `continued`, as more
    /// experts of the visit recorded last.
    pub fn record(
        &mut self,
        layer: usize,
        experts: &[usize],
        continued: bool,
        reuse: &ReuseEstimator,
    ) {
        if layer >= self.n_layers {
            return;
        }
        let ne = self.n_expert;
        let same_visit = continued && layer == self.current;
        self.current = layer;
        if !same_visit {
            self.prev2[layer] = self.prev1[layer];
            self.prev1[layer] = self.cur[layer];
            self.cur[layer] = 0;
            self.in_cur[layer * ne..(layer + 1) * ne].fill(false);
        }
        let (p1, p2) = (self.prev1[layer], self.prev2[layer]);
        let t2 = pair_tag(p2, p1);
        if p1 != 0 && !same_visit {
            self.order1.learn(layer, p1, &[], true);
            if p2 != 0 {
                self.order2.learn(layer, t2, &[], true);
            }
        }
        for &e in experts {
            if e >= ne || self.in_cur[layer * ne + e] {
                continue;
            }
            self.in_cur[layer * ne + e] = true;
            self.cur[layer] = self.cur[layer].wrapping_add(mix(e as u64 + 1));
            if p1 != 0 {
                self.order1.learn(layer, p1, &[e], false);
                if p2 != 0 {
                    self.order2.learn(layer, t2, &[e], false);
                }
            }
        }
        if self.cur[layer] == 0 {
            self.cur[layer] = 1;
        }
        // The next visit's estimate, in the contexts this visit leaves.
        let (t1, t2) = (self.cur[layer], pair_tag(p1, self.cur[layer]));
        for e in 0..ne {
            let base = reuse.p(layer, e);
            let q1 = match self.order1.get(layer, t1, e) {
                Some((c, n)) => (c + B1 * base) / (n + B1),
                None => base,
            };
            let q2 = match self.order2.get(layer, t2, e).filter(|_| p1 != 0) {
                Some((c, n)) => (c + B2 * q1) / (n + B2),
                None => q1,
            };
            let p = CONTEXT_WEIGHT * q2 + (1.0 - CONTEXT_WEIGHT) * base;
            self.p[layer * ne + e] = p.clamp(MIN_P, 1.0);
        }
    }

    /// Estimated chance that (layer, expert) is routed at its layer's next visit.
    pub fn p(&self, layer: usize, expert: usize) -> f32 {
        self.p
            .get(layer * self.n_expert + expert)
            .copied()
            .unwrap_or(MIN_P)
    }

    /// How much `(layer, expert)` should be evicted (largest first): layer steps held per
    /// expected hit, `d / p`. Experts of the visit being served score 0.
    pub fn density_score(&self, layer: usize, expert: usize) -> f32 {
        if self.in_current_visit(layer, expert) {
            return 0.0;
        }
        density_score(self.n_layers, self.current, layer, self.p(layer, expert))
    }
}

impl ContextModel {
    /// `reuse`'s ranking with this model's p: expected layer steps to the next use,
    /// `d + L · (1/p − 1)`. Experts of the visit being served score 0.
    pub fn steps_to_next_use(&self, layer: usize, expert: usize) -> f32 {
        if self.in_current_visit(layer, expert) {
            return 0.0;
        }
        expected_steps(self.n_layers, self.current, layer, self.p(layer, expert))
    }

    fn in_current_visit(&self, layer: usize, expert: usize) -> bool {
        layer == self.current
            && self
                .in_cur
                .get(layer * self.n_expert + expert)
                .copied()
                .unwrap_or(false)
    }
}

/// `d / p`: layer steps until `layer` comes round again (from `current`, 1 to `n_layers`) per
/// expected hit.
pub fn density_score(n_layers: usize, current: usize, layer: usize, p: f32) -> f32 {
    steps_until_layer(n_layers, current, layer) as f32 / p.clamp(MIN_P, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_counts_what_new_allocates() {
        for (nl, ne) in [(4, 8), (16, 64), (48, 128), (1, 1)] {
            let m = ContextModel::new(nl, ne, 2);
            let table = |t: &ContextTable| t.tags.len() * 8 + (t.totals.len() + t.counts.len()) * 4;
            let vectors = m.in_cur.len() + m.p.len() * 4 + (m.cur.len() * 3) * 8;
            let got = table(&m.order1) + table(&m.order2) + vectors;
            assert_eq!(ContextModel::bytes_for(nl, ne), got as u64, "{nl} × {ne}");
        }
    }
}
