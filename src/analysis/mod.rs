//! Offline analysis of routing traces (`run --trace`): statistics and heatmaps
//! (`routing-stats`), and expert-cache policies replayed against Belady's optimum (`simulate`).
//!
//! A trace is written in the order the forward pass routes: during prompt processing a whole
//! micro-batch per layer (layer-major), during generation one token at a time. Both analyses
//! first put it in *replay order* — token by token, each token's layers in ascending order, each
//! layer's experts highest weight first — which is the order a one-token-at-a-time decoder asks
//! the expert store for experts.

pub mod heatmap;
pub mod simulate;
pub mod stats;

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Result};

use crate::trace::TraceRecord;

/// One token's routing: `(layer, experts)` in ascending layer order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRoutes {
    pub pos: usize,
    pub layers: Vec<(usize, Vec<usize>)>,
}

/// Puts trace records in replay order. Records are grouped into runs: a run ends where a
/// (position, layer) pair repeats (the trace holds several runs, e.g. one per prompt). Within a
/// run tokens are ordered by position; runs keep their order in the file.
pub fn replay_order(records: &[TraceRecord]) -> Vec<TokenRoutes> {
    let mut out = Vec::new();
    let mut run: Vec<TokenRoutes> = Vec::new();
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    let flush = |run: &mut Vec<TokenRoutes>, out: &mut Vec<TokenRoutes>| {
        run.sort_by_key(|t| t.pos);
        for t in run.iter_mut() {
            t.layers.sort_by_key(|l| l.0);
        }
        out.append(run);
    };
    for r in records {
        if !seen.insert((r.pos, r.layer)) {
            flush(&mut run, &mut out);
            index.clear();
            seen.clear();
            seen.insert((r.pos, r.layer));
        }
        let i = *index.entry(r.pos).or_insert_with(|| {
            run.push(TokenRoutes {
                pos: r.pos,
                layers: Vec::new(),
            });
            run.len() - 1
        });
        run[i].layers.push((r.layer, r.experts.clone()));
    }
    flush(&mut run, &mut out);
    out
}

/// The most experts per layer a trace may name (a guard against corrupt ids).
pub const MAX_EXPERTS: usize = 1 << 16;

/// Experts per layer: `--n-expert` when given (every id must be below it), else the largest id
/// in the trace plus one.
pub fn infer_n_expert(records: &[TraceRecord], given: Option<usize>) -> Result<usize> {
    if let Some(n) = given.filter(|&n| n > MAX_EXPERTS) {
        bail!("--n-expert {n} is above the supported {MAX_EXPERTS}");
    }
    if let Some(r) = records
        .iter()
        .find(|r| r.experts.iter().any(|&e| e >= MAX_EXPERTS))
    {
        bail!(
            "record pos {} layer {} names an expert id of {MAX_EXPERTS} or more",
            r.pos,
            r.layer
        );
    }
    let max_id = records.iter().flat_map(|r| r.experts.iter()).copied().max();
    match (given, max_id) {
        (Some(0), _) => bail!("--n-expert must be at least 1"),
        (Some(n), Some(m)) if m >= n => {
            let (r, e) = records
                .iter()
                .find_map(|r| r.experts.iter().find(|&&e| e >= n).map(|&e| (r, e)))
                .expect("an id at or above n exists");
            bail!(
                "record pos {} layer {} routes expert {e}, but --n-expert is {n}",
                r.pos,
                r.layer
            )
        }
        (Some(n), _) => Ok(n),
        (None, Some(m)) => Ok(m + 1),
        (None, None) => bail!("the trace routes no experts"),
    }
}
