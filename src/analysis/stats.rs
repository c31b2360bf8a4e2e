//! Routing statistics of a trace, per MoE layer: expert load, entropy, imbalance, co-activation
//! and reuse distance.
//!
//! Definitions (T = tokens routed in the layer, n_e = tokens that chose expert e, U = Σ n_e):
//! - *utilisation* of e: n_e / T (fraction of tokens that ran it); *load share*: n_e / U.
//! - *entropy*: H = −Σ (n_e/U) log2(n_e/U) bits; *normalised*: H / log2(n_expert) (1 = uniform).
//! - *imbalance*: max_e n_e / (U / n_expert) (1 = perfectly balanced).
//! - *co-activation* of a pair: P(a,b) = n_ab / T, lift = P(a,b) / (P(a) P(b)) with P(a) = n_a / T
//!   (lift 1 = independent, > 1 = chosen together more often than chance). Top pairs are ranked
//!   by n_ab, then lift.
//! - *reuse distance* of a use of (layer, e) at token t: t − t', where t' is the last token (in
//!   replay order) that used e in that layer; a first use has none (a cold use). The CDF counts
//!   all uses, cold ones included, so it ends at 1 − cold fraction. Distance 1 means the previous
//!   token ran the same expert.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use serde::Serialize;

use super::{infer_n_expert, replay_order};
use crate::trace::TraceRecord;

/// A co-activated pair of experts in one layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairStat {
    pub a: usize,
    pub b: usize,
    /// Tokens that chose both.
    pub count: u64,
    /// count / tokens.
    pub p_ab: f64,
    /// P(a,b) / (P(a) P(b)).
    pub lift: f64,
}

/// Reuse distances of expert uses, in tokens.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReuseStats {
    pub uses: u64,
    /// Uses with no earlier use of the same expert in the same layer.
    pub cold: u64,
    /// Uses whose expert the previous token also ran in this layer (distance 1).
    pub repeat_prev: u64,
    /// repeat_prev / uses.
    pub repeat_prev_frac: f64,
    /// `(distance, uses)`, ascending distance.
    pub histogram: Vec<(u64, u64)>,
    /// Median distance over warm uses.
    pub median: Option<u64>,
    /// Mean distance over warm uses.
    pub mean: Option<f64>,
}

impl ReuseStats {
    fn from_histogram(map: BTreeMap<u64, u64>, uses: u64, cold: u64) -> ReuseStats {
        let histogram: Vec<(u64, u64)> = map.into_iter().collect();
        let warm: u64 = histogram.iter().map(|h| h.1).sum();
        let repeat_prev = histogram
            .iter()
            .find(|h| h.0 == 1)
            .map(|h| h.1)
            .unwrap_or(0);
        let mut median = None;
        let mut acc = 0;
        for &(d, n) in &histogram {
            acc += n;
            if 2 * acc >= warm && warm > 0 {
                median = Some(d);
                break;
            }
        }
        let mean = (warm > 0).then(|| {
            histogram
                .iter()
                .map(|&(d, n)| d as f64 * n as f64)
                .sum::<f64>()
                / warm as f64
        });
        ReuseStats {
            uses,
            cold,
            repeat_prev,
            repeat_prev_frac: if uses > 0 {
                repeat_prev as f64 / uses as f64
            } else {
                0.0
            },
            histogram,
            median,
            mean,
        }
    }

    /// Fraction of all uses with distance ≤ `d`.
    pub fn cdf(&self, d: u64) -> f64 {
        if self.uses == 0 {
            return 0.0;
        }
        let n: u64 = self
            .histogram
            .iter()
            .take_while(|h| h.0 <= d)
            .map(|h| h.1)
            .sum();
        n as f64 / self.uses as f64
    }
}

/// Statistics of one MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerStats {
    pub layer: usize,
    /// Tokens routed in this layer.
    pub tokens: u64,
    /// Expert uses (Σ counts).
    pub uses: u64,
    /// Tokens that chose each expert.
    pub counts: Vec<u64>,
    pub entropy_bits: f64,
    pub entropy_norm: f64,
    /// max load / mean load.
    pub imbalance: f64,
    pub top_pairs: Vec<PairStat>,
    pub reuse: ReuseStats,
}

