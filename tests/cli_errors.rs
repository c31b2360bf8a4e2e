//! Bad input gets one clear line on stderr naming the cause and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use moe_edge::gguf::writer::{encode_header, TensorSpec};
use moe_edge::gguf::Value;
use moe_edge_kernels::GgmlType;

fn moe_edge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moe-edge"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("moe-edge-cli-{}-{name}", std::process::id()))
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// One line, starting with "error:", containing every `needle`, exit code 1.
fn assert_clean_error(args: &[&str], needles: &[&str]) {
    let (code, _, err) = moe_edge(args);
    assert_eq!(code, 1, "{args:?}: exit code {code}, stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{args:?}: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: '{n}' missing from: {err}");
    }
}

#[test]
fn missing_model_file() {
    assert_clean_error(
        &["run", "-m", "/nonexistent/model.gguf", "-p", "hi"],
        &["/nonexistent/model.gguf"],
    );
    assert_clean_error(
        &["inspect", "-m", "/nonexistent/model.gguf"],
        &["cannot open"],
    );
}

#[test]
fn not_a_gguf_file() {
    let p = tmp("not.gguf");
    std::fs::write(&p, b"this is plain text, not a model").unwrap();
    assert_clean_error(&["run", "-m", p.to_str().unwrap()], &["not a GGUF file"]);
    std::fs::remove_file(&p).ok();
}

#[test]
fn truncated_model_names_the_tensor() {
    let src = std::fs::read(fixture("olmoe_q8_0.gguf")).unwrap();
    let p = tmp("truncated.gguf");
    std::fs::write(&p, &src[..src.len() - 5000]).unwrap();
    assert_clean_error(
        &["inspect", "-m", p.to_str().unwrap()],
        &["past the end of the file"],
    );
    std::fs::remove_file(&p).ok();
}

#[test]
fn unsupported_architecture_and_missing_key() {
    let p = tmp("arch.gguf");
    let m = vec![(
        "general.architecture".to_string(),
        Value::String("mamba".into()),
    )];
    let t = vec![TensorSpec::new(
        "token_embd.weight",
        &[32, 4],
        GgmlType::F32,
    )];
    let mut f = encode_header(&m, &t, 32);
    f.resize(f.len() + 512, 0);
    std::fs::write(&p, &f).unwrap();
    assert_clean_error(
        &["run", "-m", p.to_str().unwrap()],
        &["unsupported architecture 'mamba'"],
    );
    let m = vec![(
        "general.architecture".to_string(),
        Value::String("qwen3moe".into()),
    )];
    let mut f = encode_header(&m, &t, 32);
    f.resize(f.len() + 512, 0);
    std::fs::write(&p, &f).unwrap();
    assert_clean_error(
        &["run", "-m", p.to_str().unwrap()],
        &["qwen3moe.block_count"],
    );
    std::fs::remove_file(&p).ok();
}

#[test]
fn prompt_longer_than_the_context() {
    let long = "word ".repeat(200);
    assert_clean_error(
        &[
            "run",
            "-m",
            &fixture("qwen3moe_q6k.gguf"),
            "-c",
            "32",
            "-p",
            &long,
            "-n",
            "4",
        ],
        &["does not fit in the context of 32 tokens"],
    );
}

#[test]
fn routing_flags_are_checked() {
    assert_clean_error(
        &[
            "run",
            "-m",
            &fixture("qwen3_f16.gguf"),
            "-p",
            "hi",
            "--max-active-experts",
            "1",
        ],
        &["need a model with experts"],
    );
    assert_clean_error(
        &[
            "run",
            "-m",
            &fixture("olmoe_q8_0.gguf"),
            "-p",
            "hi",
            "--expert-mask",
            "9:0",
        ],
        &["layer 9"],
    );
}

#[test]
fn tokenize_works_on_a_vocab_only_file() {
    let vocab = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vocab/ggml-vocab-llama-spm.gguf");
    let (code, out, err) = moe_edge(&[
        "tokenize",
        "-m",
        vocab.to_str().unwrap(),
        "-p",
        "Hello world",
        "--ids",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "[1,15043,3186]");
    let (code, out, _) = moe_edge(&[
        "tokenize",
        "-m",
        vocab.to_str().unwrap(),
        "-p",
        "Hello world",
        "--ids",
        "--no-bos",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "[15043,3186]");
}
