//! GGUF files are untrusted input: every malformed header is refused with an error naming the
//! cause, never a panic, and never a view outside the file.

use moe_edge::gguf::writer::{encode_header, TensorSpec};
use moe_edge::gguf::{parse_header, HeaderError, Value};
use moe_edge::rng::XorShift64;
use moe_edge_kernels::GgmlType;

fn meta() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(1)),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        ),
        (
            "nested".into(),
            Value::Array(vec![Value::Array(vec![Value::U8(1), Value::U8(2)])]),
        ),
        ("f".into(), Value::F64(0.5)),
        ("b".into(), Value::Bool(true)),
    ]
}

fn tensors() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("a.weight", &[64, 4], GgmlType::Q8_0),
        TensorSpec::new("b.weight", &[32], GgmlType::F32),
    ]
}

/// A complete, valid file: header + data.
fn valid_file() -> Vec<u8> {
    let t = tensors();
    let mut f = encode_header(&meta(), &t, 32);
    let data: u64 = t.iter().map(|x| x.n_bytes().next_multiple_of(32)).sum();
    f.resize(f.len() + data as usize, 7);
    f
}

fn parse(bytes: &[u8]) -> Result<moe_edge::gguf::Header, HeaderError> {
    parse_header(bytes, bytes.len() as u64)
}

fn err(bytes: &[u8]) -> String {
    match parse(bytes) {
        Ok(_) => panic!("a bad header was accepted"),
        Err(e) => e.to_string(),
    }
}

/// Offset of the first tensor info (after the metadata).
fn tensor_info_offset() -> usize {
    encode_header(&meta(), &[], 1).len()
}

#[test]
fn valid_file_parses_with_every_value_type() {
    let f = valid_file();
    let h = parse(&f).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.tensors.len(), 2);
    assert_eq!(
        h.metadata.get("llama.block_count").unwrap().as_u64(),
        Some(1)
    );
    assert_eq!(
        h.metadata.get("nested").unwrap().as_array().unwrap()[0]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(h.metadata.get("f").unwrap().as_f32(), Some(0.5));
    assert_eq!(h.tensors[0].n_bytes, 4 * 2 * 34);
    assert_eq!(h.data_offset % 32, 0);
    assert_eq!(
        h.tensors[1].file_offset,
        h.data_offset + (4 * 2 * 34u64).next_multiple_of(32)
    );
}

#[test]
fn wrong_magic_and_versions_are_refused() {
    let mut f = valid_file();
    f[0] = b'X';
    assert!(err(&f).contains("not a GGUF file"));
    let mut f = valid_file();
    f[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err(&f).contains("version 1"));
    f[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert!(err(&f).contains("version 4"));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let f = valid_file();
    for len in 0..f.len() {
        let r = parse_header(&f[..len], len as u64);
        assert!(r.is_err(), "truncated at {len} was accepted");
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut f = valid_file();
    f[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&f).contains("tensor count"));
    let mut f = valid_file();
    f[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(&f).contains("metadata count"));
    // An array claiming 2^24 strings in a tiny file.
    let m = vec![(
        "x".to_string(),
        Value::Array(vec![Value::String("s".into())]),
    )];
    let mut f = encode_header(&m, &[], 32);
    // layout: magic 4, version 4, counts 16, key (8+1), type 4, elem type 4, count 8
    let count_at = 4 + 4 + 16 + 9 + 4 + 4;
    f[count_at..count_at + 8].copy_from_slice(&(1u64 << 24).to_le_bytes());
    let e = err(&f);
    assert!(e.contains("truncated") || e.contains("cap"), "{e}");
    f[count_at..count_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(&f).contains("cap"));
}

#[test]
fn huge_string_length_is_refused() {
    let m = vec![("k".to_string(), Value::String("v".into()))];
    let mut f = encode_header(&m, &[], 32);
    let len_at = 4 + 4 + 16 + 9 + 4;
    f[len_at..len_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(err(&f).contains("exceeds the cap"));
}

#[test]
fn lying_tensor_sizes_and_offsets_are_refused() {
    // A tensor whose data would run past the end of the file.
    let f = valid_file();
    let short = &f[..f.len() - 40];
    let e = parse_header(short, short.len() as u64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("b.weight") && e.contains("past the end"), "{e}");
    // Dimensions that overflow.
    let t = vec![TensorSpec::new(
        "big",
        &[1 << 30, 1 << 30, 1 << 30],
        GgmlType::F32,
    )];
    let f = encode_header(&[], &t, 32);
    assert!(err(&f).contains("big"));
    // Row length not a multiple of the block size.
    let t = vec![TensorSpec::new("odd", &[33, 2], GgmlType::Q8_0)];
    let f = encode_header(&[], &t, 32);
    assert!(err(&f).contains("block size"));
}

#[test]
fn tensor_info_fields_are_checked() {
    let base = valid_file();
    let at = tensor_info_offset();
    // name "a.weight": 8 + 8 bytes, then n_dims
    let ndims_at = at + 16;
    let mut f = base.clone();
    f[ndims_at..ndims_at + 4].copy_from_slice(&5u32.to_le_bytes());
    assert!(err(&f).contains("dimensions"));
    let mut f = base.clone();
    f[ndims_at..ndims_at + 4].copy_from_slice(&0u32.to_le_bytes());
    assert!(err(&f).contains("dimensions"));
    // type id after 2 dims
    let type_at = ndims_at + 4 + 16;
    let mut f = base.clone();
    f[type_at..type_at + 4].copy_from_slice(&20u32.to_le_bytes());
    let e = err(&f);
    assert!(e.contains("IQ4_NL") && e.contains("a.weight"), "{e}");
    let mut f = base.clone();
    f[type_at..type_at + 4].copy_from_slice(&999u32.to_le_bytes());
    assert!(err(&f).contains("unknown"));
    // misaligned offset
    let off_at = type_at + 4;
    let mut f = base.clone();
    f[off_at..off_at + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(err(&f).contains("not aligned"));
    // overlapping tensors: point b at a's data
    let b_off_at = off_at + 8 + 16 + 4 + 8 + 4;
    let mut f = base.clone();
    f[b_off_at..b_off_at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(err(&f).contains("overlap"));
}

#[test]
fn duplicate_keys_and_tensors_are_refused() {
    let m = vec![
        ("k".to_string(), Value::U8(1)),
        ("k".to_string(), Value::U8(2)),
    ];
    assert!(err(&encode_header(&m, &[], 32)).contains("twice"));
    let t = vec![
        TensorSpec::new("t", &[32], GgmlType::F32),
        TensorSpec::new("t", &[32], GgmlType::F32),
    ];
    let mut f = encode_header(&[], &t, 32);
    f.resize(f.len() + 256, 0);
    assert!(err(&f).contains("twice"));
}

#[test]
fn bad_alignment_is_refused() {
    for a in [0u32, 3, 1 << 20] {
        let m = vec![("general.alignment".to_string(), Value::U32(a))];
        let mut f = encode_header(&m, &[], 32);
        f.resize(f.len() + 64, 0);
        assert!(err(&f).contains("alignment"), "alignment {a}");
    }
}

#[test]
fn random_corruptions_never_panic() {
    let f = valid_file();
    let mut rng = XorShift64(0x1234_5678_9abc_def1);
    let mut next = || rng.next_u64();
    for _ in 0..3000 {
        let mut g = f.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % g.len() as u64) as usize;
            g[i] = next() as u8;
        }
        let _ = parse(&g);
    }
}
