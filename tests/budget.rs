//! The expert cache under a budget: logits bit-identical to the all-resident run while experts
//! are evicted every token, resident bytes never above capacity, and the CLI's budget errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use moe_edge::experts::{CacheConfig, CachedExpertStore, EvictionPolicy, ExpertStore};
use moe_edge::gguf::GgufFile;
use moe_edge::model::{LogitsWanted, Model};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

const MOE_FIXTURES: [&str; 6] = [
    "llama_moe_q4_0.gguf",
    "llama_moe_q4km.gguf",
    "qwen2moe_q4_0.gguf",
    "qwen3moe_q6k.gguf",
    "qwen3moe_bf16.gguf",
    "olmoe_q8_0.gguf",
];

fn run_tokens(model: &Model, tokens: &[u32], batched: bool) -> Vec<f32> {
    let mut st = model.new_state(tokens.len());
    if batched {
        return model
            .forward(&mut st, tokens, LogitsWanted::All, None)
            .unwrap()
            .logits;
    }
    let mut out = Vec::new();
    for &t in tokens {
        out.extend(
            model
                .forward(&mut st, &[t], LogitsWanted::Last, None)
                .unwrap()
                .logits,
        );
    }
    out
}

fn cached_model(
    path: &Path,
    slots: usize,
    policy: EvictionPolicy,
    prefetch: bool,
    repack: bool,
) -> (Model, Arc<CachedExpertStore>) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let probe = Model::from_file(file.clone(), None).unwrap();
    let layouts = probe
        .weights
        .expert_layouts()
        .into_iter()
        .map(|l| l.map(|l| l.with_packing(repack)))
        .collect();
    let store = Arc::new(
        CachedExpertStore::new(
            path,
            layouts,
            probe.cfg.n_expert,
            CacheConfig {
                slots,
                policy,
                io_threads: 2,
                direct_io: true,
                reserve: probe.cfg.n_expert_used,
            },
        )
        .unwrap(),
    );
    let mut m = Model::from_file(file, Some(store.clone() as Arc<dyn ExpertStore>)).unwrap();
    if repack {
        m.repack().unwrap();
    }
    m.prefetcher.enabled = prefetch;
    (m, store)
}

#[test]
fn logits_are_bit_identical_under_a_budget_that_evicts_every_token() {
    let tokens: Vec<u32> = vec![1, 20, 300, 4000, 17, 99, 512, 3, 3, 60, 7, 1234];
    for name in MOE_FIXTURES {
        let path = fixture(name);
        for repack in [false, true] {
            let mut full = Model::open(&path).unwrap();
            if repack {
                full.repack().unwrap();
            }
            let k = full.cfg.n_expert_used;
            for batched in [false, true] {
                let want = run_tokens(&full, &tokens, batched);
                for (policy, prefetch) in
                    [(EvictionPolicy::Lru, false), (EvictionPolicy::Lfu, true)]
                {
                    let (m, store) = cached_model(&path, k, policy, prefetch, repack);
                    let got = run_tokens(&m, &tokens, batched);
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                    same,
                    "{name} ({policy}, batched {batched}, repack {repack}): logits differ under the budget"
                );
                    let s = store.stats();
                    assert!(
                        s.evictions > 0,
                        "{name}: the budget did not force evictions"
                    );
                    assert!(
                        s.resident_bytes <= s.capacity_bytes,
                        "{name}: resident {} > capacity {}",
                        s.resident_bytes,
                        s.capacity_bytes
                    );
                    assert_eq!(s.hits + s.misses, s.requests);
                }
            }
        }
    }
}

/// `Model::repack` on a cache built from row-layout experts packs the resident matrices only:
/// the forward pass follows the store's layout, so logits stay those of the unpacked model.
#[test]
fn repack_follows_the_expert_store_layout() {
    let tokens: Vec<u32> = vec![1, 20, 300, 4000, 17, 99, 512, 3];
    let path = fixture("llama_moe_q4_0.gguf");
    let full = Model::open(&path).unwrap();
    let want = run_tokens(&full, &tokens, true);
    let (mut m, _store) = cached_model(
        &path,
        full.cfg.n_expert_used,
        EvictionPolicy::Lru,
        false,
        false,
    );
    m.repack().unwrap();
    assert!(m
        .weights
        .expert_layouts()
        .iter()
        .flatten()
        .all(|l| !l.gate.packed && !l.up.packed && !l.down.packed));
    let got = run_tokens(&m, &tokens, true);
    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * (1.0 + a.abs()),
            "logit {i}: {a} vs {b}"
        );
    }
}

#[test]
fn pinned_experts_stay_resident() {
    let path = fixture("olmoe_q8_0.gguf");
    let (m, store) = cached_model(&path, 4, EvictionPolicy::Lru, false, false);
    store.pin(&[(0, 5), (1, 2)]).unwrap();
    run_tokens(&m, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false);
    let resident = store.resident();
    assert!(
        resident.contains(&(0, 5)) && resident.contains(&(1, 2)),
        "{resident:?}"
    );
}

fn moe_edge(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moe-edge"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_refuses_a_budget_below_the_minimum_and_runs_at_a_small_one() {
    let m = fixture("qwen3moe_q6k.gguf");
    let m = m.to_str().unwrap();
    let (ok, _, err) = moe_edge(&[
        "run",
        "-m",
        m,
        "-p",
        "Hello",
        "-n",
        "4",
        "-c",
        "64",
        "--ram-budget",
        "1M",
    ]);
    assert!(!ok);
    assert!(
        err.contains("too small") && err.contains("at least"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let (ok, full, _) = moe_edge(&[
        "run", "-m", m, "-p", "Hello", "-n", "8", "-c", "64", "--temp", "0",
    ]);
    assert!(ok);
    let stats = std::env::temp_dir().join(format!("moe-edge-budget-{}.json", std::process::id()));
    let (ok, small, err) = moe_edge(&[
        "run",
        "-m",
        m,
        "-p",
        "Hello",
        "-n",
        "8",
        "-c",
        "64",
        "--temp",
        "0",
        "--ram-budget",
        "22.8M",
        "--stats-json",
        stats.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(full, small, "greedy text differs under the budget");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let _ = std::fs::remove_file(&stats);
    assert_eq!(v["expert_store"], "cached");
    let cache = &v["expert_cache"];
    assert!(cache["evictions"].as_u64().unwrap() > 0, "{v}");
    assert!(cache["resident_bytes"].as_u64().unwrap() <= cache["capacity_bytes"].as_u64().unwrap());
}

#[test]
fn fit_measures_every_cap_and_policy_and_reports_its_choice() {
    let m = fixture("qwen3moe_q6k.gguf");
    let (ok, _, err) = moe_edge(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        "Hello",
        "-n",
        "2",
        "-c",
        "64",
        "--ram-budget",
        "23M",
        "--fit",
        "--target-tps",
        "0.001",
    ]);
    assert!(ok, "{err}");
    // top-3 model: caps 3, 2 (3/4 rounds down), 1; three policies each under a budget.
    assert_eq!(err.matches("fit:   cap").count(), 9, "{err}");
    assert!(
        err.contains("fit: chose cap 3"),
        "a trivially reachable target keeps the full top-k: {err}"
    );
}
