//! Replays a routing trace against expert-cache policies: LRU and LFU-with-aging exactly as
//! `experts::cached` applies them, and Belady's MIN (evict the resident expert whose next use is
//! farthest away), the optimum no online policy can beat.
//!
//! Requests come in replay order (see `analysis`): token by token, layer by layer, each chosen
//! expert. The experts of one (token, layer) form a *group*: like the runtime cache, which holds
//! them all in use while the layer computes, no policy may evict an expert of the current group
//! to make room for another of it. So a capacity must be at least the largest group.
//!
//! The runtime rules mirrored here (`CachedExpertStore::claim` and `victim`): every request
//! advances a tick; every `LFU_AGING_PERIOD`-th request first halves all frequency counts; a hit
//! sets `last_use = tick` and adds one to the count; a miss fills an empty slot if there is one,
//! else evicts the smallest `last_use` (LRU) or the smallest `(count, last_use)` (LFU), and the
//! new expert starts with count 1. Pins and prefetches are not modelled. (In prompt processing
//! the runtime loads a whole micro-batch's experts per layer at once, so its real hit rates
//! there differ from a token-by-token replay.)

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Result};
use serde::Serialize;

use super::TokenRoutes;

/// Requests between two halvings of the LFU counts: the value `experts::cached` uses.
pub const LFU_AGING_PERIOD: u64 = 4096;

/// A cache policy to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Least recently used
    Lru,
    /// Least frequently used, counts halved every 4096 requests
    Lfu,
    /// Longest estimated time to next use: layers until the expert's layer comes round again,
    /// plus a full pass per expected miss of its layer (1/p − 1, p = its recent use rate)
    Reuse,
    /// `reuse`'s estimate ranked by hit density instead: evict the smallest p / d (chance of a
    /// hit at the layer's next visit per layer step held until then); the experts of the group
    /// being served are never evicted for each other
    #[value(name = "reuse-density")]
    #[serde(rename = "reuse-density")]
    ReuseDensity,
    /// `reuse` with p half its own, half learned from the set of experts the layer routed to
    /// at its last visit (and the one before): per-layer counts of what followed each set,
    /// learned online, backed off to `reuse`'s estimate for sets not seen yet. The experts of
    /// the group being served are never evicted for each other
    Context,
    /// `context`'s estimate ranked by hit density (as `reuse-density`)
    #[value(name = "context-density")]
    #[serde(rename = "context-density")]
    ContextDensity,
    /// Not an online policy but a bound on one: `reuse` told, for free, which experts the
    /// current token will route to at every later layer (perfect pre-gating). No router
    /// predictor can do better than this within a token; what remains up to Belady is the
    /// next tokens' routing
    #[value(name = "reuse-lookahead")]
    #[serde(rename = "reuse-lookahead")]
    ReuseLookahead,
    /// Not an online policy but a bound on one: `reuse` told, for free, every layer's next
    /// routing (the current token's later layers and the next token's earlier ones): one full
    /// pass of clairvoyance. What remains up to Belady is the routing two or more visits ahead
    #[value(name = "reuse-next-visit")]
    #[serde(rename = "reuse-next-visit")]
    ReuseNextVisit,
    /// Belady's MIN: the offline optimum
    Belady,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Lru => "lru",
            Policy::Lfu => "lfu",
            Policy::Reuse => "reuse",
            Policy::ReuseLookahead => "reuse-lookahead",
            Policy::ReuseNextVisit => "reuse-next-visit",
            Policy::ReuseDensity => "reuse-density",
            Policy::Context => "context",
            Policy::ContextDensity => "context-density",
            Policy::Belady => "belady",
        })
    }
}

/// A request sequence: experts as dense ids, cut into (token, layer) groups.
#[derive(Clone, Debug, Default)]
pub struct RequestTrace {
    /// Dense id of each request's (layer, expert).
    pub keys: Vec<u32>,
    /// Start index of each group in `keys`; groups end where the next one starts.
    pub group_starts: Vec<usize>,
    /// (layer, expert) of each dense id.
    pub names: Vec<(usize, usize)>,
}

