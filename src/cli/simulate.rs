//! `moe-edge simulate`: replays a routing trace against expert-cache policies (LRU, LFU with
//! aging, Belady's optimum) at several capacities and prints their hit rates.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::routing_stats::print_out;
use crate::analysis::simulate::{
    capacities_from_fractions, simulate, Policy, RequestTrace, SimResult,
};
use crate::analysis::{infer_n_expert, replay_order};
use crate::trace::read_trace;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Routing trace (JSON Lines, as written by `run --trace`)
    pub trace: PathBuf,

    /// Cache sizes in expert slots (over all layers), e.g. 64,128,256
    #[arg(
        long,
        value_name = "N[,N...]",
        value_delimiter = ',',
        required_unless_present = "capacity_frac",
        conflicts_with = "capacity_frac"
    )]
    pub capacity: Vec<usize>,

    /// Cache sizes as fractions of all experts (MoE layers in the trace × experts per layer)
    #[arg(long = "capacity-frac", value_name = "F[,F...]", value_delimiter = ',')]
    pub capacity_frac: Vec<f64>,

    /// Policies to replay
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lru,lfu,reuse,context,belady"
    )]
    pub policy: Vec<Policy>,

    /// Experts per layer, for --capacity-frac (default: the largest expert id in the trace plus one)
    #[arg(long = "n-expert", value_name = "N")]
    pub n_expert: Option<usize>,

    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let records = read_trace(&args.trace)?;
    if records.is_empty() {
        bail!("{}: the trace is empty", args.trace.display());
    }
    let n_expert = infer_n_expert(&records, args.n_expert)
        .with_context(|| format!("{}", args.trace.display()))?;
    let tokens = replay_order(&records);
    let trace = RequestTrace::from_tokens(&tokens);
    let mut layers: Vec<usize> = records.iter().map(|r| r.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    let total = layers.len() * n_expert;
    let capacities = if args.capacity.is_empty() {
        capacities_from_fractions(&args.capacity_frac, total).context("--capacity-frac")?
    } else {
        args.capacity.clone()
    };
    let mut policies: Vec<Policy> = Vec::new();
    for p in &args.policy {
        if !policies.contains(p) {
            policies.push(*p);
        }
    }
    let mut rows: Vec<(SimResult, f64)> = Vec::new();
    for &cap in &capacities {
        let best = simulate(&trace, cap, Policy::Belady)?;
        for &p in &policies {
            let r = if p == Policy::Belady {
                best.clone()
            } else {
                simulate(&trace, cap, p)?
            };
            let ratio = if best.hits > 0 {
                r.hits as f64 / best.hits as f64
            } else {
                f64::NAN
            };
            rows.push((r, ratio));
        }
    }
    if args.json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, ratio)| {
                serde_json::json!({
                    "policy": r.policy, "capacity": r.capacity, "requests": r.requests,
                    "hits": r.hits, "misses": r.misses, "evictions": r.evictions,
                    "hit_rate": r.hit_rate(),
                    "ratio_to_belady": if ratio.is_finite() { Some(*ratio) } else { None },
                })
            })
            .collect();
        return print_out(&format!("{}\n", serde_json::to_string_pretty(&out)?));
    }
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} tokens, {} MoE layers × {} experts = {} experts; {} requests, {} distinct (cold misses: best possible hit rate {:.1}%)",
        args.trace.display(),
        tokens.len(),
        layers.len(),
        n_expert,
        total,
        trace.len(),
        trace.distinct(),
        100.0 * (1.0 - trace.distinct() as f64 / trace.len().max(1) as f64)
    );
    let _ = writeln!(
        o,
        "\n{:>8} {:>6}  {:<15} {:>10} {:>10} {:>9} {:>10}",
        "capacity", "frac", "policy", "hits", "misses", "hit rate", "vs belady"
    );
    for (r, ratio) in &rows {
        let _ = writeln!(
            o,
            "{:>8} {:>5.1}%  {:<15} {:>10} {:>10} {:>8.2}% {:>10}",
            r.capacity,
            100.0 * r.capacity as f64 / total as f64,
            r.policy.to_string(),
            r.hits,
            r.misses,
            100.0 * r.hit_rate(),
            if ratio.is_finite() {
                format!("{ratio:.3}")
            } else {
                "-".into()
            }
        );
    }
    print_out(&o)
}
