//! `moe-edge perplexity`: llama-perplexity's measurement. The text is tokenized once (with BOS
//! when the model adds one), cut into chunks of `-c` tokens, each chunk evaluated from an empty
//! cache (its first token replaced by BOS when the model adds one), and the second half of each
//! chunk scored: PPL = exp(mean NLL), with the standard error of the mean NLL as uncertainty.
//!
//! `--kl-divergence-base F` saves the scored positions' log-probabilities (f16) and the tokens;
//! `--kl-divergence F` compares this run against them: KL divergence statistics, the change in
//! log-PPL and the share of positions where both runs rank the same token first. The router-caps
//! work prices every cap this way.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use half::f16;

use super::ModelArgs;
use crate::model::LogitsWanted;
use crate::tokenizer::Tokenizer;
use crate::trace::TraceWriter;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to measure
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Evaluate at most this many chunks
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Save the log-probabilities of this run as the base for --kl-divergence
    #[arg(long = "kl-divergence-base", value_name = "FILE")]
    pub kl_base: Option<PathBuf>,
    /// Compare this run with a saved base (--kl-divergence-base)
    #[arg(
        long = "kl-divergence",
        value_name = "FILE",
        conflicts_with = "kl_base"
    )]
    pub kl: Option<PathBuf>,
    /// Write the routing trace of the run (JSON Lines)
    #[arg(long = "trace")]
    pub trace: Option<PathBuf>,
    /// Print the result as JSON on the last line
    #[arg(long)]
    pub json: bool,
}

const KLD_MAGIC: &[u8; 8] = b"MOEKLD01";

/// Perplexity result, for tools (sweep) that call the measurement directly.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PplResult {
    pub chunks: usize,
    pub n_ctx: usize,
    pub scored_tokens: usize,
    pub ppl: f64,
    pub ppl_err: f64,
    pub seconds: f64,
    pub kld: Option<KldResult>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KldResult {
    pub mean: f64,
    pub mean_err: f64,
    pub max: f64,
    pub p99: f64,
    pub p90: f64,
    pub median: f64,
    pub same_top: f64,
    pub ln_ppl_ratio: f64,
    pub ppl_base: f64,
}

fn log_softmax(row: &[f32], out: &mut Vec<f64>) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    out.clear();
    out.extend(row.iter().map(|&v| v as f64 - lse));
}

fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

