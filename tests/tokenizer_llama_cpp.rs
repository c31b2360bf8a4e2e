//! Tokenizers against llama.cpp: its tokenizer test suites (`ggml-vocab-*.gguf` with `.inp` /
//! `.out`, tokenized with add_special = false, parse_special = false) must match id for id, and
//! BOS, special-token parsing, decoding and streaming behave as llama.cpp's do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use moe_edge::gguf::{GgufFile, Metadata, Value};
use moe_edge::tokenizer::{Tokenizer, TokenizerError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vocab")
        .join(name)
}

/// Loads `ggml-vocab-<name>.gguf` once per test binary.
fn vocab(name: &str) -> Arc<Tokenizer> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Tokenizer>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(t) = cache.lock().unwrap().get(name) {
        return t.clone();
    }
    let path = fixture(&format!("ggml-vocab-{name}.gguf"));
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let tok =
        Arc::new(Tokenizer::from_gguf(file.metadata()).unwrap_or_else(|e| panic!("{name}: {e}")));
    cache.lock().unwrap().insert(name.to_string(), tok.clone());
    tok
}

/// Runs one llama.cpp suite; returns the number of cases checked.
fn run_suite(name: &str) -> usize {
    let tok = vocab(name);
    let inp = std::fs::read_to_string(fixture(&format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(fixture(&format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|s| s.parse().unwrap()).collect())
        .collect();
    // Every input is followed by the separator, so the split leaves one empty tail.
    assert_eq!(
        inputs.len(),
        expected.len() + 1,
        "{name}: inputs and outputs do not pair up"
    );
    let mut failures = Vec::new();
    for (text, want) in inputs.iter().zip(&expected) {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
    expected.len()
}

#[test]
fn suite_llama_spm() {
    assert_eq!(run_suite("llama-spm"), 46);
}

#[test]
fn suite_llama_bpe() {
    assert_eq!(run_suite("llama-bpe"), 46);
}

#[test]
fn suite_gpt_2() {
    assert_eq!(run_suite("gpt-2"), 46);
}

#[test]
fn suite_qwen2() {
    assert_eq!(run_suite("qwen2"), 46);
}

/// SentencePiece with Phi-3's strip rules around special tokens.
#[test]
fn suite_phi_3() {
    assert_eq!(run_suite("phi-3"), 46);
}

/// Regex-engine pre-tokenizer: `[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, a CJK class, `\p{N}`.
#[test]
fn suite_deepseek_coder() {
    assert_eq!(run_suite("deepseek-coder"), 46);
}

/// `\p{N}` then the GPT-2 splitter.
#[test]
fn suite_starcoder() {
    assert_eq!(run_suite("starcoder"), 46);
}

/// Punctuation runs, GPT-2 splitter, then `[0-9][0-9][0-9]` on code points.
#[test]
fn suite_falcon() {
    assert_eq!(run_suite("falcon"), 46);
}

#[test]
fn metadata_flags_follow_llama_cpp() {
    let spm = vocab("llama-spm");
    assert_eq!(
        (spm.kind(), spm.pre(), spm.n_vocab()),
        ("llama", "default", 32000)
    );
    assert_eq!(
        (spm.bos(), spm.eos(), spm.add_bos()),
        (Some(1), Some(2), true)
    );
    let l3 = vocab("llama-bpe");
    assert_eq!(
        (l3.kind(), l3.pre(), l3.n_vocab()),
        ("gpt2", "llama-bpe", 128256)
    );
    assert_eq!(
        (l3.bos(), l3.eos(), l3.add_bos()),
        (Some(128000), Some(128001), true)
    );
    assert!(l3.is_eog(128001) && l3.is_eog(128009)); // <|end_of_text|>, <|eot_id|>
    assert!(!l3.is_eog(128000));
    assert_eq!(l3.token_text(128009), "<|eot_id|>");
    let gpt2 = vocab("gpt-2");
    assert!(
        !gpt2.add_bos(),
        "GPT-2 files without add_bos_token get no BOS"
    );
    assert!(gpt2.is_eog(50256));
    let qwen = vocab("qwen2");
    assert!(!qwen.add_bos());
    assert!(qwen.is_eog(151643) && qwen.is_eog(151645)); // <|endoftext|>, <|im_end|>
}

#[test]
fn add_special_prepends_bos_as_llama_cpp() {
    let text = "Hello world";
    for (name, bos) in [
        ("llama-spm", Some(1)),
        ("llama-bpe", Some(128000)),
        ("gpt-2", None),
        ("qwen2", None),
    ] {
        let tok = vocab(name);
        let plain = tok.encode(text, false, false);
        let with = tok.encode(text, true, false);
        let mut want = Vec::new();
        want.extend(bos);
        want.extend(&plain);
        assert_eq!(with, want, "{name}");
    }
    // Empty text: SentencePiece gives just BOS.
    assert_eq!(vocab("llama-spm").encode("", true, false), vec![1]);
    assert_eq!(
        vocab("llama-spm").encode("", false, false),
        Vec::<u32>::new()
    );
    assert_eq!(
        vocab("llama-spm").encode("Hello world", false, false),
        vec![15043, 3186]
    );
}

#[test]
fn parse_special_splits_control_tokens() {
    let l3 = vocab("llama-bpe");
    let text = "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>";
    let ids = l3.encode(text, false, true);
    let mut want = vec![128006];
    want.extend(l3.encode("user", false, false));
    want.push(128007);
    want.extend(l3.encode("\n\nHi!", false, false));
    want.push(128009);
    assert_eq!(ids, want);
    // Without parse_special the markers are plain text.
    let plain = l3.encode(text, false, false);
    assert!(!plain.contains(&128006) && !plain.contains(&128009));
    assert_eq!(l3.decode(&plain, false), text);

    let qwen = vocab("qwen2");
    let ids = qwen.encode("<|im_start|>user\nhi<|im_end|>", false, true);
    assert_eq!(ids.first(), Some(&151644));
    assert_eq!(ids.last(), Some(&151645));
    assert_eq!(
        &ids[1..ids.len() - 1],
        qwen.encode("user\nhi", false, false).as_slice()
    );

    // SentencePiece: text after a special token gets the leading space again.
    let spm = vocab("llama-spm");
    let ids = spm.encode("<s>Hello</s>", false, true);
    let mut want = vec![1];
    want.extend(spm.encode("Hello", false, false));
    want.push(2);
    assert_eq!(ids, want);
    assert!(!spm.encode("<s>Hello</s>", false, false).contains(&1));
}

#[test]
fn token_to_piece_renders_as_llama_cpp() {
    let spm = vocab("llama-spm");
    assert_eq!(spm.token_to_piece(15043, false), b" Hello"); // "▁Hello"
    assert_eq!(spm.token_to_piece(13, false), b"\n"); // "<0x0A>"
    assert_eq!(spm.token_to_piece(2, false), b""); // "</s>" is control
    assert_eq!(spm.token_to_piece(2, true), b"</s>");
    let gpt2 = vocab("gpt-2");
    assert_eq!(gpt2.token_to_piece(995, false), b" world"); // "Ġworld"
    assert_eq!(gpt2.token_to_piece(50256, false), b"");
    assert_eq!(gpt2.token_to_piece(50256, true), b"<|endoftext|>");
    assert_eq!(gpt2.token_to_piece(u32::MAX, true), b"");
    // SentencePiece drops the space it added, only at the start.
    assert_eq!(spm.decode(&[15043, 3186], false), "Hello world");
    assert_eq!(spm.decode(&[1, 15043], true), "<s> Hello");
}

#[test]
fn decode_inverts_encode_on_mixed_text() {
    let samples = [
        "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{x:?} héllo\");\n}\n",
        "日本語のテキスト、カタカナとひらがな。漢字も",
        "emoji 🦙🎉👍🏽 and flags 🇯🇵 mixed with ascii",
        "  leading spaces,\t\ttabs\n\n\n\nnewlines   and trailing   ",
        "Ünïcödé çàfé naïve résumé — «quotes» “curly” ‘single’",
        "numbers 1234567890 3.14159 1e-9 0xDEADbeef",
        "\u{00A0}nbsp\u{2003}em-space\u{3000}ideographic",
    ];
    for name in [
        "llama-spm",
        "llama-bpe",
        "gpt-2",
        "qwen2",
        "phi-3",
        "deepseek-coder",
        "starcoder",
        "falcon",
    ] {
        let tok = vocab(name);
        for s in samples {
            let ids = tok.encode(s, false, false);
            assert!(!ids.is_empty());
            assert_eq!(tok.decode(&ids, false), s, "{name}: {s:?} -> {ids:?}");
        }
    }
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    // U+1D11E is not a SentencePiece token: four byte-fallback tokens.
    let spm = vocab("llama-spm");
    let ids = spm.encode("a𝄞b", false, false);
    let bytes: Vec<u32> = "𝄞"
        .bytes()
        .map(|b| spm.token_to_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    let pos = ids
        .iter()
        .position(|&id| id == bytes[0])
        .expect("byte fallback expected");
    assert_eq!(&ids[pos..pos + 4], bytes.as_slice());

    let mut dec = spm.stream_decoder(false);
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(dec.push(id));
    }
    pieces.push(dec.finish());
    // Nothing is emitted for the first three bytes; the fourth completes the character.
    assert_eq!(&pieces[pos..pos + 4], &["", "", "", "𝄞"]);
    assert_eq!(pieces.concat(), " a𝄞b");

    // BPE: a character spread over byte-level tokens.
    let gpt2 = vocab("gpt-2");
    let ids = gpt2.encode("🦙!", false, false);
    assert!(
        ids.len() >= 3,
        "the llama emoji spans several GPT-2 tokens: {ids:?}"
    );
    let mut dec = gpt2.stream_decoder(false);
    let outs: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(outs.concat(), "🦙!");
    assert_eq!(outs[0], "", "the first token holds only part of the emoji");
    assert!(outs.iter().all(|s| !s.contains('\u{FFFD}')));
    assert_eq!(dec.finish(), "");

    // A truncated character at the end becomes U+FFFD only at finish.
    let mut dec = spm.stream_decoder(false);
    assert_eq!(dec.push(bytes[0]), "");
    assert_eq!(dec.pending_len(), 1);
    assert_eq!(dec.finish(), "\u{FFFD}");
}

fn meta(pairs: Vec<(&str, Value)>) -> Metadata {
    Metadata::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()).unwrap()
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

#[test]
fn bad_metadata_is_an_error_naming_the_key() {
    let err = Tokenizer::from_gguf(&meta(vec![])).err().unwrap();
    assert!(
        matches!(&err, TokenizerError::MissingKey(k) if k == "tokenizer.ggml.model"),
        "{err}"
    );

    let err = Tokenizer::from_gguf(&meta(vec![(
        "tokenizer.ggml.model",
        Value::String("gpt2".into()),
    )]))
    .err()
    .unwrap();
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");

    let base = |pre: &str| {
        meta(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b", "ab"])),
            ("tokenizer.ggml.merges", strings(&["a b"])),
        ])
    };
    let err = Tokenizer::from_gguf(&base("no-such-pre")).err().unwrap();
    assert!(err.to_string().contains("tokenizer.ggml.pre"), "{err}");
    let tok = Tokenizer::from_gguf(&base("gpt-2")).unwrap();
    assert_eq!(tok.encode("abab", false, false), vec![2, 2]);

    let err = Tokenizer::from_gguf(&meta(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&["<unk>", "<s>", "</s>"])),
        ("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0)])),
    ]))
    .err()
    .unwrap();
    assert!(err.to_string().contains("tokenizer.ggml.scores"), "{err}");

    let err = Tokenizer::from_gguf(&meta(vec![(
        "tokenizer.ggml.model",
        Value::String("rwkv".into()),
    )]))
    .err()
    .unwrap();
    assert!(matches!(err, TokenizerError::Unsupported(_)), "{err}");
}

#[test]
fn encoding_100_kb_is_fast() {
    let unit = "The quick brown fox — 日本語 🦙 — jumps over 1234567 lazy dogs; fn f(x: u32) -> u32 { x * 2 }\n";
    let text: String = unit.repeat(100 * 1024 / unit.len() + 1);
    for name in ["llama-spm", "llama-bpe", "deepseek-coder"] {
        let tok = vocab(name);
        let t0 = std::time::Instant::now();
        let ids = tok.encode(&text, false, false);
        let dt = t0.elapsed();
        assert!(ids.len() > 10_000);
        assert_eq!(tok.decode(&ids, false), text);
        // Well under a second in release; generous here for the test profile on a loaded box.
        assert!(
            dt.as_secs_f64() < 3.0,
            "{name}: {dt:?} for {} bytes",
            text.len()
        );
        eprintln!(
            "{name}: {} bytes -> {} tokens in {dt:?}",
            text.len(),
            ids.len()
        );
    }
}
