//! `moe-edge bench` as a user runs it: repetitions, JSON fields, and the weight bytes it counts
//! per generated token checked against the bundled model's tensor table.

use std::path::Path;
use std::process::Command;

use moe_edge::gguf::GgufFile;

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/rustdoc-moe-q8_0.gguf");

/// Bytes a decode step reads, from the file's tensor table: every layer's attention
/// projections and router, `top_k` experts' gate, up and down, the output head (the embedding
/// matrix when it is tied) and one embedding row. Norms are left out, as in the roofline.
fn bytes_per_token_from_file(path: &str) -> u64 {
    let file = GgufFile::open(Path::new(path)).unwrap();
    let meta = file.metadata();
    let arch = meta.get("general.architecture").unwrap().as_str().unwrap();
    let key = |k: &str| meta.get(&format!("{arch}.{k}")).unwrap().as_u64().unwrap();
    let (n_expert, top_k) = (key("expert_count"), key("expert_used_count"));
    let bytes = |name: &str| file.tensor(name).map(|t| t.n_bytes);
    let embd = file.tensor("token_embd.weight").unwrap();
    let mut total = bytes("output.weight").unwrap_or(embd.n_bytes) + embd.row_bytes() as u64;
    let mut layers = 0;
    while bytes(&format!("blk.{layers}.attn_q.weight")).is_some() {
        let b = |part: &str| bytes(&format!("blk.{layers}.{part}.weight")).unwrap();
        total += ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_inp"]
            .iter()
            .map(|p| b(p))
            .sum::<u64>();
        let per_expert: u64 = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]
            .iter()
            .map(|p| b(p) / n_expert)
            .sum();
        total += per_expert * top_k;
        layers += 1;
    }
    assert!(layers > 0, "no layers found");
    total
}

/// Bytes one cached position takes in an f16 KV cache, from the file's metadata.
fn f16_kv_bytes_per_position(path: &str) -> u64 {
    let file = GgufFile::open(Path::new(path)).unwrap();
    let meta = file.metadata();
    let arch = meta.get("general.architecture").unwrap().as_str().unwrap();
    let key = |k: &str| meta.get(&format!("{arch}.{k}")).and_then(|v| v.as_u64());
    let (n_embd, n_head) = (
        key("embedding_length").unwrap(),
        key("attention.head_count").unwrap(),
    );
    let n_head_kv = key("attention.head_count_kv").unwrap_or(n_head);
    let k_len = key("attention.key_length").unwrap_or(n_embd / n_head);
    let v_len = key("attention.value_length").unwrap_or(k_len);
    key("block_count").unwrap() * n_head_kv * (k_len + v_len) * 2
}

