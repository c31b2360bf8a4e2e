//! Attention over f32 and f16 KV cache rows: the SIMD kernels against their scalar twins at odd
//! shapes, and the f16 kernels against the f32 ones on the same values widened to f32 (which
//! they must equal bit for bit: the conversion is exact and the order of the sums is the same).

mod common;

use common::*;
use half::f16;
use moe_edge_kernels::*;

/// `(n, stride, rows)`: odd lengths and row counts, so every kernel meets its tails (the SSSE3
/// weighted sum its 32-column strips plus 1 to 7 quads plus single columns, and both dot
/// kernels their 4-row blocks plus remainder rows).
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (7, 9, 5),
    (64, 64, 4),
    (128, 128, 13),
    (128, 256, 7),
    (72, 80, 3),
    (61, 67, 6),
    (45, 45, 9),
    (20, 21, 2),
];

fn halves(x: &[f32]) -> Vec<f16> {
    let mut h = vec![f16::ZERO; x.len()];
    f32_to_f16_row(x, &mut h);
    h
}

/// Every supported level against the scalar twin, for cache rows of type `T` made by `rows`.
fn check_twins<T: CacheValue>(seed: u64, rows_of: impl Fn(&[f32]) -> Vec<T>, what: &str) {
    let mut rng = Rng::new(seed);
    for level in KernelLevel::under_test() {
        for (n, stride, rows) in SHAPES {
            let q = rng.normals(n);
            let keys = rows_of(&rng.normals((rows - 1) * stride + n));
            let mut want = vec![0f32; rows];
            let mut got = vec![0f32; rows];
            dot_rows_at(KernelLevel::Scalar, &q, &keys, stride, 0.125, &mut want);
            dot_rows_at(level, &q, &keys, stride, 0.125, &mut got);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "{level} dot_rows {what} {n}/{stride}/{rows}: {a} vs {b}"
                );
            }
            let w = rng.normals(rows);
            let mut want = vec![0f32; n];
            let mut got = vec![7f32; n];
            weighted_rows_at(KernelLevel::Scalar, &w, &keys, stride, &mut want);
            weighted_rows_at(level, &w, &keys, stride, &mut got);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "{level} weighted_rows {what} {n}/{stride}/{rows}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn attention_kernels_match_scalar_twins() {
    check_twins(35, |x| x.to_vec(), "f32");
    check_twins(41, halves, "f16");
}

#[test]
fn f16_attention_equals_f32_attention_on_widened_values() {
    let mut rng = Rng::new(43);
    for level in KernelLevel::under_test() {
        for (n, stride, rows) in SHAPES {
            let q = rng.normals(n);
            let keys = halves(&rng.normals((rows - 1) * stride + n));
            let wide: Vec<f32> = keys.iter().map(|h| h.to_f32()).collect();
            let mut from_f16 = vec![0f32; rows];
            let mut from_f32 = vec![1f32; rows];
            dot_rows_at(level, &q, &keys, stride, 0.3, &mut from_f16);
            dot_rows_at(level, &q, &wide, stride, 0.3, &mut from_f32);
            assert_eq!(from_f16, from_f32, "{level} dot_rows {n}/{stride}/{rows}");
            let w = rng.normals(rows);
            let mut from_f16 = vec![0f32; n];
            let mut from_f32 = vec![1f32; n];
            weighted_rows_at(level, &w, &keys, stride, &mut from_f16);
            weighted_rows_at(level, &w, &wide, stride, &mut from_f32);
            assert_eq!(
                from_f16, from_f32,
                "{level} weighted_rows {n}/{stride}/{rows}"
            );
        }
    }
}

/// The SSSE3 weighted sum adds each column's rows in the scalar twin's order with a separate
/// multiply and add (no FMA): it must give the twin's bits, for f32 and f16 rows.
#[test]
fn ssse3_weighted_rows_equal_the_scalar_twin() {
    if !KernelLevel::Ssse3.is_supported() {
        println!("skipped: no SSSE3");
        return;
    }
    let mut rng = Rng::new(53);
    for (n, stride, rows) in SHAPES {
        let w = rng.normals(rows);
        let wide = rng.normals((rows - 1) * stride + n);
        let narrow = halves(&wide);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        let mut want = vec![0f32; n];
        let mut got = vec![3f32; n];
        weighted_rows_at(KernelLevel::Scalar, &w, &wide, stride, &mut want);
        weighted_rows_at(KernelLevel::Ssse3, &w, &wide, stride, &mut got);
        assert_eq!(bits(&got), bits(&want), "f32 {n}/{stride}/{rows}");
        weighted_rows_at(KernelLevel::Scalar, &w, &narrow, stride, &mut want);
        weighted_rows_at(KernelLevel::Ssse3, &w, &narrow, stride, &mut got);
        assert_eq!(bits(&got), bits(&want), "f16 {n}/{stride}/{rows}");
    }
}

#[test]
fn f16_rounding_is_to_nearest_even() {
    let tie_down = 1.0 + 2f32.powi(-11); // halfway between 1 and the next f16: stays at 1
    let tie_up = 1.0 + 3.0 * 2f32.powi(-11); // halfway between two f16s: goes to the even one
    let x = [tie_down, tie_up, 65520.0, -0.0, 1e-8, 0.1];
    let h = halves(&x);
    let bits: Vec<u16> = h.iter().map(|v| v.to_bits()).collect();
    // 1.0, 1 + 2^-9, +inf (65520 rounds past the largest f16), -0.0, 0 (below the smallest
    // subnormal's half), 0.1 -> 0x2e66.
    assert_eq!(bits, [0x3c00, 0x3c02, 0x7c00, 0x8000, 0x0000, 0x2e66]);
}

#[test]
fn rounding_in_place_equals_rounding_each_value() {
    let mut rng = Rng::new(47);
    let mut x: Vec<f32> = rng.normals(1000).iter().map(|v| v * 300.0).collect();
    // Ties, overflow, subnormals and signed zeros among them; 1000 values reach the 64-value
    // chunks' remainder.
    x.extend([
        1.0 + 2f32.powi(-11),
        65520.0,
        -65520.0,
        3e-6,
        -1e-8,
        -0.0,
        f32::INFINITY,
    ]);
    let want: Vec<u32> = x
        .iter()
        .map(|&v| f16::from_f32(v).to_f32().to_bits())
        .collect();
    let mut got = x.clone();
    round_to_f16(&mut got);
    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want);
    let mut row = vec![f16::ZERO; x.len()];
    f32_to_f16_row(&x, &mut row);
    assert!(row
        .iter()
        .zip(&x)
        .all(|(h, &v)| h.to_bits() == f16::from_f32(v).to_bits()));
}
