//! `moe-edge sweep`: the sensitivity analysis of router caps × RAM budgets × cache policies.
//!
//! For every combination it measures, on one model and one text: decode tokens/s and expert-cache
//! hit rate (greedy decoding from the text's start), perplexity, and KL divergence and same-top-token
//! rate against full routing with all experts resident. It prints a table (markdown) and writes a
//! plot of quality (mean KL divergence) against decode speed as SVG.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::perplexity::measure;
use super::ModelArgs;
use crate::model::LogitsWanted;
use crate::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text for perplexity and KL divergence
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Active-expert caps to try (default: top-k, 3/4, 1/2 and 1/4 of it)
    #[arg(long, value_delimiter = ',')]
    pub caps: Vec<usize>,
    /// RAM budgets to try; `none` = all experts resident (default: none)
    #[arg(long, value_delimiter = ',')]
    pub budgets: Vec<String>,
    /// Cache policies to try under budgets
    #[arg(long, value_delimiter = ',', default_value = "reuse")]
    pub policies: Vec<crate::experts::EvictionPolicy>,
    /// Chunks of text for perplexity
    #[arg(long, default_value_t = 4)]
    pub chunks: usize,
    /// Tokens decoded to measure speed
    #[arg(long = "n-gen", default_value_t = 32)]
    pub n_gen: usize,
    /// Write the quality-vs-speed plot here (SVG)
    #[arg(long = "out-svg")]
    pub out_svg: Option<PathBuf>,
    /// Write all results as JSON here
    #[arg(long = "out-json")]
    pub out_json: Option<PathBuf>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepRow {
    pub cap: usize,
    pub budget: String,
    pub policy: String,
    pub decode_tps: f64,
    pub hit_rate: f64,
    pub ppl: f64,
    pub kld_mean: f64,
    pub kld_p99: f64,
    pub same_top: f64,
}

fn plot_svg(rows: &[SweepRow], title: &str) -> String {
    let (w, h, pad) = (640.0, 400.0, 60.0);
    let xmax = rows
        .iter()
        .map(|r| r.decode_tps)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let ymax = rows
        .iter()
        .map(|r| r.kld_mean)
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.15;
    let x = |v: f64| pad + v / xmax * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / ymax * (h - 2.0 * pad);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">decode tokens/s</text>\n\
         <text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">mean KL divergence vs full routing</text>\n",
        w / 2.0,
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        w / 2.0,
        h - 15.0,
        h / 2.0,
        h / 2.0
    );
    for i in 0..=4 {
        let xv = xmax * i as f64 / 4.0;
        let yv = ymax * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.1}</text>\n",
            x(xv),
            h - pad + 16.0,
            xv
        );
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.3}</text>\n",
            pad - 4.0,
            y(yv) + 4.0,
            yv
        );
    }
    let colours = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut series: Vec<(String, Vec<&SweepRow>)> = Vec::new();
    for r in rows {
        let key = format!("budget {} / {}", r.budget, r.policy);
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => series.push((key, vec![r])),
        }
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colours[i % colours.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.decode_tps), y(r.kld_mean)))
            .collect();
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\"/>\n",
            path.join(" ")
        );
        for r in pts {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{:.1}\">k={}</text>\n",
                x(r.decode_tps),
                y(r.kld_mean),
                x(r.decode_tps) + 6.0,
                y(r.kld_mean) - 6.0,
                r.cap
            );
        }
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
            w - pad - 150.0,
            pad + 16.0 * i as f64
        );
    }
    s + "</svg>\n"
}