impl LayerStats {
    /// n_e / T for each expert.
    pub fn utilisation(&self) -> Vec<f64> {
        self.counts
            .iter()
            .map(|&c| {
                if self.tokens > 0 {
                    c as f64 / self.tokens as f64
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// Statistics of a whole trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutingStats {
    pub n_expert: usize,
    pub records: usize,
    /// Tokens in replay order (a token seen in several runs counts once per run).
    pub tokens: usize,
    /// Mean experts per (token, layer).
    pub mean_active: f64,
    /// Largest number of experts of one (token, layer).
    pub max_active: usize,
    /// The layers that appear in the trace, ascending.
    pub layers: Vec<LayerStats>,
    /// Reuse over all layers.
    pub reuse: ReuseStats,
}

/// Computes the statistics; `n_expert` as for [`infer_n_expert`]; `top_pairs` pairs per layer.
pub fn compute(
    records: &[TraceRecord],
    n_expert: Option<usize>,
    top_pairs: usize,
) -> Result<RoutingStats> {
    if records.is_empty() {
        bail!("the trace is empty");
    }
    let ne = infer_n_expert(records, n_expert)?;
    for r in records {
        for (j, e) in r.experts.iter().enumerate() {
            if r.experts[..j].contains(e) {
                bail!(
                    "record pos {} layer {} routes expert {e} twice",
                    r.pos,
                    r.layer
                );
            }
        }
    }
    let tokens = replay_order(records);
    let mut layer_ids: Vec<usize> = records.iter().map(|r| r.layer).collect();
    layer_ids.sort_unstable();
    layer_ids.dedup();
    let slot_of = |layer: usize| layer_ids.binary_search(&layer).expect("layer listed");

    struct Acc {
        tokens: u64,
        counts: Vec<u64>,
        pairs: HashMap<(usize, usize), u64>,
        last_use: Vec<Option<u64>>,
        reuse: BTreeMap<u64, u64>,
        cold: u64,
    }
    let mut acc: Vec<Acc> = layer_ids
        .iter()
        .map(|_| Acc {
            tokens: 0,
            counts: vec![0; ne],
            pairs: HashMap::new(),
            last_use: vec![None; ne],
            reuse: BTreeMap::new(),
            cold: 0,
        })
        .collect();
    let (mut active_sum, mut active_n, mut max_active) = (0u64, 0u64, 0usize);
    for (t, tok) in tokens.iter().enumerate() {
        let t = t as u64;
        for (layer, experts) in &tok.layers {
            let a = &mut acc[slot_of(*layer)];
            a.tokens += 1;
            active_sum += experts.len() as u64;
            active_n += 1;
            max_active = max_active.max(experts.len());
            for (i, &e) in experts.iter().enumerate() {
                a.counts[e] += 1;
                for &f in &experts[i + 1..] {
                    let (x, y) = (e.min(f), e.max(f));
                    *a.pairs.entry((x, y)).or_insert(0) += 1;
                }
                match a.last_use[e] {
                    Some(prev) => *a.reuse.entry(t - prev).or_insert(0) += 1,
                    None => a.cold += 1,
                }
                a.last_use[e] = Some(t);
            }
        }
    }

    let mut all_reuse: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut all_uses, mut all_cold) = (0u64, 0u64);
    let mut layers = Vec::with_capacity(layer_ids.len());
    for (&layer, a) in layer_ids.iter().zip(acc) {
        let uses: u64 = a.counts.iter().sum();
        let mut entropy = 0f64;
        for &c in &a.counts {
            if c > 0 {
                let p = c as f64 / uses as f64;
                entropy -= p * p.log2();
            }
        }
        let entropy_norm = if ne > 1 {
            entropy / (ne as f64).log2()
        } else {
            0.0
        };
        let max = a.counts.iter().copied().max().unwrap_or(0);
        let mean = uses as f64 / ne as f64;
        let imbalance = if mean > 0.0 { max as f64 / mean } else { 0.0 };
        let tn = a.tokens as f64;
        let mut pairs: Vec<PairStat> = a
            .pairs
            .iter()
            .map(|(&(x, y), &n)| {
                let (pa, pb) = (a.counts[x] as f64 / tn, a.counts[y] as f64 / tn);
                PairStat {
                    a: x,
                    b: y,
                    count: n,
                    p_ab: n as f64 / tn,
                    lift: (n as f64 / tn) / (pa * pb),
                }
            })
            .collect();
        pairs.sort_by(|p, q| {
            q.count
                .cmp(&p.count)
                .then(q.lift.total_cmp(&p.lift))
                .then((p.a, p.b).cmp(&(q.a, q.b)))
        });
        pairs.truncate(top_pairs);
        for (&d, &n) in &a.reuse {
            *all_reuse.entry(d).or_insert(0) += n;
        }
        all_uses += uses;
        all_cold += a.cold;
        layers.push(LayerStats {
            layer,
            tokens: a.tokens,
            uses,
            counts: a.counts,
            entropy_bits: entropy,
            entropy_norm,
            imbalance,
            top_pairs: pairs,
            reuse: ReuseStats::from_histogram(a.reuse, uses, a.cold),
        });
    }
    Ok(RoutingStats {
        n_expert: ne,
        records: records.len(),
        tokens: tokens.len(),
        mean_active: if active_n > 0 {
            active_sum as f64 / active_n as f64
        } else {
            0.0
        },
        max_active,
        layers,
        reuse: ReuseStats::from_histogram(all_reuse, all_uses, all_cold),
    })
}

/// The distances at which the text report prints the reuse CDF.
pub const CDF_POINTS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// A plain-text report: summary, per-layer table, top pairs and the reuse CDF.
pub fn report(s: &RoutingStats) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} records, {} tokens, {} MoE layers, {} experts per layer, {:.2} experts per token-layer (max {})",
        s.records,
        s.tokens,
        s.layers.len(),
        s.n_expert,
        s.mean_active,
        s.max_active
    );
    let _ = writeln!(
        o,
        "\nlayer  tokens  entropy(bits)  norm   max/mean  repeat-prev  median-reuse  unused"
    );
    for l in &s.layers {
        let unused = l.counts.iter().filter(|&&c| c == 0).count();
        let _ = writeln!(
            o,
            "{:>5}  {:>6}  {:>13.3}  {:>5.3}  {:>8.2}  {:>10.1}%  {:>12}  {:>6}",
            l.layer,
            l.tokens,
            l.entropy_bits,
            l.entropy_norm,
            l.imbalance,
            100.0 * l.reuse.repeat_prev_frac,
            l.reuse.median.map_or("-".to_string(), |m| m.to_string()),
            unused
        );
    }
    let _ = writeln!(o, "\nco-activation (top pairs per layer: a+b count lift)");
    for l in &s.layers {
        let pairs: Vec<String> = l
            .top_pairs
            .iter()
            .map(|p| format!("{}+{} {} ×{:.2}", p.a, p.b, p.count, p.lift))
            .collect();
        let _ = writeln!(o, "{:>5}  {}", l.layer, pairs.join("   "));
    }
    let r = &s.reuse;
    let _ = writeln!(
        o,
        "\nreuse distance over all layers: {} uses, {} cold ({:.1}%), {:.1}% repeat the previous token's expert",
        r.uses,
        r.cold,
        pct(r.cold, r.uses),
        100.0 * r.repeat_prev_frac
    );
    let cdf: Vec<String> = CDF_POINTS
        .iter()
        .map(|&d| format!("≤{d}: {:.1}%", 100.0 * r.cdf(d)))
        .collect();
    let _ = writeln!(o, "CDF (fraction of all uses)  {}", cdf.join("  "));
    o
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}