impl RequestTrace {
    /// Builds the sequence from groups of (layer, expert) requests.
    pub fn from_groups<'a>(groups: impl IntoIterator<Item = &'a [(usize, usize)]>) -> RequestTrace {
        let mut t = RequestTrace::default();
        let mut ids: HashMap<(usize, usize), u32> = HashMap::new();
        for g in groups {
            if g.is_empty() {
                continue;
            }
            t.group_starts.push(t.keys.len());
            for &k in g {
                let next = ids.len() as u32;
                let id = *ids.entry(k).or_insert(next);
                if id == next {
                    t.names.push(k);
                }
                t.keys.push(id);
            }
        }
        t
    }

    /// Builds the sequence from tokens in replay order.
    pub fn from_tokens(tokens: &[TokenRoutes]) -> RequestTrace {
        let groups: Vec<Vec<(usize, usize)>> = tokens
            .iter()
            .flat_map(|t| {
                t.layers
                    .iter()
                    .map(|(l, ex)| ex.iter().map(|&e| (*l, e)).collect())
            })
            .collect();
        RequestTrace::from_groups(groups.iter().map(|g| g.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Distinct experts requested (= misses of an infinite cache).
    pub fn distinct(&self) -> usize {
        self.names.len()
    }

    /// The largest group.
    pub fn max_group(&self) -> usize {
        self.groups().map(|g| g.len()).max().unwrap_or(0)
    }

    /// Index ranges of the groups.
    pub fn groups(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.group_starts.iter().enumerate().map(|(i, &s)| {
            let end = self
                .group_starts
                .get(i + 1)
                .copied()
                .unwrap_or(self.keys.len());
            s..end
        })
    }
}

/// The outcome of one replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimResult {
    pub policy: Policy,
    pub capacity: usize,
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

impl SimResult {
    pub fn hit_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.hits as f64 / self.requests as f64
        }
    }
}

/// Replays `trace` against `policy` with `capacity` slots.
pub fn simulate(trace: &RequestTrace, capacity: usize, policy: Policy) -> Result<SimResult> {
    let need = trace.max_group();
    if capacity == 0 || capacity < need {
        bail!(
            "capacity {capacity} is below the {need} experts one token routes in one layer: the cache must hold them all at once"
        );
    }
    let (hits, evictions) = match policy {
        Policy::Lru | Policy::Lfu => replay_online(trace, capacity, policy == Policy::Lfu),
        Policy::Reuse => replay_reuse(trace, capacity, Foresight::None),
        Policy::ReuseLookahead => replay_reuse(trace, capacity, Foresight::RestOfToken),
        Policy::ReuseNextVisit => replay_reuse(trace, capacity, Foresight::NextVisit),
        Policy::ReuseDensity => replay_density(trace, capacity, Score::ReuseDensity),
        Policy::Context => replay_density(trace, capacity, Score::Context),
        Policy::ContextDensity => replay_density(trace, capacity, Score::ContextDensity),
        Policy::Belady => replay_belady(trace, capacity),
    };
    let requests = trace.len() as u64;
    Ok(SimResult {
        policy,
        capacity,
        requests,
        hits,
        misses: requests - hits,
        evictions,
    })
}

/// LRU or LFU with aging. Returns (hits, evictions).
fn replay_online(trace: &RequestTrace, capacity: usize, lfu: bool) -> (u64, u64) {
    // Per resident id: (count, last_use). The order key is (last_use, 0) for LRU and
    // (count, last_use) for LFU, as in `CachedExpertStore::victim`; ticks are unique, so the key
    // decides alone and slot order never matters.
    let mut state: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut order: BTreeSet<(u64, u64, u32)> = BTreeSet::new();
    let key = |id: u32, (count, last): (u64, u64)| {
        if lfu {
            (count, last, id)
        } else {
            (last, 0, id)
        }
    };
    let (mut tick, mut hits, mut evictions) = (0u64, 0u64, 0u64);
    for g in trace.groups() {
        for i in g.clone() {
            let id = trace.keys[i];
            tick += 1;
            // `requests` equals `tick` here: no prefetches.
            if tick % LFU_AGING_PERIOD == 0 {
                for v in state.values_mut() {
                    v.0 /= 2;
                }
                if lfu {
                    order = state.iter().map(|(&id, &v)| key(id, v)).collect();
                }
            }
            if let Some(v) = state.get_mut(&id) {
                order.remove(&key(id, *v));
                v.0 += 1;
                v.1 = tick;
                order.insert(key(id, *v));
                hits += 1;
                continue;
            }
            if state.len() >= capacity {
                let in_use = &trace.keys[g.start..i];
                let victim = *order
                    .iter()
                    .find(|k| !in_use.contains(&k.2))
                    .expect("capacity ≥ group size leaves a victim");
                order.remove(&victim);
                state.remove(&victim.2);
                evictions += 1;
            }
            let v = (1, tick);
            state.insert(id, v);
            order.insert(key(id, v));
        }
    }
    (hits, evictions)
}

