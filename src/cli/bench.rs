//! `moe-edge bench`: like llama-bench. Prompt processing and generation tokens/s (mean ± sd over
//! repetitions, excluding load, tokenization and sampling), with the memory-bandwidth roofline
//! for generation: bytes of weights touched per token ÷ a read bandwidth measured here.

use crate::rng::XorShift64;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use rayon::prelude::*;

use super::ModelArgs;
use crate::model::decode_timing::{self, DecodeTiming};
use crate::model::weights::Ffn;
use crate::model::{LogitsWanted, Model};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens (0 skips the prompt test)
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens (0 skips the generation test)
    #[arg(short = 'n', long = "n-gen", default_value_t = 32)]
    pub n_gen: usize,
    /// Tokens already in the context (KV cache) when each test starts, as llama-bench's
    /// `-d`: generation at depth d reads d cached positions per layer and token
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    pub n_depth: usize,
    /// Repetitions of each test
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub reps: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Skip the memory-bandwidth measurement
    #[arg(long = "no-roofline")]
    pub no_roofline: bool,
    /// Also report where generation's time goes: the decode pool's parallel regions (how busy
    /// their threads were, how long the main thread waited for their last tasks) and the
    /// serial work between them. Reads the clock twice per task
    #[arg(long)]
    pub timing: bool,
}

/// Bytes of weights one decoded token reads: every non-expert matrix except the embedding table
/// (one row), plus the routed experts of each MoE layer (`top_k`, or fewer under router caps).
pub fn bytes_per_token(model: &Model, top_k: usize) -> u64 {
    let w = &model.weights;
    let m = |x: &crate::model::weights::Matrix| x.bytes().len() as u64;
    let mut total = m(&w.output) + w.token_embd.row_bytes() as u64;
    for (il, l) in w.layers.iter().enumerate() {
        let experts_per_token = model.router.caps.cap_for(il, top_k);
        total += m(&l.wq) + m(&l.wk) + m(&l.wv) + m(&l.wo);
        match &l.ffn {
            Ffn::Dense(d) => total += m(&d.gate) + m(&d.up) + m(&d.down),
            Ffn::Moe {
                router,
                experts,
                shared,
            } => {
                total += m(router) + experts.bytes_per_expert() * experts_per_token as u64;
                if let Some(s) = shared {
                    total += m(&s.ffn.gate) + m(&s.ffn.up) + m(&s.ffn.down);
                }
            }
        }
    }
    total
}

/// Bytes the bandwidth probe reads (16 times this machine's 32 MiB L3).
const PROBE_BYTES: usize = 512 << 20;

/// Read bandwidth in bytes/s with the pool's threads over a buffer of `bytes`, each thread
/// streaming its own share with the widest loads the CPU has (best of 5 passes).
pub fn measure_read_bandwidth(bytes: usize) -> f64 {
    // Backed like the packed weights (huge pages where allowed), so the probe reads memory the
    // way decode does.
    let mut buf = crate::pages::zeroed_weight_buffer(bytes);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = i as u8;
    }
    let threads = rayon::current_num_threads();
    let chunk = bytes.div_ceil(threads).next_multiple_of(4096);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(chunk)
            .map(moe_edge_kernels::stream_read)
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        best = best.max(bytes as f64 / t.elapsed().as_secs_f64());
    }
    best
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

/// [`DecodeTiming`] over every generation repetition, with their wall time.
#[derive(Default)]
struct TimingTotals {
    wall: Duration,
    pool: DecodeTiming,
}

/// One generated token's share of [`TimingTotals`]: counts, milliseconds, and the threads'
/// busy share of the regions.
#[derive(serde::Serialize)]
struct TimingPerToken {
    ms: f64,
    regions: f64,
    tasks: f64,
    region_ms: f64,
    serial_ms: f64,
    tail_wait_ms: f64,
    /// Task time over region time times threads.
    busy_fraction: f64,
}

impl TimingTotals {
    fn add(&mut self, wall: Duration, t: DecodeTiming) {
        self.wall += wall;
        self.pool += t;
    }