pub fn run(args: SweepArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let base_args = args.model.clone();
    let base = base_args.load()?;
    let top_k = base.model.cfg.n_expert_used;
    if top_k == 0 {
        anyhow::bail!("sweep needs a model with experts");
    }
    let tokenizer =
        Tokenizer::from_gguf(base.model.file.metadata()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokens = tokenizer.encode(&text, true, false);
    let add_bos = if tokenizer.add_bos() {
        tokenizer.bos()
    } else {
        None
    };
    let kl_path = std::env::temp_dir().join(format!("moe-edge-sweep-{}.kld", std::process::id()));
    eprintln!("sweep: base run (top-{top_k}, all experts resident)");
    let r0 = measure(
        &base,
        &tokens,
        add_bos,
        Some(args.chunks),
        args.model.ubatch,
        Some(&kl_path),
        None,
        None,
        false,
    )?;
    eprintln!("sweep: base PPL {:.4}", r0.ppl);
    drop(base);
    let mut caps = args.caps.clone();
    if caps.is_empty() {
        caps = vec![top_k, top_k * 3 / 4, top_k / 2, top_k / 4];
        caps.retain(|&c| c >= 1);
        caps.dedup();
    }
    let budgets = if args.budgets.is_empty() {
        vec!["none".to_string()]
    } else {
        args.budgets.clone()
    };
    let mut rows = Vec::new();
    for budget in &budgets {
        let policies = if budget == "none" {
            vec![args.policies[0]]
        } else {
            args.policies.clone()
        };
        for policy in &policies {
            for &cap in &caps {
                let mut a = args.model.clone();
                a.ram_budget = (budget != "none").then(|| budget.clone());
                a.cache_policy = *policy;
                a.router.max_active_experts = (cap < top_k).then_some(cap);
                let loaded = a.load()?;
                let m = &loaded.model;
                // Decode speed and hit rate: greedy from the text's first tokens.
                let mut st = m.new_state(loaded.n_ctx);
                let prompt = &tokens[..tokens.len().min(16)];
                let mut logits = m.forward(&mut st, prompt, LogitsWanted::Last, None)?.logits;
                let before = m.store.stats();
                let t = Instant::now();
                let n_gen = args
                    .n_gen
                    .min(loaded.n_ctx.saturating_sub(prompt.len() + 1));
                for _ in 0..n_gen {
                    let mut best = 0;
                    for (i, &v) in logits.iter().enumerate() {
                        if v > logits[best] {
                            best = i;
                        }
                    }
                    logits = m
                        .forward(&mut st, &[best as u32], LogitsWanted::Last, None)?
                        .logits;
                }
                let tps = n_gen as f64 / t.elapsed().as_secs_f64();
                let hit_rate = m.store.stats().hit_rate_since(&before);
                let r = measure(
                    &loaded,
                    &tokens,
                    add_bos,
                    Some(args.chunks),
                    a.ubatch,
                    None,
                    Some(&kl_path),
                    None,
                    false,
                )?;
                let k = r.kld.clone().unwrap_or_default();
                let row = SweepRow {
                    cap,
                    budget: budget.clone(),
                    policy: policy.to_string(),
                    decode_tps: tps,
                    hit_rate,
                    ppl: r.ppl,
                    kld_mean: k.mean,
                    kld_p99: k.p99,
                    same_top: k.same_top,
                };
                eprintln!(
                    "sweep: cap {cap} budget {budget} {policy}: {:.2} t/s, hits {:.1} %, PPL {:.3}, KL {:.5}",
                    tps,
                    hit_rate * 100.0,
                    r.ppl,
                    k.mean
                );
                rows.push(row);
            }
        }
    }
    let _ = std::fs::remove_file(&kl_path);
    println!("| cap | budget | policy | decode t/s | hit rate | PPL | Δ PPL | mean KL | KL p99 | same top |");
    println!("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.1} % | {:.3} | {:+.2} % | {:.5} | {:.4} | {:.1} % |",
            r.cap,
            r.budget,
            r.policy,
            r.decode_tps,
            r.hit_rate * 100.0,
            r.ppl,
            (r.ppl / r0.ppl - 1.0) * 100.0,
            r.kld_mean,
            r.kld_p99,
            r.same_top * 100.0
        );
    }
    if let Some(p) = &args.out_svg {
        let name = args
            .model
            .model_path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::write(p, plot_svg(&rows, &format!("{name}: quality vs speed")))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &args.out_json {
        let v = serde_json::json!({"base_ppl": r0.ppl, "rows": rows});
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}
