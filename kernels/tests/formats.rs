//! Block formats against an independent implementation (the `gguf` Python package's numpy
//! quantizers, fixtures from `tools/make_quant_fixtures.py`), and quantize→dequantize error.

mod common;

use common::*;
use moe_edge_kernels::{quantize_activation_at, GgmlType, KernelLevel};

fn by_name(name: &str) -> GgmlType {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .unwrap()
}

/// Our quantizer reproduces gguf's bytes exactly and our dequantizer its values.
#[test]
fn legacy_quants_match_gguf_python() {
    for name in ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "bf16"] {
        let ty = by_name(name);
        let x = fixture_f32(&format!("{name}.input.f32"));
        let want_q = fixture(&format!("{name}.quant"));
        let want_y = fixture_f32(&format!("{name}.dequant.f32"));
        assert_eq!(x.len(), 256);
        let q = quantize(ty, &x);
        assert_eq!(q, want_q, "{name}: quantized bytes differ from gguf");
        let y = dequantize(ty, &want_q, x.len());
        for (i, (a, b)) in y.iter().zip(&want_y).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]: {a} vs gguf {b}");
        }
    }
}

/// K-quant dequantization matches gguf on random blocks (to 1 ulp-ish: gguf groups the
/// products differently for some types).
#[test]
fn k_quants_dequantize_like_gguf_python() {
    for name in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let ty = by_name(name);
        let q = fixture(&format!("{name}.quant"));
        let want = fixture_f32(&format!("{name}.dequant.f32"));
        assert_eq!(q.len(), 4 * ty.type_size());
        let y = dequantize(ty, &q, want.len());
        let mut exact = 0;
        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
            let tol = 2.0 * f32::EPSILON * b.abs().max(1e-30);
            assert!((a - b).abs() <= tol, "{name}[{i}]: {a} vs gguf {b}");
            exact += (a.to_bits() == b.to_bits()) as usize;
        }
        assert!(
            exact * 10 >= want.len() * 9,
            "{name}: only {exact}/{} bit-exact",
            want.len()
        );
    }
}

/// Hand-made blocks with values worked out on paper.
#[test]
fn hand_made_blocks() {
    // Q4_0: d = 0.5, nibble j = j % 16 → low half (j - 8) * 0.5, high half same pattern.
    let mut b = vec![0u8; 18];
    b[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
    for j in 0..16 {
        b[2 + j] = (j as u8) | (((15 - j) as u8) << 4);
    }
    let y = dequantize(GgmlType::Q4_0, &b, 32);
    assert_eq!(y[0], -4.0);
    assert_eq!(y[15], 3.5);
    assert_eq!(y[16], 3.5);
    assert_eq!(y[31], -4.0);

    // Q8_K: d = 0.25, qs = -128..127, dequant = d * q.
    let mut k = vec![0u8; 292];
    k[0..4].copy_from_slice(&0.25f32.to_le_bytes());
    for j in 0..256 {
        k[4 + j] = (j as i32 - 128) as i8 as u8;
    }
    let y = dequantize(GgmlType::Q8_K, &k, 256);
    assert_eq!(y[0], -32.0);
    assert_eq!(y[255], 31.75);
}

/// Normalized RMS error of quantize→dequantize on gaussian data, per type: a regression guard and
/// a sanity check of the bits per weight (stated bounds are ~1.3× what ggml's formats achieve).
#[test]
fn round_trip_error_bounds() {
    let mut rng = Rng::new(7);
    let n = 256 * 16;
    let x = rng.normals(n);
    let rms = (x.iter().map(|v| (v * v) as f64).sum::<f64>() / n as f64).sqrt();
    let bounds: [(GgmlType, f64); 15] = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 4e-4),
        (GgmlType::BF16, 3e-3),
        (GgmlType::Q8_0, 0.006),
        (GgmlType::Q8_1, 0.006),
        (GgmlType::Q8_K, 0.009),
        (GgmlType::Q6_K, 0.024),
        (GgmlType::Q5_0, 0.055),
        (GgmlType::Q5_1, 0.050),
        (GgmlType::Q5_K, 0.045),
        (GgmlType::Q4_0, 0.11),
        (GgmlType::Q4_1, 0.10),
        (GgmlType::Q4_K, 0.090),
        (GgmlType::Q3_K, 0.20),
        (GgmlType::Q2_K, 0.40),
    ];
    for (ty, bound) in bounds {
        let q = quantize(ty, &x);
        let y = dequantize(ty, &q, n);
        let err = (x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt()
            / rms;
        println!("{ty}: normalized rmse {err:.5} (bound {bound})");
        assert!(err <= bound, "{ty}: normalized rmse {err} > {bound}");
        if ty != GgmlType::F32 {
            assert!(err > 0.0, "{ty}: lossless on gaussian data is suspicious");
        }
    }
}