#[test]
fn bench_json_reports_every_repetition_and_the_roofline() {
    let out = Command::new(env!("CARGO_BIN_EXE_moe-edge"))
        .args([
            "bench", "-p", "16", "-n", "4", "-d", "8", "-r", "2", "-t", "2", "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["model"], "rustdoc-moe-q8_0.gguf");
    assert_eq!(v["n_prompt"], 16);
    assert_eq!(v["n_gen"], 4);
    assert_eq!(v["repetitions"], 2);
    assert_eq!(v["n_depth"], 8);
    assert_eq!(v["cache_type_k"], "f16");
    assert_eq!(v["cache_type_v"], "f16");
    for test in ["pp", "tg"] {
        let runs = v[format!("{test}_tps")].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{test}: one figure per repetition");
        assert!(
            runs.iter().all(|x| x.as_f64().unwrap() > 0.0),
            "{test}: {runs:?}"
        );
        let mean = v[format!("{test}_mean")].as_f64().unwrap();
        let expect = runs.iter().map(|x| x.as_f64().unwrap()).sum::<f64>() / 2.0;
        assert!(
            (mean - expect).abs() <= 1e-9 * expect,
            "{test} mean {mean} vs {expect}"
        );
    }
    let weights = v["weight_bytes_per_token"].as_u64().unwrap();
    assert_eq!(weights, bytes_per_token_from_file(BUNDLED));
    // Tokens generated at depth 8 read 9, 10, 11 and 12 cached positions (their own
    // included): 10.5 on average.
    let kv = v["kv_bytes_per_token"].as_u64().unwrap();
    let kv_want = f16_kv_bytes_per_position(BUNDLED) as f64 * 10.5;
    assert_eq!(kv, kv_want as u64);
    assert_eq!(v["bytes_per_token"].as_u64().unwrap(), weights + kv);
    let bandwidth = v["read_bandwidth"].as_f64().unwrap();
    let roofline = v["roofline_tps"].as_f64().unwrap();
    let per_token = v["bytes_per_token"].as_f64().unwrap();
    assert!(bandwidth > 1e8, "read bandwidth {bandwidth} B/s");
    // With every expert in RAM the memory is probed before loading and after each repetition.
    assert_eq!(v["expert_store"], "mapped");
    assert_eq!(v["bandwidth_probes"], 3);
    assert!((roofline - bandwidth / per_token).abs() <= 1e-6 * roofline);
    let fraction = v["roofline_fraction"].as_f64().unwrap();
    let tg = v["tg_mean"].as_f64().unwrap();
    assert!((fraction - tg / roofline).abs() <= 1e-9 * fraction.max(1e-9));
    assert!(v["decode_timing"].is_null(), "timing only when asked for");
}

#[test]
fn bench_timing_splits_decode_into_regions_and_serial_work() {
    let out = Command::new(env!("CARGO_BIN_EXE_moe-edge"))
        .args([
            "bench",
            "-p",
            "0",
            "-n",
            "6",
            "-r",
            "2",
            "-t",
            "2",
            "--no-roofline",
            "--timing",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let t = &v["decode_timing"];
    let f = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k} in {t}"));
    // Every decode step runs the same products: whole regions and tasks per token, at least
    // two tasks per region (one-task products run inline and are not regions).
    let (regions, tasks) = (f("regions"), f("tasks"));
    assert!(regions >= 1.0 && regions.fract() == 0.0, "{t}");
    assert!(tasks >= 2.0 * regions && tasks.fract() == 0.0, "{t}");
    // The step's time is the regions' plus the serial work between them.
    let (ms, region, serial) = (f("ms"), f("region_ms"), f("serial_ms"));
    assert!(region > 0.0 && serial > 0.0, "{t}");
    assert!((region + serial - ms).abs() <= 1e-9 * ms, "{t}");
    // Per token, tg figure and timing agree.
    let tg = v["tg_mean"].as_f64().unwrap();
    let runs = v["tg_tps"].as_array().unwrap();
    let harmonic = runs.len() as f64 / runs.iter().map(|x| 1.0 / x.as_f64().unwrap()).sum::<f64>();
    assert!(
        (1000.0 / ms - harmonic).abs() <= 1e-6 * harmonic,
        "{t} against tg {tg}"
    );
    // Tasks run inside their regions: at most every thread busy all the time, and the main
    // thread waits only inside a region.
    let busy = f("busy_fraction");
    assert!(busy > 0.0 && busy <= 1.0, "{t}");
    assert!(f("tail_wait_ms") <= region, "{t}");
}

#[test]
fn bench_table_names_both_tests() {
    let out = Command::new(env!("CARGO_BIN_EXE_moe-edge"))
        .args(["bench", "-p", "8", "-n", "2", "-r", "1", "-t", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| pp8 |"), "{text}");
    assert!(text.contains("| tg2 |"), "{text}");
    assert!(text.contains("MiB of weights + "), "{text}");
}

#[test]
fn prompt_only_bench_reports_no_roofline_fraction() {
    let run = |json: bool| {
        let mut args = vec!["bench", "-p", "8", "-n", "0", "-r", "1", "-t", "1"];
        if json {
            args.push("--json");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_moe-edge"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(false);
    assert!(text.contains("| pp8 |"), "{text}");
    assert!(!text.contains("| tg"), "{text}");
    assert!(text.contains("generation roofline"), "{text}");
    assert!(!text.contains("reached"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    assert!(v["roofline_tps"].as_f64().unwrap() > 0.0);
    assert!(v["roofline_fraction"].is_null(), "{v}");
}
