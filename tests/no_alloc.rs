//! The decode step allocates nothing once its buffers are sized: the forward pass (attention,
//! router, experts, shared experts), the rayon fork-joins inside it and the sampler, for the
//! bundled model and the packed (repacked Q4_0 / Q4_K) and shared-expert fixtures, and the
//! expert cache with every expert resident, with and without speculative prefetch.
//!
//! A counting global allocator sees every allocation of every thread, so this file holds a
//! single test: nothing else runs while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::sync::Arc;

use moe_edge::experts::{CacheConfig, CachedExpertStore, EvictionPolicy, ExpertStore};
use moe_edge::gguf::GgufFile;
use moe_edge::model::{LogitsWanted, Model};
use moe_edge::sampling::{Sampler, SamplerConfig};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System` with `layout`; the caller guarantees `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made while `f` runs.
fn allocations_during(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Decodes `steps` tokens after a short prompt and some warm-up steps; returns the allocations
/// of the measured steps and the tokens they produced.
fn measure(model: &Model, steps: usize) -> (usize, Vec<u32>) {
    let mut st = model.new_state(64);
    let mut sampler = Sampler::new(SamplerConfig {
        seed: Some(7),
        ..SamplerConfig::default()
    });
    let mut tokens = vec![1u32, 5, 9, 12, 3];
    model
        .forward_in_place(&mut st, &tokens, LogitsWanted::Last, None)
        .unwrap();
    let mut step = |st: &mut moe_edge::model::State, tokens: &mut Vec<u32>| {
        let id = sampler.sample(st.logits_mut(), tokens);
        tokens.push(id);
        model
            .forward_in_place(st, &[id], LogitsWanted::Last, None)
            .unwrap();
    };
    for _ in 0..3 {
        step(&mut st, &mut tokens);
    }
    tokens.reserve(steps);
    let n = allocations_during(|| {
        for _ in 0..steps {
            step(&mut st, &mut tokens);
        }
    });
    assert!(st.logits().iter().all(|v| v.is_finite()));
    (n, tokens)
}

#[test]
fn decode_steps_allocate_nothing() {
    // The counter counts: a deliberate allocation is seen.
    let seen = allocations_during(|| {
        std::hint::black_box(vec![0u8; 100]);
    });
    assert_eq!(seen, 1);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let cases = [
        ("models/rustdoc-moe-q8_0.gguf", false),
        ("tests/fixtures/parity/llama_moe_q4_0.gguf", true),
        ("tests/fixtures/parity/llama_moe_q4km.gguf", true),
        ("tests/fixtures/parity/qwen2moe_q4_0.gguf", true),
    ];
    for (rel, repack) in cases {
        let mut model = Model::open(&path(rel)).unwrap();
        if repack {
            model.repack().unwrap();
        }
        // As the CLI does: the loop runs on a worker of the pool.
        let (n, tokens) = pool.install(|| measure(&model, 8));
        assert_eq!(tokens.len(), 5 + 3 + 8);
        assert_eq!(
            n, 0,
            "{rel}: 8 decode steps made {n} allocations (expected none)"
        );
    }

    // The expert cache (a RAM budget) with every expert resident: hits take no allocation
    // either (slot lists, read guards and views live on the stack).
    let rel = "tests/fixtures/parity/llama_moe_q4_0.gguf";
    let file = Arc::new(GgufFile::open(&path(rel)).unwrap());
    let probe = Model::from_file(file.clone(), None).unwrap();
    let layouts: Vec<_> = probe
        .weights
        .expert_layouts()
        .into_iter()
        .map(|l| l.map(|l| l.with_packing(true)))
        .collect();
    let n_expert = probe.cfg.n_expert;
    let moe_layers: Vec<usize> = (0..layouts.len())
        .filter(|&l| layouts[l].is_some())
        .collect();
    let store = Arc::new(
        CachedExpertStore::new(
            &path(rel),
            layouts,
            n_expert,
            CacheConfig {
                slots: n_expert * moe_layers.len(),
                policy: EvictionPolicy::Context,
                io_threads: 2,
                direct_io: false,
                reserve: probe.cfg.n_expert_used,
            },
        )
        .unwrap(),
    );
    let all: Vec<usize> = (0..n_expert).collect();
    for &l in &moe_layers {
        store.with_experts(l, &all, &mut |_| Ok(())).unwrap();
    }
    let mut model = Model::from_file(file, Some(store.clone() as Arc<dyn ExpertStore>)).unwrap();
    model.repack().unwrap();
    // As the CLI without --prefetch.
    model.prefetcher.enabled = false;
    let misses_before = store.stats().misses;
    let (n, _) = pool.install(|| measure(&model, 8));
    assert_eq!(store.stats().misses, misses_before, "every step should hit");
    assert_eq!(
        n, 0,
        "cached store: 8 decode steps made {n} allocations (expected none)"
    );

    // With --prefetch: the next layer's experts are predicted (all resident here, so no read is
    // queued) and the predictions scored, still without allocating.
    model.prefetcher.enabled = true;
    let (n, _) = pool.install(|| measure(&model, 8));
    assert_eq!(store.stats().misses, misses_before, "every step should hit");
    assert!(
        model.prefetcher.accuracy().is_some(),
        "predictions should have been scored"
    );
    assert_eq!(
        n, 0,
        "cached store with prefetch: 8 decode steps made {n} allocations (expected none)"
    );
}
