//! The expert store: the only way the forward pass reaches expert weights.
//!
//! `MappedExpertStore` serves experts straight from the memory-mapped file (all experts
//! resident, llama.cpp's behaviour). `CachedExpertStore` keeps only routed experts resident in a
//! fixed pool of slots under a RAM budget, reading misses by positional reads.

mod cached;
mod context;
mod mapped;
mod reuse;

use anyhow::Result;
use serde::Serialize;

pub use cached::{CacheConfig, CachedExpertStore, EvictionPolicy};
pub use context::{density_score, ContextModel};
pub use mapped::MappedExpertStore;
pub use reuse::ReuseEstimator;

/// One expert's three matrices (ggml row layout, types and shapes from `ExpertLayout`).
#[derive(Clone, Copy)]
pub struct ExpertBytes<'a> {
    pub gate: &'a [u8],
    pub up: &'a [u8],
    pub down: &'a [u8],
}

/// Counters a store keeps. All byte figures are of expert weights.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreStats {
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub bytes_read: u64,
    pub evictions: u64,
    pub prefetch_issued: u64,
    /// Prefetched experts that were then used before being evicted.
    pub prefetch_used: u64,
    /// Prefetched experts evicted (or still unused) without being used.
    pub prefetch_wasted: u64,
    pub resident_bytes: u64,
    pub capacity_bytes: u64,
    pub slots: u64,
}

impl StoreStats {
    pub fn hit_rate(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.hits as f64 / self.requests as f64
        }
    }

    /// The hit rate of the requests made since `before` (a snapshot of the same store).
    pub fn hit_rate_since(&self, before: &StoreStats) -> f64 {
        let requests = self.requests - before.requests;
        if requests == 0 {
            1.0
        } else {
            (self.hits - before.hits) as f64 / requests as f64
        }
    }
}

/// Called by `with_experts_as_ready` with positions in the requested list and their bytes.
pub type ReadyFn<'f> = dyn FnMut(&[usize], &[ExpertBytes<'_>]) -> Result<()> + 'f;

/// Access to expert weights by (layer, expert id).
pub trait ExpertStore: Send + Sync {
    /// A short name for logs ("mapped", "cached").
    fn kind(&self) -> &'static str;

    /// The most experts one `with_experts` call may ask for at once.
    fn max_batch(&self) -> usize {
        usize::MAX
    }

    /// Hint that these experts of `layer` will be needed soon. Must not block on I/O.
    fn prefetch(&self, _layer: usize, _experts: &[usize]) {}

    /// Makes `experts` of `layer` resident and runs `f` with their bytes, in the order asked.
    /// The experts stay resident until `f` returns.
    fn with_experts(
        &self,
        layer: usize,
        experts: &[usize],
        f: &mut dyn FnMut(&[ExpertBytes<'_>]) -> Result<()>,
    ) -> Result<()>;

    /// Like `with_experts`, but calls `f` as experts become resident: first all that already
    /// are, then each batch of loads as it completes, so computing on the resident experts
    /// overlaps the reads of the missing ones. `f` gets positions in `experts` and their bytes;
    /// every expert is passed exactly once.
    fn with_experts_as_ready(
        &self,
        layer: usize,
        experts: &[usize],
        f: &mut ReadyFn<'_>,
    ) -> Result<()> {
        let all: smallvec::SmallVec<[usize; 16]> = (0..experts.len()).collect();
        self.with_experts(layer, experts, &mut |views| f(&all, views))
    }

    /// Whether this store hands out experts in the kernels' packed layout (where their
    /// `ExpertLayout` marks a tensor packed). The forward pass must use the same layouts.
    fn packs_experts(&self) -> bool {
        false
    }

    /// Whether an expert is resident now (for cache-aware routing). Mapped stores say yes.
    fn is_resident(&self, _layer: usize, _expert: usize) -> bool {
        true
    }

    fn stats(&self) -> StoreStats;
}
