//! Packed (interleaved) layouts: packing round-trips, the packed kernels at every level are
//! bit-identical to their scalar twin, and agree with the row-major kernels.

mod common;

use common::*;
use moe_edge_kernels::*;

fn random_q4_0(rng: &mut Rng, rows: usize, cols: usize) -> Vec<u8> {
    let x: Vec<f32> = rng.normals(rows * cols);
    let rb = GgmlType::Q4_0.row_bytes(cols).unwrap();
    let mut w = vec![0u8; rows * rb];
    for (src, dst) in x.chunks_exact(cols).zip(w.chunks_exact_mut(rb)) {
        quantize_row_ref(GgmlType::Q4_0, src, dst);
    }
    w
}

fn activations(rng: &mut Rng, n_tok: usize, cols: usize) -> Vec<u8> {
    let x: Vec<f32> = rng.normals(n_tok * cols).iter().map(|v| v * 3.0).collect();
    let ab = GgmlType::Q8_0.row_bytes(cols).unwrap();
    let mut a = vec![0u8; n_tok * ab];
    for (src, dst) in x.chunks_exact(cols).zip(a.chunks_exact_mut(ab)) {
        quantize_activation(GgmlType::Q8_0, src, dst);
    }
    a
}

#[test]
fn pack_round_trips_and_keeps_size() {
    let mut rng = Rng::new(31);
    for (rows, cols) in [(8, 32), (16, 96), (24, 2048)] {
        let w = random_q4_0(&mut rng, rows, cols);
        let mut packed = vec![0u8; w.len()];
        pack_rows(GgmlType::Q4_0, cols, &w, &mut packed);
        assert_ne!(packed, w, "packing {rows}x{cols} changed nothing");
        let mut back = vec![0u8; w.len()];
        unpack_rows(GgmlType::Q4_0, cols, &packed, &mut back);
        assert_eq!(back, w, "{rows}x{cols}");
        let mut in_place = w.clone();
        pack_rows_in_place(GgmlType::Q4_0, cols, &mut in_place, &mut Vec::new());
        assert_eq!(in_place, packed);
    }
}

#[test]
fn only_whole_groups_of_q4_0_pack() {
    assert!(can_pack(GgmlType::Q4_0, 64));
    assert!(!can_pack(GgmlType::Q4_0, 60));
    assert!(!can_pack(GgmlType::Q4_0, 0));
    assert!(!can_pack(GgmlType::Q8_0, 64));
}

#[test]
fn packed_kernels_are_bit_identical_to_the_scalar_twin() {
    let mut rng = Rng::new(32);
    for level in KernelLevel::supported() {
        for (rows, cols, n_tok) in [(8, 32, 1), (16, 96, 3), (40, 320, 5), (64, 2048, 9)] {
            let w = random_q4_0(&mut rng, rows, cols);
            let mut packed = vec![0u8; w.len()];
            pack_rows(GgmlType::Q4_0, cols, &w, &mut packed);
            let acts = activations(&mut rng, n_tok, cols);
            let mut want = vec![0f32; rows * n_tok];
            let mut got = vec![1f32; rows * n_tok];
            matmul_packed_at(
                KernelLevel::Scalar,
                GgmlType::Q4_0,
                cols,
                &packed,
                &acts,
                n_tok,
                &mut want,
            );
            matmul_packed_at(level, GgmlType::Q4_0, cols, &packed, &acts, n_tok, &mut got);
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{level} {rows}x{cols}x{n_tok}: {:?} vs {:?}",
                &got[..8],
                &want[..8]
            );
            // One token at a time gives the same bits as the batch.
            let ab = acts.len() / n_tok;
            for t in 0..n_tok {
                let mut one = vec![0f32; rows];
                matmul_packed_at(
                    level,
                    GgmlType::Q4_0,
                    cols,
                    &packed,
                    &acts[t * ab..(t + 1) * ab],
                    1,
                    &mut one,
                );
                assert_eq!(one, got[t * rows..(t + 1) * rows], "{level} token {t}");
            }
        }
    }
}

#[test]
fn packed_agrees_with_row_major() {
    let mut rng = Rng::new(33);
    let (rows, cols, n_tok) = (48, 1024, 4);
    let w = random_q4_0(&mut rng, rows, cols);
    let mut packed = vec![0u8; w.len()];
    pack_rows(GgmlType::Q4_0, cols, &w, &mut packed);
    let acts = activations(&mut rng, n_tok, cols);
    let mut want = vec![0f32; rows * n_tok];
    let mut got = vec![0f32; rows * n_tok];
    matmul_at(
        KernelLevel::Scalar,
        GgmlType::Q4_0,
        cols,
        &w,
        &acts,
        n_tok,
        &mut want,
    );
    matmul_packed(GgmlType::Q4_0, cols, &packed, &acts, n_tok, &mut got);
    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "output {i}: {a} vs {b}"
        );
    }
}

#[test]
fn f32_vector_helpers_match_scalar() {
    let mut rng = Rng::new(34);
    for level in KernelLevel::supported() {
        for n in [1usize, 7, 8, 33, 128, 131] {
            let a = rng.normals(n);
            let b = rng.normals(n);
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let got = dot_f32_at(level, &a, &b);
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{level} dot n={n}: {got} vs {want}"
            );
            let mut y = b.clone();
            axpy_at(level, 0.37, &a, &mut y);
            for i in 0..n {
                let want = b[i] + 0.37 * a[i];
                assert!(
                    (y[i] - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{level} axpy n={n} i={i}"
                );
            }
        }
    }
}
