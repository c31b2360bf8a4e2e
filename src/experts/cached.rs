//! `CachedExpertStore`: only routed experts resident, in a fixed pool of slots under a RAM budget.
//!
//! Each slot is an owned buffer big enough for one expert's gate, up and down matrices. A miss
//! picks a victim slot by policy (LRU or LFU with aging; pinned and in-use experts are never
//! evicted) and reads the expert's three byte ranges with positional reads — O_DIRECT through an
//! aligned bounce buffer where the file system allows it, else `pread` followed by
//! `posix_fadvise(DONTNEED)` — so evicted experts leave no page cache behind and a truncated file
//! is an error, not SIGBUS. Loads run on background I/O threads: prefetches are queued without
//! waiting, demand misses are queued together and waited for.

use std::collections::HashMap;

use smallvec::SmallVec;

/// Per-call lists of a layer's experts, on the stack up to 16 (a decode step's top-k).
type Small<T> = SmallVec<[T; 16]>;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use anyhow::{bail, Context, Result};

use super::{ExpertBytes, ExpertStore, StoreStats};
use crate::model::weights::ExpertLayout;

/// How a victim slot is chosen on a miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum EvictionPolicy {
    /// Least recently used.
    Lru,
    /// Least frequently used, with counts halved periodically so old popularity fades.
    Lfu,
    /// Longest estimated time to next use: layers until the expert's layer comes round again
    /// plus a full pass per expected miss (from its recent routing rate). Approximates
    /// Belady's optimum on the layer-cyclic access of decoding (see `moe-edge simulate`).
    Reuse,
    /// `reuse` with the chance of use also learned from what followed the set of experts the
    /// layer routed to last. Closer to Belady's optimum than `reuse` on the bundled model's
    /// routing, equal on random routing (see `moe-edge simulate --policy context`).
    Context,
}

impl std::fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EvictionPolicy::Lru => "lru",
            EvictionPolicy::Lfu => "lfu",
            EvictionPolicy::Reuse => "reuse",
            EvictionPolicy::Context => "context",
        })
    }
}

/// Requests between two halvings of the LFU counts.
const LFU_AGING_PERIOD: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Empty,
    Loading,
    Ready,
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct SlotMeta {
    key: Option<(usize, usize)>,
    state: SlotState,
    in_use: u32,
    pinned: bool,
    last_use: u64,
    freq: u64,
    prefetched_unused: bool,
    /// Matrices (gate, up, down) still being read.
    parts_left: u8,
    /// Bumped on every claim: a part read for an older claim is discarded.
    generation: u64,
}

struct Inner {
    slots: Vec<SlotMeta>,
    index: HashMap<(usize, usize), usize>,
    tick: u64,
    stats: StoreStats,
    last_error: Option<String>,
    /// Routing rates for the `reuse` policy.
    reuse: super::ReuseEstimator,
    /// Set-context estimates for the `context` policy (only with that policy).
    context: Option<super::ContextModel>,
}

struct Shared {
    inner: Mutex<Inner>,
    loaded: Condvar,
    /// Per slot, one buffer per matrix (gate, up, down), so the three are read in parallel.
    buffers: Vec<[RwLock<Vec<u8>>; 3]>,
    layouts: Vec<Option<ExpertLayout>>,
    reader: ExpertReader,
}

/// Reads experts from the model file.
struct ExpertReader {
    path: PathBuf,
    file: File,
    direct: Option<File>,
}

const DIRECT_ALIGN: u64 = 4096;

impl ExpertReader {
    fn open(path: &Path, use_direct: bool) -> Result<ExpertReader> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let direct = if use_direct {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        Ok(ExpertReader {
            path: path.to_path_buf(),
            file,
            direct,
        })
    }

