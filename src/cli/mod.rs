//! The `moe-edge` command line: one module per subcommand, shared model-loading options here.

pub mod bench;
pub mod chat;
pub mod fit;
pub mod inspect;
pub mod logits;
pub mod perplexity;
pub mod routing_stats;
pub mod run;
pub mod simulate;
pub mod sweep;
pub mod synth;
pub mod tokenize;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::budget::{self, BudgetPlan};
use crate::experts::{CacheConfig, CachedExpertStore, ContextModel, EvictionPolicy};
use crate::gguf::GgufFile;
use crate::model::{KvType, KvTypes, Model};

/// The model bundled in the repository, used when no `-m` is given.
pub const BUNDLED_MODEL: &str = "models/rustdoc-moe-q8_0.gguf";

/// Finds the bundled model: `MOE_EDGE_MODEL`, then beside the working directory, then in the
/// source tree the binary was built from.
pub fn bundled_model_path() -> PathBuf {
    if let Ok(p) = std::env::var("MOE_EDGE_MODEL") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(BUNDLED_MODEL);
    if local.exists() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_MODEL)
}

/// Builds rayon's global pool with `threads` compute threads (default: all cores), once; a
/// second call (tests, sweeps, a second model in one process) keeps the pool already built.
/// Workers get the main thread's 8 MiB stack, since commands run on a worker.
pub fn build_pool(threads: Option<usize>) -> Result<()> {
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if n == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    if rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(8 << 20)
        .build_global()
        .is_err()
    {
        log::debug!(
            "thread pool already running with {} threads",
            rayon::current_num_threads()
        );
    }
    Ok(())
}

/// Options shared by every command that loads a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file (default: the bundled model, models/rustdoc-moe-q8_0.gguf)
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,

    /// Threads for computation (default: all cores)
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,

    /// Context size in tokens (default: the model's training context, at most 4096)
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,

    /// Hard RAM budget, e.g. 1.5G or 800M: only routed experts stay resident, in a cache sized
    /// by what the non-expert weights, KV cache and working memory leave. Without it: all experts
    /// resident if the model fits in 80 % of the box's memory (cgroup limit or MemAvailable),
    /// else that 80 % becomes the budget.
    #[arg(long = "ram-budget", value_name = "SIZE")]
    pub ram_budget: Option<String>,

    /// Expert cache eviction policy. `context` (default) evicts the expert with the longest
    /// estimated time to its next use, its chance of use learned from the layer's recent routing
    /// and from what followed the same set of experts before; `reuse` is that estimate without
    /// the sets. `context` came closest to Belady's optimum on the bundled and a synthetic
    /// model's traces (BENCHMARKS.md)
    #[arg(long = "cache-policy", value_enum, default_value_t = EvictionPolicy::Context)]
    pub cache_policy: EvictionPolicy,

    /// Keep these experts resident under a RAM budget (layer:expert list, e.g. 0:3,1:7,2:*, or
    /// @FILE with items per line)
    #[arg(long = "pin-experts", value_name = "LIST")]
    pub pin_experts: Option<String>,

    /// Under a RAM budget, predict the next layer's experts (its router applied to the current
    /// hidden state) and load misses in the background. Off by default: on a disk-bound box with
    /// near-uniform routing the wrong guesses (about 30 %) cost more reads than the overlap saves
    /// (BENCHMARKS.md)
    #[arg(long = "prefetch")]
    pub prefetch: bool,

    /// Background threads reading experts from disk
    #[arg(long = "io-threads", default_value_t = 4)]
    pub io_threads: usize,

    /// Read experts through the page cache instead of O_DIRECT
    #[arg(long = "no-direct-io")]
    pub no_direct_io: bool,

    /// Keep weights in the file's row layout, served zero-copy from the map. By default Q4_0,
    /// Q4_K, Q5_K, Q6_K and Q8_0 weights are repacked into interleaved row groups for the SIMD
    /// kernels (an owned copy of the same size; under a RAM budget only resident experts are
    /// packed, as they load)
    #[arg(long = "no-repack", alias = "nr")]
    pub no_repack: bool,

    #[command(flatten)]
    pub router: crate::router::RouterArgs,

    /// Measure caps (top-k, 3/4, 1/2, 1/4) and cache policies on this box with its budget and
    /// threads, and run with the best fit (see --target-tps)
    #[arg(long = "fit")]
    pub fit: bool,

    /// With --fit: the decode speed to reach, in tokens/s (the largest cap reaching it wins)
    #[arg(long = "target-tps", requires = "fit")]
    pub target_tps: Option<f64>,

    /// Prompt tokens processed per batch (micro-batch)
    #[arg(long = "ubatch-size", short = 'u', default_value_t = 128)]
    pub ubatch: usize,

    /// KV cache type for K (also -ctk): f16 halves the cache's memory and its reads, as
    /// llama.cpp's default; f32 keeps keys unrounded; q8_0 takes 34 bytes per 32 values (head
    /// sizes that are multiples of 32)
    #[arg(long = "cache-type-k", value_enum, default_value_t = KvType::F16, value_name = "TYPE")]
    pub cache_type_k: KvType,

    /// KV cache type for V (also -ctv): f16 or f32 (a q8_0 V cache needs flash attention in
    /// llama.cpp, which moe-edge does not have)
    #[arg(long = "cache-type-v", value_enum, default_value_t = KvType::F16, value_name = "TYPE")]
    pub cache_type_v: KvType,
}