/// What a `reuse` replay is told of the future, for free.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Foresight {
    /// Nothing: the online policy.
    None,
    /// The current token's groups at its later layers.
    RestOfToken,
    /// Every layer's next group: the rest of this token and the next token's earlier layers.
    NextVisit,
}

/// The `reuse` policy (`crate::experts::ReuseEstimator`), told the routing of the groups that
/// `foresight` names. Returns (hits, evictions).
fn replay_reuse(trace: &RequestTrace, capacity: usize, foresight: Foresight) -> (u64, u64) {
    use crate::experts::ReuseEstimator;
    let n_layers = trace.names.iter().map(|n| n.0 + 1).max().unwrap_or(1);
    let n_expert = trace.names.iter().map(|n| n.1 + 1).max().unwrap_or(1);
    let mut est = ReuseEstimator::new(n_layers, n_expert, trace.max_group());
    let mut resident: Vec<u32> = Vec::new();
    let (mut hits, mut evictions) = (0u64, 0u64);
    let groups: Vec<std::ops::Range<usize>> = trace.groups().collect();
    let layer_of = |g: &std::ops::Range<usize>| trace.names[trace.keys[g.start] as usize].0;
    // Per layer, its known next group (the layer steps until it, and its experts), this step.
    let mut known: Vec<Option<(usize, std::ops::Range<usize>)>> = vec![None; n_layers];
    for (gi, g) in groups.iter().cloned().enumerate() {
        let layer = layer_of(&g);
        known.iter_mut().for_each(|k| *k = None);
        let mut last = layer;
        for next in &groups[gi + 1..] {
            let l = layer_of(next);
            let same_token = l > last;
            let wanted = match foresight {
                Foresight::None => false,
                Foresight::RestOfToken => same_token,
                // Stop once a layer comes round a second time.
                Foresight::NextVisit => known[l].is_none(),
            };
            if !wanted {
                break;
            }
            known[l] = Some(((l + n_layers - layer - 1) % n_layers + 1, next.clone()));
            last = l;
        }
        let group: Vec<usize> = g
            .clone()
            .map(|i| trace.names[trace.keys[i] as usize].1)
            .collect();
        est.visit(layer, &group);
        for i in g.clone() {
            let id = trace.keys[i];
            if resident.contains(&id) {
                hits += 1;
                continue;
            }
            if resident.len() >= capacity {
                let in_use = &trace.keys[g.start..i];
                let (at, _) = resident
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| !in_use.contains(k))
                    .map(|(at, &k)| {
                        let (l, e) = trace.names[k as usize];
                        let mut steps = est.steps_to_next_use(l, e);
                        if let Some((d, next)) = &known[l] {
                            // Known: used d groups from now, or not before the visit after.
                            let d = *d as f32;
                            steps = if trace.keys[next.clone()].contains(&k) {
                                d
                            } else {
                                steps.max(d + n_layers as f32)
                            };
                        }
                        (at, steps)
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("capacity ≥ group size leaves a victim");
                resident.swap_remove(at);
                evictions += 1;
            }
            resident.push(id);
        }
    }
    (hits, evictions)
}

/// Eviction rankings of `replay_density`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Score {
    ReuseDensity,
    Context,
    ContextDensity,
}

