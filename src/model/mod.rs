//! A loaded model: `Config` (blueprint), `Weights` (mapped tensors), an `ExpertStore`, and the
//! forward pass over a `State` (KV cache and scratch).

pub mod config;
pub mod decode_timing;
mod forward;
pub mod kv_cache;
pub mod linalg;
mod moe;
mod pool;
pub mod prefetch;
mod scratch;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

pub use config::{Arch, Config};
pub use forward::{ForwardOutput, LogitsWanted, RouteObserver, State};
pub use kv_cache::{KvType, KvTypes};
pub use weights::Weights;

use crate::experts::{
    CacheConfig, CachedExpertStore, EvictionPolicy, ExpertStore, MappedExpertStore,
};

/// Expert cache size when the file cannot be mapped whole and no budget was given (32-bit).
pub const DEFAULT_WINDOWED_CACHE: u64 = if cfg!(target_pointer_width = "32") {
    256 << 20
} else {
    1 << 30
};
use crate::gguf::GgufFile;
use crate::router::{Router, RouterCaps};

pub struct Model {
    pub cfg: Config,
    pub weights: Weights,
    pub router: Router,
    pub store: Arc<dyn ExpertStore>,
    pub prefetcher: prefetch::Prefetcher,
    /// Kept alive for the views in `weights`.
    pub file: Arc<GgufFile>,
    /// Element types of the KV caches of new states (default f16, as llama.cpp).
    pub kv_types: KvTypes,
}

impl Model {
    /// Opens a GGUF file and loads it with all experts served from the mapping.
    pub fn open(path: &Path) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path)?);
        Model::from_file(file, None)
    }

    /// Loads a model from an open file; `store` replaces the default mapped expert store.
    pub fn from_file(file: Arc<GgufFile>, store: Option<Arc<dyn ExpertStore>>) -> Result<Model> {
        let cfg = Config::from_gguf(&file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.path().display()))?;
        let weights = Weights::load(&file, &cfg)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.path().display()))?;
        let store: Arc<dyn ExpertStore> = match store {
            Some(s) => s,
            None if cfg.is_moe() && !file.is_mapped_whole() => {
                // The address space cannot hold the file: experts are read into a cache.
                let layouts = weights.expert_layouts();
                let slot = CachedExpertStore::slot_bytes_for(&layouts).max(1);
                let total = cfg.n_expert * layouts.iter().flatten().count();
                let slots = ((DEFAULT_WINDOWED_CACHE / slot) as usize)
                    .clamp(cfg.n_expert_used.max(1), total.max(1));
                log::info!(
                    "experts are read into a {slots}-slot cache (the file is not mapped whole)"
                );
                Arc::new(CachedExpertStore::new(
                    file.path(),
                    layouts,
                    cfg.n_expert,
                    CacheConfig {
                        slots,
                        policy: EvictionPolicy::Context,
                        io_threads: 2,
                        direct_io: true,
                        reserve: cfg.n_expert_used,
                    },
                )?)
            }
            None => Arc::new(MappedExpertStore::new(
                &file,
                &weights.expert_layouts(),
                cfg.n_expert,
            )?),
        };
        let router = Router {
            n_expert: cfg.n_expert,
            n_expert_used: cfg.n_expert_used,
            renormalize: cfg.arch.renormalizes_topk(),
            weights_scale: cfg.expert_weights_scale,
            caps: RouterCaps::none(),
        };
        let prefetcher = prefetch::Prefetcher::new(cfg.n_layer, store.kind() == "cached");
        Ok(Model {
            cfg,
            weights,
            router,
            store,
            file,
            prefetcher,
            kv_types: KvTypes::default(),
        })
    }

    /// Repacks resident weights and experts into the kernels' packed layout where the active
    /// kernel level has a packed kernel (an owned copy of each packed tensor, llama.cpp's
    /// "repack"). A mapped store is replaced by one holding packed copies; another store keeps
    /// its own layout (a cached store packs its slots as they load if it was built from layouts
    /// `with_packing(true)`), and the forward pass follows it. Returns the bytes packed.
    pub fn repack(&mut self) -> Result<u64> {
        let mapped = self.store.kind() == "mapped";
        let pack_experts = mapped || self.store.packs_experts();
        let mut packed = self
            .weights
            .repack(&self.file, pack_experts)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.file.path().display()))?;
        if mapped && self.cfg.is_moe() {
            let layouts = self.weights.expert_layouts();
            packed += layouts
                .iter()
                .flatten()
                .flat_map(|l| [&l.gate, &l.up, &l.down])
                .filter(|t| t.packed)
                .map(|t| t.bytes_per_expert * self.cfg.n_expert as u64)
                .sum::<u64>();
            self.store = Arc::new(MappedExpertStore::new(
                &self.file,
                &layouts,
                self.cfg.n_expert,
            )?);
        }
        Ok(packed)
    }

    pub fn new_state(&self, n_ctx: usize) -> State {
        State::new(&self.cfg, n_ctx, self.kv_types)
    }
}
