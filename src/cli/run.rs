//! `moe-edge run`: generate text from a prompt, streaming to stdout, with a summary on stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::{LoadedModel, ModelArgs};
use crate::generate::{GenOptions, GenStats, Session};
use crate::sampling::SamplerConfig;
use crate::tokenizer::Tokenizer;
use crate::trace::TraceWriter;

pub const DEFAULT_PROMPT: &str = "Ownership in Rust means";

/// Sampling options with llama.cpp's names and defaults.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy)
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Keep only the K most likely tokens (0 = off)
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: i32,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off)
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 = off)
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for repeating any of the last --repeat-last-n tokens (1 = off)
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: i32,
    /// Subtracted from the logit of every token already present (0 = off)
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a token already present (0 = off)
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed for reproducible sampling
    #[arg(short = 's', long = "seed", default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: Some(self.seed),
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Prompt text (default: a short Rust-themed prompt for the bundled model)
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short = 'f', long = "file", conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// Tokens to generate
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Stop when this text is generated (repeatable)
    #[arg(short = 'r', long = "reverse-prompt", alias = "stop")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Do not add the BOS token even if the model asks for it
    #[arg(long = "no-bos")]
    pub no_bos: bool,
    /// Do not print the prompt before the generated text
    #[arg(long = "no-display-prompt")]
    pub no_display_prompt: bool,
    /// Write the routing trace (JSON Lines: pos, layer, experts, weights) to this file
    #[arg(long = "trace")]
    pub trace: Option<PathBuf>,
    /// Write the summary (timings, memory, expert cache) as JSON to this file
    #[arg(long = "stats-json")]
    pub stats_json: Option<PathBuf>,
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The summary lines (stderr) and JSON after a generation.
pub fn summarize(
    loaded: &LoadedModel,
    stats: &GenStats,
    json_path: Option<&PathBuf>,
) -> Result<()> {
    let m = &loaded.model;
    let store = m.store.stats();
    eprintln!();
    eprintln!(
        "load {:.2} s | prompt {} tokens, {:.1} t/s | generation {} tokens, {:.1} t/s | stop: {}",
        loaded.load_seconds,
        stats.prompt_tokens,
        stats.prompt_tps(),
        stats.generated_tokens,
        stats.generation_tps(),
        stats.stop_reason
    );
    let rss = peak_rss().unwrap_or(0);
    eprintln!(
        "threads {} | kernels {} | peak RSS {:.1} MiB | experts: {}",
        loaded.threads,
        moe_edge_kernels::active_level(),
        rss as f64 / 1048576.0,
        m.store.kind()
    );
    if m.store.kind() == "cached" {
        eprintln!(
            "expert cache: {} slots ({:.1} MiB), hit rate {:.1} % ({} hits, {} misses), {:.1} MiB read, {} evictions, prefetch {} issued / {} used / {} wasted{}",
            store.slots,
            store.capacity_bytes as f64 / 1048576.0,
            store.hit_rate() * 100.0,
            store.hits,
            store.misses,
            store.bytes_read as f64 / 1048576.0,
            store.evictions,
            store.prefetch_issued,
            store.prefetch_used,
            store.prefetch_wasted,
            m.prefetcher
                .accuracy()
                .map(|a| format!(", prediction accuracy {:.1} %", a * 100.0))
                .unwrap_or_default()
        );
    }
    if let Some(p) = json_path {
        let v = serde_json::json!({
            "load_seconds": loaded.load_seconds,
            "threads": loaded.threads,
            "kernels": moe_edge_kernels::active_level().to_string(),
            "generation": stats,
            "prompt_tps": stats.prompt_tps(),
            "generation_tps": stats.generation_tps(),
            "peak_rss_bytes": rss,
            "expert_store": m.store.kind(),
            "expert_cache": store,
            "prefetch_accuracy": m.prefetcher.accuracy(),
            "budget": loaded.plan,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

pub fn prompt_text(prompt: &Option<String>, file: &Option<PathBuf>) -> Result<String> {
    Ok(match (prompt, file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompt file {}", f.display()))?,
        (None, None) => DEFAULT_PROMPT.to_string(),
    })
}

pub fn run(args: RunArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let tokenizer = Tokenizer::from_gguf(model.file.metadata())
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.file.path().display()))?;
    let text = prompt_text(&args.prompt, &args.file)?;
    let tokens = tokenizer.encode(&text, !args.no_bos, true);
    if tokens.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let mut trace = args
        .trace
        .as_ref()
        .map(|p| TraceWriter::create(p))
        .transpose()?;
    let mut session = Session::new(model, &tokenizer, loaded.n_ctx);
    let mut stdout = std::io::stdout().lock();
    if !args.no_display_prompt {
        write!(stdout, "{text}")?;
        stdout.flush()?;
    }
    let t0 = std::time::Instant::now();
    let logits = session.feed(&tokens, args.model.ubatch, trace.as_mut().map(|t| t as _))?;
    let prompt_seconds = t0.elapsed().as_secs_f64();
    let opts = GenOptions {
        max_tokens: args.n_predict,
        sampler: args.sampling.config(),
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        ubatch: args.model.ubatch,
    };
    let (_, mut stats) = session.generate(
        logits,
        &opts,
        &mut |piece| {
            stdout.write_all(piece.as_bytes())?;
            stdout.flush()?;
            Ok(())
        },
        trace.as_mut().map(|t| t as _),
    )?;
    writeln!(stdout)?;
    stats.prompt_tokens = tokens.len();
    stats.prompt_seconds = prompt_seconds;
    if let Some(t) = trace {
        let n = t.finish()?;
        eprintln!(
            "wrote {n} routing records to {}",
            args.trace.as_ref().unwrap().display()
        );
    }
    summarize(&loaded, &stats, args.stats_json.as_ref())
}