struct Base {
    n_ctx: usize,
    n_vocab: usize,
    tokens: Vec<u32>,
    reader: BufReader<std::fs::File>,
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

#[allow(clippy::too_many_arguments)]
/// Measures perplexity of `tokens` (already tokenized) with the loaded model.
pub fn measure(
    loaded: &super::LoadedModel,
    tokens: &[u32],
    add_bos: Option<u32>,
    max_chunks: Option<usize>,
    ubatch: usize,
    kl_base: Option<&PathBuf>,
    kl: Option<&PathBuf>,
    mut trace: Option<&mut TraceWriter>,
    print: bool,
) -> Result<PplResult> {
    let model = &loaded.model;
    let n_ctx = loaded.n_ctx;
    if n_ctx < 4 {
        bail!("-c {n_ctx} is too small for perplexity (at least 4)");
    }
    if tokens.len() < 2 * n_ctx {
        bail!(
            "the text tokenizes to {} tokens; perplexity with -c {n_ctx} needs at least {}",
            tokens.len(),
            2 * n_ctx
        );
    }
    let n_chunk = (tokens.len() / n_ctx)
        .min(max_chunks.unwrap_or(usize::MAX))
        .max(1);
    let n_vocab = model.cfg.n_vocab;
    let first = n_ctx / 2;
    let mut writer = match kl_base {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            let mut w = BufWriter::new(f);
            w.write_all(KLD_MAGIC)?;
            for v in [n_ctx as u32, n_vocab as u32, n_chunk as u32] {
                w.write_all(&v.to_le_bytes())?;
            }
            for &t in &tokens[..n_chunk * n_ctx] {
                w.write_all(&t.to_le_bytes())?;
            }
            Some(w)
        }
        None => None,
    };
    let mut base = match kl {
        Some(p) => {
            let f = std::fs::File::open(p)
                .with_context(|| format!("cannot open KL base {}", p.display()))?;
            let mut r = BufReader::new(f);
            let mut magic = [0u8; 8];
            r.read_exact(&mut magic)
                .with_context(|| format!("{}: not a KL base file", p.display()))?;
            if &magic != KLD_MAGIC {
                bail!("{}: not a moe-edge KL base file (wrong magic)", p.display());
            }
            let bn_ctx = read_u32(&mut r)? as usize;
            let bn_vocab = read_u32(&mut r)? as usize;
            let bn_chunk = read_u32(&mut r)? as usize;
            if bn_ctx != n_ctx || bn_vocab != n_vocab {
                bail!(
                    "{}: base was made with -c {bn_ctx} and {bn_vocab} vocabulary entries; this run has -c {n_ctx} and {n_vocab}",
                    p.display()
                );
            }
            if bn_chunk < n_chunk {
                bail!(
                    "{}: base has {bn_chunk} chunks, this run needs {n_chunk}",
                    p.display()
                );
            }
            let mut btoks = vec![0u32; bn_chunk * bn_ctx];
            for t in btoks.iter_mut() {
                *t = read_u32(&mut r)?;
            }
            if btoks[..n_chunk * n_ctx] != tokens[..n_chunk * n_ctx] {
                bail!(
                    "{}: base was made from different text (tokens differ)",
                    p.display()
                );
            }
            Some(Base {
                n_ctx: bn_ctx,
                n_vocab: bn_vocab,
                tokens: btoks,
                reader: r,
            })
        }
        None => None,
    };
    let _ = base.as_ref().map(|b| (b.n_ctx, b.n_vocab, b.tokens.len()));
    let start = std::time::Instant::now();
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let (mut bnll, mut bnll2) = (0f64, 0f64);
    let mut klds: Vec<f64> = Vec::new();
    let (mut kld_sum, mut kld_sum2, mut same_top) = (0f64, 0f64, 0usize);
    let mut lp = Vec::new();
    let mut blp = vec![0f64; n_vocab];
    let mut bbytes = vec![0u8; n_vocab * 2];
    let mut state = model.new_state(n_ctx);
    if print {
        eprint!("perplexity: {n_chunk} chunks of {n_ctx} tokens: ");
    }
    for c in 0..n_chunk {
        let mut chunk: Vec<u32> = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = add_bos {
            chunk[0] = b;
        }
        state.truncate(0);
        let mut logits = Vec::with_capacity(n_ctx * n_vocab);
        for (i, part) in chunk.chunks(ubatch.max(1)).enumerate() {
            let wanted = if (i + 1) * ubatch.max(1) > first {
                LogitsWanted::All
            } else {
                LogitsWanted::None
            };
            let out = model.forward(
                &mut state,
                part,
                wanted,
                trace.as_deref_mut().map(|t| t as _),
            )?;
            if wanted == LogitsWanted::All {
                let skip = first.saturating_sub(i * ubatch.max(1));
                logits.extend_from_slice(&out.logits[skip.min(part.len()) * n_vocab..]);
            }
        }
        // logits now hold positions first.. of the chunk
        for j in first..n_ctx - 1 {
            let row = &logits[(j - first) * n_vocab..(j - first + 1) * n_vocab];
            log_softmax(row, &mut lp);
            let target = chunk[j + 1] as usize;
            let v = -lp[target];
            nll += v;
            nll2 += v * v;
            count += 1;
            if let Some(w) = writer.as_mut() {
                for &x in &lp {
                    w.write_all(&f16::from_f64(x).to_bits().to_le_bytes())?;
                }
            }
            if let Some(b) = base.as_mut() {
                b.reader
                    .read_exact(&mut bbytes)
                    .context("KL base file is truncated")?;
                for (k, ch) in bbytes.chunks_exact(2).enumerate() {
                    blp[k] = f16::from_bits(u16::from_le_bytes([ch[0], ch[1]])).to_f64();
                }
                let bv = -blp[target];
                bnll += bv;
                bnll2 += bv * bv;
                let mut kld = 0f64;
                for k in 0..n_vocab {
                    let p = blp[k].exp();
                    if p > 0.0 {
                        kld += p * (blp[k] - lp[k]);
                    }
                }
                let kld = kld.max(0.0);
                kld_sum += kld;
                kld_sum2 += kld * kld;
                klds.push(kld);
                if argmax(&blp) == argmax(&lp) {
                    same_top += 1;
                }
            }
        }
        if print {
            eprint!("[{}]{:.4},", c + 1, (nll / count as f64).exp());
        }
    }
    if print {
        eprintln!();
    }
    if let Some(mut w) = writer {
        w.flush()?;
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    let kld = base.map(|_| {
        klds.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = klds.len();
        let pct = |q: f64| klds[((n as f64 - 1.0) * q).round() as usize];
        let kmean = kld_sum / n as f64;
        let kvar = kld_sum2 / n as f64 - kmean * kmean;
        KldResult {
            mean: kmean,
            mean_err: if n > 1 {
                (kvar.max(0.0) / (n - 1) as f64).sqrt()
            } else {
                0.0
            },
            max: klds[n - 1],
            p99: pct(0.99),
            p90: pct(0.90),
            median: pct(0.5),
            same_top: same_top as f64 / n as f64,
            ln_ppl_ratio: mean - bnll / n as f64,
            ppl_base: (bnll / n as f64).exp(),
        }
    });
    let _ = bnll2;
    Ok(PplResult {
        chunks: n_chunk,
        n_ctx,
        scored_tokens: count,
        ppl,
        ppl_err,
        seconds: start.elapsed().as_secs_f64(),
        kld,
    })
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let tokenizer = Tokenizer::from_gguf(model.file.metadata())
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.file.path().display()))?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let tokens = tokenizer.encode(&text, true, false);
    let add_bos = if tokenizer.add_bos() {
        tokenizer.bos()
    } else {
        None
    };
    let mut trace = args
        .trace
        .as_ref()
        .map(|p| TraceWriter::create(p))
        .transpose()?;
    let r = measure(
        &loaded,
        &tokens,
        add_bos,
        args.chunks,
        args.model.ubatch,
        args.kl_base.as_ref(),
        args.kl.as_ref(),
        trace.as_mut(),
        true,
    )?;
    if let Some(t) = trace {
        t.finish()?;
    }
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}  ({} chunks of {}, {} tokens scored, {:.1} s, {:.1} t/s)",
        r.ppl,
        r.ppl_err,
        r.chunks,
        r.n_ctx,
        r.scored_tokens,
        r.seconds,
        (r.chunks * r.n_ctx) as f64 / r.seconds
    );
    if let Some(k) = &r.kld {
        println!("Mean PPL(base)      : {:.4}", k.ppl_base);
        println!("ln(PPL(Q)/PPL(base)): {:+.6}", k.ln_ppl_ratio);
        println!("Mean KLD            : {:.6} ± {:.6}", k.mean, k.mean_err);
        println!("Maximum KLD         : {:.6}", k.max);
        println!("99.0% KLD           : {:.6}", k.p99);
        println!("90.0% KLD           : {:.6}", k.p90);
        println!("Median KLD          : {:.6}", k.median);
        println!("Same top token      : {:.3} %", k.same_top * 100.0);
    }
    if let Some(p) = &args.kl_base {
        println!("saved base log-probabilities to {}", p.display());
    }
    if model.store.kind() == "cached" {
        let s = model.store.stats();
        println!(
            "Expert cache        : hit rate {:.1} % ({} hits, {} misses), {:.1} MiB read",
            s.hit_rate() * 100.0,
            s.hits,
            s.misses,
            s.bytes_read as f64 / 1048576.0
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