    /// Reads `dst.len()` bytes at `offset`; `bounce` is this thread's aligned scratch.
    fn read(
        &self,
        offset: u64,
        dst: &mut [u8],
        bounce: &mut AlignedBuf,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        if let Some(direct) = &self.direct {
            let start = offset / DIRECT_ALIGN * DIRECT_ALIGN;
            let end = (offset + dst.len() as u64).next_multiple_of(DIRECT_ALIGN);
            let buf = bounce.get((end - start) as usize);
            let mut done = 0usize;
            while done < buf.len() {
                match direct.read_at(&mut buf[done..], start + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => bail!("{}: cannot read {}: {e}", self.path.display(), what()),
                }
            }
            let need = (offset - start) as usize + dst.len();
            if done < need {
                bail!(
                    "{}: {} ends past the end of the file (was the file truncated?)",
                    self.path.display(),
                    what()
                );
            }
            let s = (offset - start) as usize;
            dst.copy_from_slice(&buf[s..s + dst.len()]);
            return Ok(());
        }
        self.file.read_exact_at(dst, offset).with_context(|| {
            format!(
                "{}: cannot read {} (was the file truncated?)",
                self.path.display(),
                what()
            )
        })?;
        // SAFETY: posix_fadvise only gives the kernel advice about this file's page cache; it
        // reads no memory of ours and any failure is harmless.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                dst.len() as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        Ok(())
    }
}

/// A growable buffer whose usable part starts at a `DIRECT_ALIGN` boundary (O_DIRECT needs it).
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    fn get(&mut self, len: usize) -> &mut [u8] {
        let need = len + DIRECT_ALIGN as usize;
        if self.raw.len() < need {
            self.raw = vec![0u8; need];
        }
        let skew = self.raw.as_ptr().align_offset(DIRECT_ALIGN as usize);
        &mut self.raw[skew..skew + len]
    }
}

/// Sizes and behaviour of a cached store.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub slots: usize,
    pub policy: EvictionPolicy,
    pub io_threads: usize,
    pub direct_io: bool,
    /// Slots prefetches must leave for demand loads (one token's experts).
    pub reserve: usize,
}

pub struct CachedExpertStore {
    shared: Arc<Shared>,
    /// (slot, part, generation) reads for the I/O threads.
    jobs: Mutex<Sender<(usize, usize, u64)>>,
    policy: EvictionPolicy,
    slot_bytes: usize,
    n_expert: usize,
    reserve: usize,
    /// Layers that have experts.
    moe_layers: usize,
}

impl CachedExpertStore {
    /// Bytes of the largest expert across layers: every slot has this size.
    pub fn slot_bytes_for(layouts: &[Option<ExpertLayout>]) -> u64 {
        layouts
            .iter()
            .flatten()
            .map(|l| l.bytes_per_expert())
            .max()
            .unwrap_or(0)
    }

