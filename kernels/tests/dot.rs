//! Dot products, matvec and matmul against an f32 reference, at odd block counts.

mod common;

use common::*;
use moe_edge_kernels::*;

/// Σ dequant(w)·dequant(a) in f64, and Σ |dequant(w)·dequant(a)| (the scale of rounding errors).
fn reference(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> (f64, f64) {
    let wf = dequantize(ty, w, n);
    let af = dequantize(ty.vec_dot_type(), a, n);
    let mut s = 0.0f64;
    let mut m = 0.0f64;
    for (x, y) in wf.iter().zip(&af) {
        s += *x as f64 * *y as f64;
        m += (*x as f64 * *y as f64).abs();
    }
    (s, m)
}

fn block_elems(ty: GgmlType) -> usize {
    // F32/F16/BF16 have 1-element blocks; use 32 so odd counts still mean odd lengths.
    ty.block_size().max(32)
}

/// vec_dot equals the dequantized dot product to float rounding (the integer sums are exact;
/// only the block scales and the final float sum round): |err| ≤ 2e-6·Σ|w·a|.
#[test]
fn vec_dot_matches_dequantized_reference() {
    let mut rng = Rng::new(1);
    for ty in WEIGHT_TYPES {
        for nb in 1..=33usize {
            if ty.block_size() == 256 && nb > 9 && nb % 4 != 1 {
                continue; // keep the suite fast: K-quants at 1..9, 13, 17, …
            }
            let n = nb * block_elems(ty);
            let w = quantize(ty, &rng.normals(n));
            let a = quantize(ty.vec_dot_type(), &rng.normals(n));
            let (want, scale) = reference(ty, n, &w, &a);
            for level in KernelLevel::under_test() {
                let got = vec_dot_at(level, ty, n, &w, &a) as f64;
                // Q8_1 stores s = d·Σq rounded to f16, so the min term of Q4_1/Q5_1 carries a
                // 2^-11 relative error the dequantized reference does not have.
                let rel = if ty.vec_dot_type() == GgmlType::Q8_1 {
                    1e-3
                } else {
                    2e-6
                };
                let tol = rel * scale + 1e-6 * want.abs() + 1e-30;
                assert!(
                    (got - want).abs() <= tol,
                    "{ty} n={n} {level}: {got} vs {want} (tol {tol})"
                );
            }
        }
    }
}

/// The quantized dot product approximates the true f32 dot product of the unquantized data, to
/// the precision of the format (bounds relative to ‖w‖·‖a‖).
#[test]
fn vec_dot_approximates_true_dot() {
    let mut rng = Rng::new(2);
    let n = 256 * 8;
    let bounds = [
        (GgmlType::F32, 1e-6),
        (GgmlType::F16, 1e-3),
        (GgmlType::BF16, 6e-3),
        (GgmlType::Q8_0, 0.01),
        (GgmlType::Q6_K, 0.03),
        (GgmlType::Q5_0, 0.06),
        (GgmlType::Q5_1, 0.06),
        (GgmlType::Q5_K, 0.05),
        (GgmlType::Q4_0, 0.12),
        (GgmlType::Q4_1, 0.11),
        (GgmlType::Q4_K, 0.10),
        (GgmlType::Q3_K, 0.22),
        (GgmlType::Q2_K, 0.45),
    ];
    for (ty, bound) in bounds {
        let mut worst = 0.0f64;
        for _ in 0..8 {
            let wf = rng.normals(n);
            let af = rng.normals(n);
            let truth: f64 = wf.iter().zip(&af).map(|(a, b)| *a as f64 * *b as f64).sum();
            let norm = (wf.iter().map(|v| (v * v) as f64).sum::<f64>()
                * af.iter().map(|v| (v * v) as f64).sum::<f64>())
            .sqrt();
            let w = quantize(ty, &wf);
            let a = quantize(ty.vec_dot_type(), &af);
            let got = vec_dot(ty, n, &w, &a) as f64;
            worst = worst.max((got - truth).abs() / norm);
        }
        println!("{ty}: worst |err|/(|w||a|) = {worst:.5}");
        assert!(worst <= bound, "{ty}: {worst} > {bound}");
    }
}

/// matvec and matmul agree with the scalar vec_dot row by row (to float rounding) at every
/// level, for odd row and token counts.
#[test]
fn matvec_and_matmul_agree_with_vec_dot() {
    let mut rng = Rng::new(3);
    for ty in WEIGHT_TYPES {
        for (nb, rows, tokens) in [(1usize, 1usize, 1usize), (3, 5, 3), (2, 9, 7), (5, 13, 5)] {
            let n = nb * block_elems(ty);
            let rb = ty.row_bytes(n).unwrap();
            let ab = ty.vec_dot_type().row_bytes(n).unwrap();
            let (w, acts) = random_product(ty, &mut rng, n, rows, tokens);
            let want: Vec<f32> = (0..tokens)
                .flat_map(|t| {
                    let (w, acts) = (&w, &acts);
                    (0..rows).map(move |r| {
                        vec_dot_at(
                            KernelLevel::Scalar,
                            ty,
                            n,
                            &w[r * rb..(r + 1) * rb],
                            &acts[t * ab..(t + 1) * ab],
                        )
                    })
                })
                .collect();
            for level in KernelLevel::under_test() {
                let mut out = vec![f32::NAN; rows * tokens];
                matmul_at(level, ty, n, &w, &acts, tokens, &mut out);
                for t in 0..tokens {
                    let mut mv = vec![f32::NAN; rows];
                    matvec_at(level, ty, n, &w, &acts[t * ab..(t + 1) * ab], &mut mv);
                    for r in 0..rows {
                        let e = want[t * rows + r];
                        // Unit-gaussian data: Σ|w·a| ≈ 0.64·n, so this is ~1.5e-6·Σ|w·a|.
                        let tol = 1e-6 * n as f32 + 1e-6;
                        let (g1, g2) = (out[t * rows + r], mv[r]);
                        assert!(
                            (g1 - e).abs() <= tol,
                            "{ty} {level} matmul r{r} t{t}: {g1} vs {e}"
                        );
                        assert!(
                            (g2 - e).abs() <= tol,
                            "{ty} {level} matvec r{r} t{t}: {g2} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn empty_outputs_are_fine() {
    let mut out: Vec<f32> = vec![];
    let a = quantize(GgmlType::Q8_0, &[0.5; 32]);
    matvec(GgmlType::Q4_0, 32, &[], &a, &mut out);
    matmul(GgmlType::Q4_0, 32, &[], &a, 1, &mut out);
    matmul(GgmlType::Q4_0, 32, &[0u8; 18], &[], 0, &mut out);
}

#[test]
#[should_panic(expected = "activation row length")]
fn wrong_activation_length_is_reported() {
    let w = vec![0u8; 18];
    vec_dot(GgmlType::Q4_0, 32, &w, &[0u8; 10]);
}

#[test]
fn level_names_round_trip_and_choice() {
    for l in KernelLevel::ALL {
        assert_eq!(l.to_string().parse::<KernelLevel>(), Ok(l));
    }
    assert!("avx3".parse::<KernelLevel>().is_err());
    assert_eq!(KernelLevel::supported()[0], KernelLevel::Scalar);
    let only_avx2 = |l: KernelLevel| matches!(l, KernelLevel::Scalar | KernelLevel::Avx2);
    assert_eq!(
        choose_level(None, only_avx2),
        LevelChoice::Detected(KernelLevel::Avx2)
    );
    assert_eq!(
        choose_level(Some("scalar"), only_avx2),
        LevelChoice::Forced(KernelLevel::Scalar)
    );
    assert_eq!(
        choose_level(Some(" AVX2 "), only_avx2),
        LevelChoice::Forced(KernelLevel::Avx2)
    );
    assert_eq!(
        choose_level(Some("avx512"), only_avx2),
        LevelChoice::Rejected {
            requested: "avx512".into(),
            used: KernelLevel::Avx2
        }
    );
    assert_eq!(
        choose_level(Some("bogus"), only_avx2),
        LevelChoice::Rejected {
            requested: "bogus".into(),
            used: KernelLevel::Avx2
        }
    );
    assert!(active_level().is_supported());
}