/// `reuse-density`, `context` or `context-density` (`crate::experts::ContextModel`).
/// As in the runtime, the experts of the group being served score lowest, so they are never
/// evicted for each other. Returns (hits, evictions).
fn replay_density(trace: &RequestTrace, capacity: usize, score: Score) -> (u64, u64) {
    use crate::experts::{density_score, ContextModel, ReuseEstimator};
    let n_layers = trace.names.iter().map(|n| n.0 + 1).max().unwrap_or(1);
    let n_expert = trace.names.iter().map(|n| n.1 + 1).max().unwrap_or(1);
    let k = trace.max_group();
    let mut est = ReuseEstimator::new(n_layers, n_expert, k);
    let mut ctx = ContextModel::new(n_layers, n_expert, k);
    let mut resident: Vec<u32> = Vec::new();
    let (mut hits, mut evictions) = (0u64, 0u64);
    let mut group: Vec<usize> = Vec::new();
    for g in trace.groups() {
        let layer = trace.names[trace.keys[g.start] as usize].0;
        group.clear();
        group.extend(g.clone().map(|i| trace.names[trace.keys[i] as usize].1));
        est.visit(layer, &group);
        ctx.record(layer, &group, false, &est);
        for i in g.clone() {
            let id = trace.keys[i];
            if resident.contains(&id) {
                hits += 1;
                continue;
            }
            if resident.len() >= capacity {
                let in_group = &trace.keys[g.clone()];
                let (at, _) = resident
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| !in_group.contains(k))
                    .map(|(at, &k)| {
                        let (l, e) = trace.names[k as usize];
                        let s = match score {
                            Score::ReuseDensity => density_score(n_layers, layer, l, est.p(l, e)),
                            Score::Context => ctx.steps_to_next_use(l, e),
                            Score::ContextDensity => ctx.density_score(l, e),
                        };
                        (at, s)
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("capacity ≥ group size leaves a victim");
                resident.swap_remove(at);
                evictions += 1;
            }
            resident.push(id);
        }
    }
    (hits, evictions)
}

/// Belady's MIN, never evicting an expert of the current group. Returns (hits, evictions).
fn replay_belady(trace: &RequestTrace, capacity: usize) -> (u64, u64) {
    let n = trace.len();
    // next[i]: index of the next request of the same id after i, or a distinct "never" value.
    let mut next = vec![0u64; n];
    let mut last_seen: HashMap<u32, usize> = HashMap::new();
    for i in (0..n).rev() {
        let id = trace.keys[i];
        next[i] = match last_seen.insert(id, i) {
            Some(j) => j as u64,
            None => u64::MAX,
        };
    }
    let mut resident: HashMap<u32, u64> = HashMap::new();
    let mut by_next: BTreeSet<(u64, u32)> = BTreeSet::new();
    let (mut hits, mut evictions) = (0u64, 0u64);
    for g in trace.groups() {
        for i in g.clone() {
            let id = trace.keys[i];
            if let Some(nx) = resident.get_mut(&id) {
                by_next.remove(&(*nx, id));
                *nx = next[i];
                by_next.insert((next[i], id));
                hits += 1;
                continue;
            }
            if resident.len() >= capacity {
                let in_use = &trace.keys[g.start..i];
                let victim = *by_next
                    .iter()
                    .rev()
                    .find(|k| !in_use.contains(&k.1))
                    .expect("capacity ≥ group size leaves a victim");
                by_next.remove(&victim);
                resident.remove(&victim.1);
                evictions += 1;
            }
            resident.insert(id, next[i]);
            by_next.insert((next[i], id));
        }
    }
    (hits, evictions)
}

/// Capacities from fractions of `total` experts (MoE layers × experts per layer), rounded to the
/// nearest slot, at least one.
pub fn capacities_from_fractions(fracs: &[f64], total: usize) -> Result<Vec<usize>> {
    fracs
        .iter()
        .map(|&f| {
            if !(f > 0.0 && f <= 1.0) {
                bail!("capacity fraction {f} is outside (0, 1]");
            }
            Ok(((f * total as f64).round() as usize).max(1))
        })
        .collect()
}
