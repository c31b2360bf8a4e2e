//! `--fit`: pick the router cap and cache policy for this box by measuring them.
//!
//! For each candidate cap (top-k, 3/4, 1/2, 1/4 of it) and, under a RAM budget, each cache
//! policy, it loads the model with the box's budget and thread count, decodes a short run of
//! tokens and records tokens/s and the expert-cache hit rate. The choice: with `--target-tps T`,
//! the largest cap (best quality) that reaches T, else the fastest setting; without a target, the
//! largest cap within 10 % of the fastest setting's speed. It prints every measurement and why.

use crate::rng::XorShift64;
use std::time::Instant;

use anyhow::Result;

use super::ModelArgs;
use crate::experts::EvictionPolicy;
use crate::model::LogitsWanted;

const FIT_TOKENS: usize = 16;

struct Trial {
    cap: usize,
    policy: EvictionPolicy,
    tps: f64,
    hit_rate: f64,
}

/// Measures the candidates and returns `args` with the chosen cap and policy set.
pub fn choose(args: &ModelArgs, top_k: usize, budgeted: bool) -> Result<ModelArgs> {
    let mut caps = vec![top_k, top_k * 3 / 4, top_k / 2, top_k / 4];
    caps.retain(|&c| c >= 1);
    caps.dedup();
    let policies: Vec<EvictionPolicy> = if budgeted {
        vec![
            EvictionPolicy::Context,
            EvictionPolicy::Lru,
            EvictionPolicy::Lfu,
        ]
    } else {
        vec![args.cache_policy]
    };
    let mut trials = Vec::new();
    eprintln!(
        "fit: measuring {} settings ({FIT_TOKENS} decoded tokens each)",
        caps.len() * policies.len()
    );
    for &cap in &caps {
        for &policy in &policies {
            let mut a = args.clone();
            a.fit = false;
            a.cache_policy = policy;
            a.router.max_active_experts = (cap < top_k).then_some(cap);
            a.ctx_size = Some(FIT_TOKENS + 8);
            let loaded = a.load()?;
            let m = &loaded.model;
            let mut st = m.new_state(FIT_TOKENS + 8);
            let mut rng = XorShift64(0x2545_F491_4F6C_DD1D);
            let mut tok = || rng.below(m.cfg.n_vocab as u64) as u32;
            m.forward(
                &mut st,
                &[tok(), tok(), tok(), tok()],
                LogitsWanted::Last,
                None,
            )?;
            let before = m.store.stats();
            let t = Instant::now();
            for _ in 0..FIT_TOKENS {
                m.forward(&mut st, &[tok()], LogitsWanted::Last, None)?;
            }
            let tps = FIT_TOKENS as f64 / t.elapsed().as_secs_f64();
            let hit_rate = m.store.stats().hit_rate_since(&before);
            eprintln!(
                "fit:   cap {cap:>3} {policy}: {tps:.2} t/s, expert hit rate {:.1} %",
                hit_rate * 100.0
            );
            trials.push(Trial {
                cap,
                policy,
                tps,
                hit_rate,
            });
        }
    }
    let fastest = trials.iter().map(|t| t.tps).fold(0.0, f64::max);
    // Best policy per cap (by speed), caps in decreasing order (quality first).
    let mut best_per_cap: Vec<&Trial> = Vec::new();
    for &cap in &caps {
        let best = trials
            .iter()
            .filter(|t| t.cap == cap)
            .max_by(|a, b| a.tps.partial_cmp(&b.tps).unwrap())
            .expect("one trial per cap");
        best_per_cap.push(best);
    }
    let (pick, why) = match args.target_tps {
        Some(target) => match best_per_cap.iter().find(|t| t.tps >= target) {
            Some(t) => (
                *t,
                format!("the largest cap reaching the target of {target} t/s"),
            ),
            None => {
                let t = trials
                    .iter()
                    .max_by(|a, b| a.tps.partial_cmp(&b.tps).unwrap())
                    .unwrap();
                (
                    t,
                    format!("no setting reaches {target} t/s; the fastest one"),
                )
            }
        },
        None => {
            let t = best_per_cap
                .iter()
                .find(|t| t.tps >= 0.9 * fastest)
                .unwrap();
            (
                *t,
                "the largest cap within 10 % of the fastest setting".to_string(),
            )
        }
    };
    eprintln!(
        "fit: chose cap {} with the {} policy ({:.2} t/s, hit rate {:.1} %): {why}",
        pick.cap,
        pick.policy,
        pick.tps,
        pick.hit_rate * 100.0
    );
    let mut out = args.clone();
    out.fit = false;
    out.cache_policy = pick.policy;
    out.router.max_active_experts = (pick.cap < top_k).then_some(pick.cap);
    Ok(out)
}