    fn per_token(&self, tokens: usize, threads: usize) -> Option<TimingPerToken> {
        if tokens == 0 {
            return None;
        }
        let n = tokens as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / n;
        let p = &self.pool;
        let region_s = p.region.as_secs_f64();
        Some(TimingPerToken {
            ms: ms(self.wall),
            regions: p.regions as f64 / n,
            tasks: p.tasks as f64 / n,
            region_ms: ms(p.region),
            serial_ms: ms(self.wall.saturating_sub(p.region)),
            tail_wait_ms: ms(p.tail_wait),
            busy_fraction: if region_s > 0.0 {
                p.busy.as_secs_f64() / (region_s * threads.max(1) as f64)
            } else {
                0.0
            },
        })
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let mut margs = args.model.clone();
    if margs.ctx_size.is_none() {
        margs.ctx_size = Some((args.n_depth + args.n_prompt.max(args.n_gen)).max(1));
    }
    // Measure the read bandwidth before the model is loaded: the 512 MiB probe buffer is freed
    // again before any weight is resident, so it never counts against a RAM budget (the probes
    // between repetitions run only with every expert in RAM, see below).
    let mut bandwidth = if args.no_roofline {
        None
    } else {
        margs.init_threads()?;
        Some(measure_read_bandwidth(PROBE_BYTES))
    };
    let mut probes = 1;
    let loaded = margs.load()?;
    let model = &loaded.model;
    let reps = args.reps.max(1);
    let vocab = model.cfg.n_vocab as u32;
    // Deterministic pseudo-random tokens, as llama-bench uses random tokens.
    let mut rng = XorShift64(0x9E37_79B9_7F4A_7C15);
    let mut next_token = move || rng.below(vocab as u64) as u32;
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    // Warm-up: one short run touches the weights (and fills an expert cache). Like
    // llama-bench, every repetition then reuses this state with its context cleared, so the
    // timed runs do not fault in fresh buffers, and decode keeps its logits in place as
    // generation does.
    let mut st = model.new_state(loaded.n_ctx);
    let warm: Vec<u32> = (0..4.min(loaded.n_ctx)).map(|_| next_token()).collect();
    model.forward_in_place(&mut st, &warm, LogitsWanted::Last, None)?;
    // The context each test starts from (not timed).
    let depth: Vec<u32> = (0..args.n_depth).map(|_| next_token()).collect();
    let fill = |st: &mut crate::model::State| -> Result<()> {
        st.truncate(0);
        for chunk in depth.chunks(margs.ubatch) {
            model.forward_in_place(st, chunk, LogitsWanted::Last, None)?;
        }
        Ok(())
    };
    let store_before = model.store.stats();
    let mut timing = TimingTotals::default();
    for _ in 0..reps {
        if args.n_prompt > 0 {
            let toks: Vec<u32> = (0..args.n_prompt).map(|_| next_token()).collect();
            fill(&mut st)?;
            let t = Instant::now();
            for chunk in toks.chunks(margs.ubatch) {
                model.forward_in_place(&mut st, chunk, LogitsWanted::Last, None)?;
            }
            pp.push(args.n_prompt as f64 / t.elapsed().as_secs_f64());
        }
        if args.n_gen > 0 {
            fill(&mut st)?;
            decode_timing::enable(args.timing);
            decode_timing::take();
            let t = Instant::now();
            for _ in 0..args.n_gen {
                model.forward_in_place(&mut st, &[next_token()], LogitsWanted::Last, None)?;
            }
            let wall = t.elapsed();
            decode_timing::enable(false);
            tg.push(args.n_gen as f64 / wall.as_secs_f64());
            timing.add(wall, decode_timing::take());
        }
        // The memory's speed drifts on a shared machine: probe again after every repetition
        // and keep the best, so the roofline is the most the memory gave during the run. Only
        // with every expert in RAM (a budgeted run decodes from disk, and its budget must not
        // take a probe buffer's worth of extra memory).
        if let Some(best) = bandwidth
            .as_mut()
            .filter(|_| model.store.kind() == "mapped")
        {
            *best = best.max(measure_read_bandwidth(PROBE_BYTES));
            probes += 1;
        }
    }
    let store = model.store.stats();
    let weights_per_token = bytes_per_token(model, model.cfg.n_expert_used);
    // Each generated token also reads the cached keys and values of every position up to its
    // own: token i (from 0) of a test at depth d reads d + i + 1, so d + (n_gen + 1) / 2 on
    // average.
    let mean_positions = args.n_depth as f64 + (args.n_gen + 1) as f64 / 2.0;
    let kv_per_position = st.kv_types().cache_bytes(&model.cfg, 1) as f64;
    let kv_per_token = (kv_per_position * mean_positions) as u64;
    let per_token = weights_per_token + kv_per_token;
    let (pp_m, pp_sd) = if pp.is_empty() {
        (0.0, 0.0)
    } else {
        mean_sd(&pp)
    };
    let (tg_m, tg_sd) = if tg.is_empty() {
        (0.0, 0.0)
    } else {
        mean_sd(&tg)
    };
    let roofline = bandwidth.map(|b| b / per_token as f64);
    let misses = store.misses - store_before.misses;
    let requests = store.requests - store_before.requests;
    let name = model
        .file
        .path()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if args.json {
        let v = serde_json::json!({
            "model": name, "threads": loaded.threads, "kernels": moe_edge_kernels::active_level().to_string(),
            "n_prompt": args.n_prompt, "n_gen": args.n_gen, "n_depth": args.n_depth, "repetitions": reps,
            "cache_type_k": st.kv_types().k.to_string(), "cache_type_v": st.kv_types().v.to_string(),
            "pp_tps": pp, "pp_mean": pp_m, "pp_sd": pp_sd, "tg_tps": tg, "tg_mean": tg_m, "tg_sd": tg_sd,
            "bytes_per_token": per_token, "weight_bytes_per_token": weights_per_token,
            "kv_bytes_per_token": kv_per_token, "read_bandwidth": bandwidth, "bandwidth_probes": probes, "roofline_tps": roofline,
            "roofline_fraction": roofline.filter(|_| !tg.is_empty()).map(|r| tg_m / r),
            "expert_store": model.store.kind(), "expert_requests": requests, "expert_misses": misses,
            "expert_bytes_read": store.bytes_read - store_before.bytes_read,
            "budget": loaded.plan,
            "decode_timing": timing.per_token(tg.len() * args.n_gen, loaded.threads).filter(|_| args.timing),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("| model | threads | kernels | experts | test | t/s |");
    println!("| --- | ---: | --- | --- | --- | ---: |");
    let kind = model.store.kind();
    let level = moe_edge_kernels::active_level();
    let at_depth = if args.n_depth > 0 {
        format!(" @ d{}", args.n_depth)
    } else {
        String::new()
    };
    if !pp.is_empty() {
        println!(
            "| {name} | {} | {level} | {kind} | pp{}{at_depth} | {pp_m:.2} ± {pp_sd:.2} |",
            loaded.threads, args.n_prompt
        );
    }
    if !tg.is_empty() {
        println!(
            "| {name} | {} | {level} | {kind} | tg{}{at_depth} | {tg_m:.2} ± {tg_sd:.2} |",
            loaded.threads, args.n_gen
        );
    }
    println!();
    let kv_types = st.kv_types();
    println!(
        "read per generated token: {:.1} MiB of weights + {:.1} MiB of KV cache ({}/{})",
        weights_per_token as f64 / 1048576.0,
        kv_per_token as f64 / 1048576.0,
        kv_types.k,
        kv_types.v
    );
    if let (Some(b), Some(r)) = (bandwidth, roofline) {
        // Without a generation test there is no fraction of the roofline to report.
        let reached = if tg.is_empty() {
            String::new()
        } else {
            format!("; reached {:.0} %", 100.0 * tg_m / r)
        };
        println!(
            "measured read bandwidth: {:.1} GB/s (best of {probes} probes) -> generation roofline {r:.1} t/s{reached}",
            b / 1e9
        );
    }
    if let Some(t) = timing
        .per_token(tg.len() * args.n_gen, loaded.threads)
        .filter(|_| args.timing)
    {
        println!(
            "decode time per token: {:.2} ms = {:.2} ms in {:.0} parallel regions ({:.0} tasks, threads busy {:.0} % of it, main thread waiting {:.0} us for last tasks) + {:.0} us serial between them",
            t.ms,
            t.region_ms,
            t.regions,
            t.tasks,
            100.0 * t.busy_fraction,
            1000.0 * t.tail_wait_ms,
            1000.0 * t.serial_ms
        );
    }
    if kind == "cached" && requests > 0 {
        println!(
            "expert cache: hit rate {:.1} %, {:.1} MiB read from disk during the tests",
            100.0 * (1.0 - misses as f64 / requests as f64),
            (store.bytes_read - store_before.bytes_read) as f64 / 1048576.0
        );
    }
    Ok(())
}