/// All-zero input quantizes to zero (no NaN from 0/0) and dequantizes to exact zeros.
#[test]
fn zeros_stay_zero() {
    let x = vec![0.0f32; 512];
    for ty in GgmlType::ALL {
        let q = quantize(ty, &x);
        let y = dequantize(ty, &q, x.len());
        assert!(y.iter().all(|&v| v == 0.0), "{ty}");
    }
}

/// Activation quantizers at every supported level give identical bytes.
#[test]
fn activation_quantizers_identical_across_levels() {
    let mut rng = Rng::new(11);
    for nb in [1usize, 3, 7] {
        let x: Vec<f32> = rng.normals(256 * nb).iter().map(|v| v * 3.0).collect();
        for ty in ACTIVATION_TYPES {
            let want = quantize(ty, &x);
            for level in KernelLevel::under_test() {
                let mut q = vec![0u8; want.len()];
                quantize_activation_at(level, ty, &x, &mut q);
                assert_eq!(q, want, "{ty} at {level}");
            }
        }
    }
}

/// Q8_K block sums equal the sums of their quants; Q8_1's `s` is d·Σq.
#[test]
fn activation_side_sums() {
    let mut rng = Rng::new(5);
    let x = rng.normals(512);
    let q = quantize(GgmlType::Q8_K, &x);
    for b in q.chunks_exact(292) {
        for j in 0..16 {
            let s: i32 = b[4 + 16 * j..4 + 16 * j + 16]
                .iter()
                .map(|&v| v as i8 as i32)
                .sum();
            assert_eq!(
                i16::from_le_bytes([b[260 + 2 * j], b[261 + 2 * j]]) as i32,
                s
            );
        }
        assert!(
            b[4..260].iter().any(|&v| v as i8 == 127 || v as i8 == -127),
            "max maps to ±127"
        );
    }
    let q = quantize(GgmlType::Q8_1, &x);
    for b in q.chunks_exact(36) {
        let d = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        let s = half::f16::from_bits(u16::from_le_bytes([b[2], b[3]])).to_f32();
        let sum: i32 = b[4..].iter().map(|&v| v as i8 as i32).sum();
        let want = sum as f32 * d;
        assert!(
            (s - want).abs() <= 2e-3 * want.abs() + 1e-6,
            "s {s} vs d*sum {want}"
        );
    }
}

/// Our activation quantizers and K-quant weight quantizers give exactly the bytes of ggml's C
/// reference quantizers (`quantize_row_*_ref`, built from the llama.cpp source by
/// `tools/ggml_ref_harness.c`; fixtures by `tools/make_ggml_ref_fixtures.py`). The input has an
/// all-zero super-block, a 1e-20-scaled one and an all-positive group.
#[test]
fn quantizers_match_ggml_c_reference() {
    let x = fixture_f32("ggml_ref.input.f32");
    assert_eq!(x.len(), 256 * 16);
    for name in [
        "q8_0", "q8_1", "q8_k", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
    ] {
        let ty = by_name(name);
        let want = fixture(&format!("ggml_ref.{name}.quant"));
        let got = quantize(ty, &x);
        assert_eq!(got.len(), want.len(), "{name}");
        let bs = ty.type_size();
        for (b, (g, w)) in got.chunks(bs).zip(want.chunks(bs)).enumerate() {
            assert_eq!(g, w, "{name}: block {b} differs from ggml");
        }
    }
}