    pub fn new(
        path: &Path,
        layouts: Vec<Option<ExpertLayout>>,
        n_expert: usize,
        cfg: CacheConfig,
    ) -> Result<Self> {
        let slot_bytes = Self::slot_bytes_for(&layouts) as usize;
        let moe_layers = layouts.iter().flatten().count();
        if cfg.slots == 0 {
            bail!("the expert cache needs at least one slot");
        }
        let reader = ExpertReader::open(path, cfg.direct_io)?;
        log::info!(
            "expert cache: {} slots of {} bytes, policy {}, {} I/O threads, {}",
            cfg.slots,
            slot_bytes,
            cfg.policy,
            cfg.io_threads,
            if reader.direct.is_some() {
                "O_DIRECT reads"
            } else {
                "buffered reads + DONTNEED"
            }
        );
        let empty = SlotMeta {
            key: None,
            state: SlotState::Empty,
            in_use: 0,
            pinned: false,
            last_use: 0,
            freq: 0,
            prefetched_unused: false,
            parts_left: 0,
            generation: 0,
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                slots: vec![empty; cfg.slots],
                index: HashMap::new(),
                tick: 0,
                stats: StoreStats {
                    capacity_bytes: (cfg.slots * slot_bytes) as u64,
                    slots: cfg.slots as u64,
                    ..StoreStats::default()
                },
                last_error: None,
                reuse: super::ReuseEstimator::new(layouts.len(), n_expert, cfg.reserve),
                context: (cfg.policy == EvictionPolicy::Context)
                    .then(|| super::ContextModel::new(layouts.len(), n_expert, cfg.reserve)),
            }),
            loaded: Condvar::new(),
            buffers: (0..cfg.slots)
                .map(|_| std::array::from_fn(|_| RwLock::new(Vec::new())))
                .collect(),
            layouts,
            reader,
        });
        let (tx, rx) = channel::<(usize, usize, u64)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..cfg.io_threads.max(1) {
            let shared = shared.clone();
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("expert-io-{i}"))
                .spawn(move || {
                    let mut bounce = AlignedBuf { raw: Vec::new() };
                    let mut scratch = Vec::new();
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((slot, part, generation)) = job else {
                            break;
                        };
                        load_part(&shared, slot, part, generation, &mut bounce, &mut scratch);
                    }
                })
                .context("cannot start an expert I/O thread")?;
        }
        Ok(CachedExpertStore {
            shared,
            jobs: Mutex::new(tx),
            policy: cfg.policy,
            slot_bytes,
            n_expert,
            reserve: cfg.reserve,
            moe_layers,
        })
    }

    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Loads and pins experts so they are never evicted.
    pub fn pin(&self, experts: &[(usize, usize)]) -> Result<()> {
        for &(layer, e) in experts {
            self.check(layer, e)?;
            let slot = {
                let mut inner = self.lock();
                let pinned = inner.slots.iter().filter(|s| s.pinned).count();
                if pinned + 1 >= inner.slots.len() {
                    bail!("cannot pin expert {layer}:{e}: pins would fill the expert cache ({} slots)", inner.slots.len());
                }
                let slot = self.claim(&mut inner, layer, e, false)?;
                inner.slots[slot].pinned = true;
                slot
            };
            self.wait_ready(&[slot])?;
            self.lock().slots[slot].in_use -= 1;
        }
        Ok(())
    }

    /// The experts resident now, as (layer, expert) pairs.
    pub fn resident(&self) -> Vec<(usize, usize)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner.index.keys().copied().collect();
        v.sort();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, layer: usize, e: usize) -> Result<()> {
        match self.shared.layouts.get(layer) {
            Some(Some(_)) if e < self.n_expert => Ok(()),
            Some(Some(_)) => bail!(
                "expert {e} of layer {layer} does not exist ({} experts)",
                self.n_expert
            ),
            _ => bail!("layer {layer} has no experts"),
        }
    }

    /// Finds or starts loading `(layer, e)` and marks it in use. Returns its slot.
    fn claim(&self, inner: &mut Inner, layer: usize, e: usize, prefetch: bool) -> Result<usize> {
        inner.tick += 1;
        let tick = inner.tick;
        if !prefetch {
            inner.stats.requests += 1;
            if inner.stats.requests.is_multiple_of(LFU_AGING_PERIOD) {
                inner.slots.iter_mut().for_each(|s| s.freq /= 2);
            }
        }
        if let Some(&slot) = inner.index.get(&(layer, e)) {
            let s = &mut inner.slots[slot];
            if !prefetch {
                s.last_use = tick;
                s.freq += 1;
                s.in_use += 1;
                if s.prefetched_unused {
                    s.prefetched_unused = false;
                    inner.stats.prefetch_used += 1;
                }
                inner.stats.hits += 1;
            }
            return Ok(slot);
        }
        let victim = self.victim(inner).with_context(|| {
            format!(
                "the expert cache has no free slot ({} slots, all in use or pinned): raise --ram-budget",
                inner.slots.len()
            )
        })?;
        let old = inner.slots[victim];
        if let Some(k) = old.key {
            inner.index.remove(&k);
            inner.stats.evictions += 1;
            inner.stats.resident_bytes -= self.expert_bytes(k.0);
            if old.prefetched_unused {
                inner.stats.prefetch_wasted += 1;
            }
        }
        inner.slots[victim] = SlotMeta {
            key: Some((layer, e)),
            state: SlotState::Loading,
            in_use: if prefetch { 0 } else { 1 },
            pinned: false,
            last_use: tick,
            freq: if prefetch { 0 } else { 1 },
            prefetched_unused: prefetch,
            parts_left: 3,
            generation: old.generation + 1,
        };
        let generation = old.generation + 1;
        inner.index.insert((layer, e), victim);
        inner.stats.resident_bytes += self.expert_bytes(layer);
        if prefetch {
            inner.stats.prefetch_issued += 1;
        } else {
            inner.stats.misses += 1;
        }
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for part in 0..3 {
            jobs.send((victim, part, generation))
                .map_err(|_| anyhow::anyhow!("the expert I/O threads have stopped"))?;
        }
        Ok(victim)
    }

    fn expert_bytes(&self, layer: usize) -> u64 {
        self.shared.layouts[layer]
            .as_ref()
            .map(|l| l.bytes_per_expert())
            .unwrap_or(0)
    }

    fn victim(&self, inner: &Inner) -> Option<usize> {
        // Freshly prefetched experts are about to be used: evict them only when nothing else
        // can go (tier 1), so a prefetch is not undone by the demand loads it raced with.
        let mut best: Option<((u64, u64, u64), usize)> = None;
        for (i, s) in inner.slots.iter().enumerate() {
            if s.state == SlotState::Empty {
                return Some(i);
            }
            if s.pinned || s.in_use > 0 || s.state == SlotState::Loading {
                continue;
            }
            let (a, b) = match self.policy {
                EvictionPolicy::Lru => (s.last_use, 0),
                EvictionPolicy::Lfu => (s.freq, s.last_use),
                EvictionPolicy::Reuse => {
                    let (l, e) = s.key.unwrap_or((0, 0));
                    let steps = inner.reuse.steps_to_next_use(l, e);
                    (u64::MAX - (steps * 1024.0) as u64, s.last_use)
                }
                EvictionPolicy::Context => {
                    let (l, e) = s.key.unwrap_or((0, 0));
                    let steps = inner
                        .context
                        .as_ref()
                        .map_or(0.0, |c| c.steps_to_next_use(l, e));
                    (u64::MAX - (steps * 1024.0) as u64, s.last_use)
                }
            };
            let key = if s.state == SlotState::Failed {
                (0, 0, 0)
            } else {
                // Protection lasts about one layer's worth of requests: a wrong prediction
                // must not stay sticky.
                let fresh = s.prefetched_unused
                    && inner.tick - s.last_use <= 4 * self.reserve.max(1) as u64;
                (fresh as u64, a, b)
            };
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, i));
            }
        }
        best.map(|b| b.1)
    }

    /// Finds or starts loading every expert and marks its slot in use (released by `release`).
    fn claim_all(&self, layer: usize, experts: &[usize]) -> Result<Small<usize>> {
        for &e in experts {
            self.check(layer, e)?;
        }
        let mut slots = Small::new();
        let mut inner = self.lock();
        // Consecutive calls for one layer are one visit split into batches (when the model
        // has more than one MoE layer; with one, every call is a new visit).
        let continued = self.moe_layers > 1 && inner.reuse.current_layer() == layer;
        inner.reuse.record(layer, experts, continued);
        let Inner { reuse, context, .. } = &mut *inner;
        if let Some(c) = context {
            c.record(layer, experts, continued, reuse);
        }
        for &e in experts {
            // Slots still loading a prefetch cannot be evicted yet: wait for them rather than
            // fail when nothing else is free.
            while !inner.index.contains_key(&(layer, e))
                && self.victim(&inner).is_none()
                && inner
                    .slots
                    .iter()
                    .any(|s| s.state == SlotState::Loading && s.in_use == 0)
            {
                inner = self
                    .shared
                    .loaded
                    .wait(inner)
                    .unwrap_or_else(|e| e.into_inner());
            }
            match self.claim(&mut inner, layer, e, false) {
                Ok(s) => slots.push(s),
                Err(err) => {
                    for &s in &slots {
                        inner.slots[s].in_use -= 1;
                    }
                    return Err(err);
                }
            }
        }
        Ok(slots)
    }

    fn release(&self, slots: &[usize]) {
        let mut inner = self.lock();
        for &s in slots {
            inner.slots[s].in_use -= 1;
        }
    }

    /// Runs `f` on the bytes of ready `slots`.
    fn run_on(
        &self,
        slots: &[usize],
        f: &mut dyn FnMut(&[ExpertBytes<'_>]) -> Result<()>,
    ) -> Result<()> {
        let guards: SmallVec<[[_; 3]; 16]> = slots
            .iter()
            .map(|&s| {
                std::array::from_fn(|p| {
                    self.shared.buffers[s][p]
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                })
            })
            .collect();
        let views: Small<ExpertBytes<'_>> = guards
            .iter()
            .map(|b| ExpertBytes {
                gate: &b[0],
                up: &b[1],
                down: &b[2],
            })
            .collect();
        f(&views)
    }

    /// Waits until at least one of `slots` not yet `done` is loaded; returns the positions (in
    /// `slots`) of all such ready ones. On a failed load, releases every slot and errs.
    fn wait_some(&self, slots: &[usize], done: &[bool]) -> Result<Small<usize>> {
        let mut inner = self.lock();
        loop {
            let mut ready = Small::new();
            for (i, &s) in slots.iter().enumerate() {
                if done[i] {
                    continue;
                }
                match inner.slots[s].state {
                    SlotState::Ready => ready.push(i),
                    SlotState::Failed => {
                        let msg = inner
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "expert load failed".into());
                        for &s in slots {
                            inner.slots[s].in_use = inner.slots[s].in_use.saturating_sub(1);
                        }
                        bail!("{msg}");
                    }
                    _ => {}
                }
            }
            if !ready.is_empty() {
                return Ok(ready);
            }
            inner = self
                .shared
                .loaded
                .wait(inner)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until every slot is loaded (on a failed load, releases them all and errs).
    fn wait_ready(&self, slots: &[usize]) -> Result<()> {
        let mut done: Small<bool> = smallvec::smallvec![false; slots.len()];
        while done.iter().any(|d| !d) {
            for i in self.wait_some(slots, &done)? {
                done[i] = true;
            }
        }
        Ok(())
    }
}

/// Reads one matrix (`part`: 0 gate, 1 up, 2 down) of the expert a slot was claimed for, packing
/// it in place when its layout says so; the slot is ready once its three parts are in.
fn load_part(
    shared: &Shared,
    slot: usize,
    part: usize,
    generation: u64,
    bounce: &mut AlignedBuf,
    scratch: &mut Vec<u8>,
) {
    // The part's buffer is locked before the claim is checked, so a stale read (of a claim
    // that failed and was replaced) can never overwrite the newer claim's bytes.
    let mut buf = shared.buffers[slot][part]
        .write()
        .unwrap_or_else(|e| e.into_inner());
    let key = {
        let inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = &inner.slots[slot];
        if s.generation != generation || s.state != SlotState::Loading {
            return;
        }
        s.key
    };
    let Some((layer, e)) = key else { return };
    let result = (|| -> Result<u64> {
        let l = shared.layouts[layer]
            .as_ref()
            .context("layer has no experts")?;
        let (t, name) = match part {
            0 => (&l.gate, "gate"),
            1 => (&l.up, "up"),
            _ => (&l.down, "down"),
        };
        let n = t.bytes_per_expert as usize;
        buf.resize(n, 0);
        let what = || format!("expert {e} of layer {layer} ({name}, tensor '{}')", t.name);
        shared
            .reader
            .read(t.offset_of(e), &mut buf[..], bounce, &what)?;
        if t.packed {
            moe_edge_kernels::pack_rows_in_place(t.ty, t.cols, &mut buf[..], scratch);
        }
        Ok(n as u64)
    })();
    drop(buf);
    let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
    if inner.slots[slot].generation == generation && inner.slots[slot].state == SlotState::Loading {
        match result {
            Ok(n) => {
                inner.stats.bytes_read += n;
                let s = &mut inner.slots[slot];
                s.parts_left -= 1;
                if s.parts_left == 0 {
                    s.state = SlotState::Ready;
                }
            }
            Err(err) => {
                inner.slots[slot].state = SlotState::Failed;
                inner.index.remove(&(layer, e));
                inner.slots[slot].key = None;
                inner.stats.resident_bytes -= shared.layouts[layer]
                    .as_ref()
                    .map(|l| l.bytes_per_expert())
                    .unwrap_or(0);
                inner.last_error = Some(format!("{err:#}"));
            }
        }
    }
    shared.loaded.notify_all();
}

impl ExpertStore for CachedExpertStore {
    fn kind(&self) -> &'static str {
        "cached"
    }

    fn max_batch(&self) -> usize {
        let inner = self.lock();
        let pinned = inner.slots.iter().filter(|s| s.pinned).count();
        (inner.slots.len() - pinned).max(1)
    }

    fn prefetch(&self, layer: usize, experts: &[usize]) {
        if self.check(layer, 0).is_err() {
            return;
        }
        let mut inner = self.lock();
        // Keep room for demand loads: never let prefetches leave fewer than `reserve`
        // slots that a demand miss could take at once.
        for &e in experts {
            if e >= self.n_expert || inner.index.contains_key(&(layer, e)) {
                continue;
            }
            let free = inner
                .slots
                .iter()
                .filter(|s| {
                    s.state == SlotState::Empty
                        || (s.state == SlotState::Ready && !s.pinned && s.in_use == 0)
                })
                .count();
            if free <= self.reserve {
                break;
            }
            if self.claim(&mut inner, layer, e, true).is_err() {
                break;
            }
        }
    }

    fn with_experts(
        &self,
        layer: usize,
        experts: &[usize],
        f: &mut dyn FnMut(&[ExpertBytes<'_>]) -> Result<()>,
    ) -> Result<()> {
        let slots = self.claim_all(layer, experts)?;
        self.wait_ready(&slots)?;
        let result = self.run_on(&slots, f);
        self.release(&slots);
        result
    }

    fn with_experts_as_ready(
        &self,
        layer: usize,
        experts: &[usize],
        f: &mut super::ReadyFn<'_>,
    ) -> Result<()> {
        let slots = self.claim_all(layer, experts)?;
        let mut done: Small<bool> = smallvec::smallvec![false; slots.len()];
        let mut result = Ok(());
        while result.is_ok() && done.iter().any(|d| !d) {
            // `wait_some` releases every slot itself when a load failed.
            let ready = self.wait_some(&slots, &done)?;
            let batch: Small<usize> = ready.iter().map(|&i| slots[i]).collect();
            result = self.run_on(&batch, &mut |views| f(&ready, views));
            for &i in &ready {
                done[i] = true;
            }
        }
        self.release(&slots);
        result
    }

    fn packs_experts(&self) -> bool {
        self.shared
            .layouts
            .iter()
            .flatten()
            .any(|l| l.gate.packed || l.up.packed || l.down.packed)
    }

    fn is_resident(&self, layer: usize, expert: usize) -> bool {
        self.lock().index.contains_key(&(layer, expert))
    }

    fn stats(&self) -> StoreStats {
        let inner = self.lock();
        let mut s = inner.stats.clone();
        s.prefetch_wasted += inner.slots.iter().filter(|x| x.prefetched_unused).count() as u64;
        s
    }
}