/// A model ready to run, with how its memory was planned.
pub struct LoadedModel {
    pub model: Model,
    pub n_ctx: usize,
    pub plan: Option<BudgetPlan>,
    pub load_seconds: f64,
    pub threads: usize,
}

impl ModelArgs {
    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(bundled_model_path)
    }

    /// The compute threads: the pool `main` built from `-t`, or one built now (library
    /// callers and tests).
    pub fn init_threads(&self) -> Result<usize> {
        build_pool(self.threads)?;
        Ok(rayon::current_num_threads())
    }

    pub fn open_file(&self) -> Result<Arc<GgufFile>> {
        Ok(Arc::new(GgufFile::open(&self.model_path())?))
    }

    /// Loads the model: all experts mapped, or a budgeted expert cache.
    pub fn load(&self) -> Result<LoadedModel> {
        let start = std::time::Instant::now();
        let threads = self.init_threads()?;
        if self.ubatch == 0 {
            anyhow::bail!("--ubatch-size must be at least 1");
        }
        let file = self.open_file()?;
        let mapped = Model::from_file(file.clone(), None)?;
        if self.fit {
            if !mapped.cfg.is_moe() {
                anyhow::bail!("--fit needs a model with experts");
            }
            let budgeted = self.ram_budget.is_some() || mapped.store.kind() == "cached";
            let chosen = fit::choose(self, mapped.cfg.n_expert_used, budgeted)?;
            drop(mapped);
            return chosen.load();
        }
        let budget_needed_for_address_space = mapped.store.kind() == "cached";
        let cfg = mapped.cfg.clone();
        let n_ctx = match self.ctx_size {
            Some(0) => anyhow::bail!("--ctx-size must be at least 1"),
            Some(c) => c,
            None => cfg.n_ctx_train.min(4096),
        };
        let kv_types = KvTypes {
            k: self.cache_type_k,
            v: self.cache_type_v,
        };
        kv_types.check(&cfg)?;
        let kv = kv_types.cache_bytes(&cfg, n_ctx);
        let ff = mapped
            .weights
            .expert_layouts()
            .iter()
            .flatten()
            .map(|l| l.gate.rows)
            .max()
            .unwrap_or(0);
        let working = budget::RUNTIME_OVERHEAD
            + 3 * file.header().header_len
            + (self.ubatch * 4 * (24 * cfg.n_embd + cfg.n_expert_used * cfg.n_embd + 2 * ff)
                + 8 * cfg.n_vocab) as u64;
        let non_expert = mapped.weights.resident_bytes();
        let layouts = mapped.weights.expert_layouts();
        // The `context` policy's tables (up to about 4 MiB) live beside the slots.
        let working = working
            + match self.cache_policy {
                EvictionPolicy::Context => ContextModel::bytes_for(layouts.len(), cfg.n_expert),
                _ => 0,
            };
        let slot_bytes = CachedExpertStore::slot_bytes_for(&layouts);
        let all_experts: u64 = layouts
            .iter()
            .flatten()
            .map(|l| l.bytes_per_expert() * cfg.n_expert as u64)
            .sum();
        let budget = match &self.ram_budget {
            Some(s) => Some(budget::parse_size(s).context("--ram-budget")?),
            None if budget_needed_for_address_space => None,
            None => {
                let need = non_expert + kv + working + all_experts;
                match budget::box_memory() {
                    Some(avail) if cfg.is_moe() && need > avail / 10 * 8 => {
                        let b = avail / 10 * 8;
                        eprintln!(
                            "moe-edge: the model needs {} with all experts resident, more than 80 % of this box's {}; using a RAM budget of {} (set --ram-budget to choose)",
                            budget::fmt_mib(need),
                            budget::fmt_mib(avail),
                            budget::fmt_mib(b)
                        );
                        Some(b)
                    }
                    _ => None,
                }
            }
        };
        let (mut model, plan) = match budget {
            Some(b) if cfg.is_moe() => {
                let plan =
                    BudgetPlan::new(b, non_expert, kv, working, slot_bytes, cfg.n_expert_used)?;
                let total_experts = cfg.n_expert * layouts.iter().flatten().count();
                let slots = plan.slots.min(total_experts);
                let layouts = layouts
                    .into_iter()
                    .map(|l| l.map(|l| l.with_packing(!self.no_repack)))
                    .collect();
                let store = CachedExpertStore::new(
                    file.path(),
                    layouts,
                    cfg.n_expert,
                    CacheConfig {
                        slots,
                        policy: self.cache_policy,
                        io_threads: self.io_threads,
                        direct_io: !self.no_direct_io,
                        reserve: cfg.n_expert_used,
                    },
                )?;
                let pins = self.pins(&cfg)?;
                if !pins.is_empty() {
                    store.pin(&pins)?;
                }
                drop(mapped);
                file.advise_random();
                let mut m = Model::from_file(file, Some(Arc::new(store)))?;
                if !self.no_repack {
                    m.repack()?;
                }
                m.prefetcher.enabled = self.prefetch;
                log::info!(
                    "RAM budget {}: {} non-expert + {} KV + {} working + {} expert slots of {}",
                    budget::fmt_mib(b),
                    budget::fmt_mib(non_expert),
                    budget::fmt_mib(kv),
                    budget::fmt_mib(working),
                    slots,
                    budget::fmt_mib(slot_bytes)
                );
                (m, Some(BudgetPlan { slots, ..plan }))
            }
            Some(b) => {
                let need = non_expert + kv + working;
                if b < need {
                    anyhow::bail!(
                        "--ram-budget {} is too small for this dense model: it needs at least {}",
                        budget::fmt_mib(b),
                        budget::fmt_mib(need)
                    );
                }
                (mapped, None)
            }
            None => {
                let mut mapped = mapped;
                let packed = if self.no_repack { 0 } else { mapped.repack()? };
                if packed > 0 {
                    log::info!(
                        "repacked {} of weights for the kernels",
                        budget::fmt_mib(packed)
                    );
                }
                // All weights resident: fault them in now, as llama.cpp's mmap does. Packed
                // tensors were read into memory of their own; what stays mapped then (token
                // embeddings, looked up by row) faults in as used.
                if packed == 0 {
                    file.populate();
                }
                (mapped, None)
            }
        };
        if cfg.is_moe() {
            model.router.caps = self
                .router
                .to_caps(
                    model.cfg.n_layer,
                    model.cfg.n_expert,
                    model.cfg.n_expert_used,
                )
                .context("routing flags")?;
        } else if !self
            .router
            .to_caps(1, 1, 1)
            .map(|c| c.is_plain())
            .unwrap_or(false)
        {
            anyhow::bail!("routing flags (--max-active-experts, --expert-mask, ...) need a model with experts");
        }
        model.prefetcher.enabled &= self.prefetch;
        model.kv_types = kv_types;
        Ok(LoadedModel {
            model,
            n_ctx,
            plan,
            load_seconds: start.elapsed().as_secs_f64(),
            threads,
        })
    }

    /// Parses --pin-experts into (layer, expert) pairs.
    pub fn pins(&self, cfg: &crate::model::Config) -> Result<Vec<(usize, usize)>> {
        match &self.pin_experts {
            None => Ok(Vec::new()),
            Some(spec) => crate::router::caps::parse_expert_list(spec, cfg.n_layer, cfg.n_expert)
                .context("--pin-experts"),
        }
    }
}
