//! Packed (interleaved) layouts: packing round-trips, the packed kernels at every level are
//! bit-identical to their scalar twin, and agree with the row-major kernels.

mod common;

use common::*;
use moe_edge_kernels::*;

const PACKED_TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Rows of `ty` with random quants and scales, written directly as bytes: every quant value
/// (Q8_0's -128 too, which ggml's quantizer never writes) and every 6-bit scale and min of the
/// K-quants occurs, and no floating-point quantizer runs (the AVX-512 emulator does floating
/// point in software). The f16 block scales are finite, of either sign for the legacy types,
/// between 2^-8 and 2^-4 in magnitude.
fn random_weights(ty: GgmlType, rng: &mut Rng, rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols).unwrap();
    let mut w: Vec<u8> = (0..rows * rb).map(|_| rng.next_u64() as u8).collect();
    let mut f16 = |signed: bool| -> [u8; 2] {
        let r = rng.next_u64();
        let sign = if signed && r & 1 == 1 { 0x8000 } else { 0 };
        let bits = sign | (0x1C00 + (r >> 8) as u16 % 0x1000);
        bits.to_le_bytes()
    };
    // (block bytes, offsets of f16 scales, signed) per type.
    let (block, scales, signed): (usize, &[usize], bool) = match ty {
        GgmlType::Q4_0 => (18, &[0], true),
        GgmlType::Q8_0 => (34, &[0], true),
        GgmlType::Q4_K => (144, &[0, 2], false),
        GgmlType::Q5_K => (176, &[0, 2], false),
        GgmlType::Q6_K => (210, &[208], true),
        _ => unreachable!("{ty} is not packed"),
    };
    for blk in w.chunks_exact_mut(block) {
        for &at in scales {
            blk[at..at + 2].copy_from_slice(&f16(signed));
        }
    }
    w
}

/// `w` (row-major rows of `cols`) packed into interleaved groups.
fn packed(ty: GgmlType, cols: usize, w: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; w.len()];
    pack_rows(ty, cols, w, &mut p);
    p
}

fn activations(ty: GgmlType, rng: &mut Rng, n_tok: usize, cols: usize) -> Vec<u8> {
    let x: Vec<f32> = rng.normals(n_tok * cols).iter().map(|v| v * 3.0).collect();
    let vdt = ty.vec_dot_type();
    let ab = vdt.row_bytes(cols).unwrap();
    let mut a = vec![0u8; n_tok * ab];
    for (src, dst) in x.chunks_exact(cols).zip(a.chunks_exact_mut(ab)) {
        quantize_activation(vdt, src, dst);
    }
    a
}

/// Shapes (rows, cols, tokens) valid for `ty`; the token counts reach every token-tile size
/// (1 to 4, or 1 to 8 for the AVX-512 Q4_K kernel) of the kernels that share a weight column
/// between tokens, and every tile of 1 to 4 token pairs of the AVX2 Q4_0 pair kernel, with and
/// without an odd last token.
fn shapes(ty: GgmlType) -> Vec<(usize, usize, usize)> {
    let b = ty.block_size();
    vec![
        (8, b, 1),
        (24, 2 * b, 2),
        (16, 3 * b, 3),
        (40, 5 * b, 5),
        (32, 4 * b, 6),
        (24, 6 * b, 10),
        (24, 7 * b, 19),
        (16, 9 * b, 37),
        (64, 2048, 9),
        (16, 2 * b, 4),
        (8, 3 * b, 15),
    ]
}

#[test]
fn pack_round_trips_and_keeps_size() {
    let mut rng = Rng::new(31);
    for ty in PACKED_TYPES {
        for (rows, cols, _) in shapes(ty) {
            let w = random_weights(ty, &mut rng, rows, cols);
            let packed = packed(ty, cols, &w);
            assert_ne!(packed, w, "{ty}: packing {rows}x{cols} changed nothing");
            let mut back = vec![0u8; w.len()];
            unpack_rows(ty, cols, &packed, &mut back);
            assert_eq!(back, w, "{ty} {rows}x{cols}");
            let mut in_place = w.clone();
            pack_rows_in_place(ty, cols, &mut in_place, &mut Vec::new());
            assert_eq!(in_place, packed);
        }
    }
}

#[test]
fn only_whole_groups_of_packable_types_pack() {
    assert!(can_pack(GgmlType::Q4_0, 64));
    assert!(can_pack(GgmlType::Q4_K, 64));
    assert!(!can_pack(GgmlType::Q4_0, 60));
    assert!(!can_pack(GgmlType::Q4_0, 0));
    assert!(can_pack(GgmlType::Q8_0, 64));
    assert!(can_pack(GgmlType::Q6_K, 64));
    assert!(can_pack(GgmlType::Q5_K, 64));
    assert!(!can_pack(GgmlType::Q4_1, 64));
}

#[test]
fn packed_kernels_are_bit_identical_to_the_scalar_twin() {
    let mut rng = Rng::new(32);
    for ty in PACKED_TYPES {
        for (rows, cols, n_tok) in shapes(ty) {
            let w = random_weights(ty, &mut rng, rows, cols);
            let packed = packed(ty, cols, &w);
            let acts = activations(ty, &mut rng, n_tok, cols);
            for level in KernelLevel::under_test() {
                let mut want = vec![0f32; rows * n_tok];
                let mut got = vec![1f32; rows * n_tok];
                matmul_packed_twin(level, ty, cols, &packed, &acts, n_tok, &mut want);
                matmul_packed_at(level, ty, cols, &packed, &acts, n_tok, &mut got);
                let same = want
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{ty} {level} {rows}x{cols}x{n_tok}: {:?} vs {:?}",
                    &got[..8],
                    &want[..8]
                );
                // One token at a time gives the same bits as the batch.
                let ab = acts.len() / n_tok;
                for t in 0..n_tok {
                    let mut one = vec![0f32; rows];
                    let a = &acts[t * ab..(t + 1) * ab];
                    matmul_packed_at(level, ty, cols, &packed, a, 1, &mut one);
                    assert_eq!(one, got[t * rows..(t + 1) * rows], "{ty} {level} token {t}");
                }
            }
        }
    }
}

#[test]
fn packed_agrees_with_row_major() {
    let mut rng = Rng::new(33);
    for ty in PACKED_TYPES {
        let (rows, cols, n_tok) = (48, 1024, 4);
        let w = random_weights(ty, &mut rng, rows, cols);
        let packed = packed(ty, cols, &w);
        let acts = activations(ty, &mut rng, n_tok, cols);
        let mut want = vec![0f32; rows * n_tok];
        let mut got = vec![0f32; rows * n_tok];
        matmul_at(KernelLevel::Scalar, ty, cols, &w, &acts, n_tok, &mut want);
        matmul_packed(ty, cols, &packed, &acts, n_tok, &mut got);
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "{ty} output {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn summaries_built_once_give_the_same_bits() {
    let mut rng = Rng::new(34);
    let mut sums = ActivationSummaries::new();
    for ty in PACKED_TYPES {
        for (rows, cols, n_tok) in shapes(ty) {
            let w = random_weights(ty, &mut rng, rows, cols);
            let packed = packed(ty, cols, &w);
            let acts = activations(ty, &mut rng, n_tok, cols);
            let mut want = vec![0f32; rows * n_tok];
            matmul_packed(ty, cols, &packed, &acts, n_tok, &mut want);
            // The same summaries serve every slice of whole groups, as a thread pool cuts them.
            sums.build(ty, cols, &acts);
            assert!(sums.fits(ty, &acts));
            let rb = ty.row_bytes(cols).unwrap();
            let mut got = vec![f32::NAN; rows * n_tok];
            for r0 in (0..rows).step_by(16) {
                let n = 16.min(rows - r0);
                let mut part = vec![0f32; n * n_tok];
                let part_w = &packed[r0 * rb..(r0 + n) * rb];
                matmul_packed_summarized(ty, cols, part_w, &acts, &sums, n_tok, &mut part);
                for t in 0..n_tok {
                    got[t * rows + r0..t * rows + r0 + n]
                        .copy_from_slice(&part[t * n..(t + 1) * n]);
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{ty} {rows}x{cols}x{n_tok}");
        }
    }
}

/// Summaries keep the rows paired by token for the prompt kernels. The same activation bytes
/// read as rows of another width are other tokens: a product must not take those pairs. (The
/// per-block summaries do not depend on the width, so such summaries still fit.)
#[test]
fn rows_paired_for_another_width_are_not_used() {
    let mut rng = Rng::new(36);
    for ty in PACKED_TYPES {
        let b = ty.block_size();
        let (rows, cols, n_tok) = (16, 2 * b, 4);
        let acts = activations(ty, &mut rng, n_tok, cols);
        let w = random_weights(ty, &mut rng, rows, cols);
        let packed = packed(ty, cols, &w);
        let mut want = vec![0f32; rows * n_tok];
        matmul_packed(ty, cols, &packed, &acts, n_tok, &mut want);
        // Built as 8 rows of half the width: paired as 4 pairs of narrow rows.
        let mut sums = ActivationSummaries::new();
        sums.build(ty, b, &acts);
        assert!(sums.fits(ty, &acts));
        let mut got = vec![f32::NAN; rows * n_tok];
        matmul_packed_summarized(ty, cols, &packed, &acts, &sums, n_tok, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{ty}");
    }
}

#[test]
fn summaries_of_other_activations_are_refused() {
    let mut rng = Rng::new(35);
    let (rows, cols) = (16, 256);
    let ty = GgmlType::Q4_0;
    let w = random_weights(ty, &mut rng, rows, cols);
    let packed = packed(ty, cols, &w);
    let acts = activations(ty, &mut rng, 2, cols);
    let mut sums = ActivationSummaries::new();
    sums.build(ty, cols, &acts[..acts.len() / 2]);
    assert!(
        !sums.fits(ty, &acts),
        "one token's summaries fit two tokens"
    );
    let wrong_len = std::panic::catch_unwind(|| {
        let mut out = vec![0f32; rows * 2];
        matmul_packed_summarized(ty, cols, &packed, &acts, &sums, 2, &mut out);
    });
    assert!(wrong_len.is_err(), "summaries of one token used for two");
    sums.build(GgmlType::Q8_0, cols, &acts);
    assert!(!sums.fits(ty, &acts), "Q8_0 summaries fit Q4_0");
    let wrong_type = std::panic::catch_unwind(|| {
        let mut out = vec![0f32; rows * 2];
        matmul_packed_summarized(ty, cols, &packed, &acts, &sums, 2, &mut out);
    });
    assert!(wrong_type.is_err(), "summaries of another type used");
}

#[test]
fn f32_vector_helpers_match_scalar() {
    let mut rng = Rng::new(34);
    for level in KernelLevel::under_test() {
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

/// Packed Q8_0 at its extremes: weight bytes of -128 (a file may hold them, though ggml's
/// quantizer writes ±127) against activations of ±127, where a 16-bit sum of two `vpmaddubsw`
/// results would overflow. Every level must still give the scalar twin's bits.
#[test]
fn packed_q8_0_is_exact_at_extreme_quants() {
    let (rows, cols) = (24, 96);
    let ty = GgmlType::Q8_0;
    let rb = ty.row_bytes(cols).unwrap();
    let mut w = vec![0u8; rows * rb];
    for (r, row) in w.chunks_exact_mut(rb).enumerate() {
        for (b, blk) in row.chunks_exact_mut(34).enumerate() {
            blk[..2].copy_from_slice(&[0x00, 0x3c]); // 1.0 in f16
            for (i, q) in blk[2..].iter_mut().enumerate() {
                *q = if (r + b + i) % 3 == 0 { 0x7f } else { 0x80 };
            }
        }
    }
    let packed = packed(ty, cols, &w);
    let x: Vec<f32> = (0..2 * cols)
        .map(|i| if i % 5 == 0 { 1.0 } else { -1.0 })
        .collect();
    let ab = ty.row_bytes(cols).unwrap();
    let mut acts = vec![0u8; 2 * ab];
    for (src, dst) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(ab)) {
        quantize_activation(ty, src, dst);
    }
    let mut want = vec![0f32; rows * 2];
    matmul_packed_at(KernelLevel::Scalar, ty, cols, &packed, &acts, 2, &mut want);
    // Every row: blocks of ±127 · ±128 products; the exact sums are far beyond 16 bits.
    assert!(want.iter().all(|v| v.abs() > 1000.0), "{:?}", &want[..4]);
    for level in KernelLevel::under_test() {
        let mut got = vec![0f32; rows * 2];
        matmul_packed_at(level, ty, cols, &packed, &acts, 2, &mut got);
        assert_eq!(got, want, "{level}");
        let mut one = vec![0f32; rows];
        matmul_packed_at(level, ty, cols, &packed, &acts[..ab], 1, &mut one);
        assert_eq!(one, want[..rows], "{level}, one token");
    }
}

/// Packed Q5_K at its extremes: every quant 31, every scale and min 63, activations all of one
/// sign at full scale. A 16-bit sum of eight `vpmaddubsw` results would overflow here (the
/// random tests do not reach it); every level must still give the scalar twin's bits.
#[test]
fn packed_q5_k_is_exact_at_extreme_quants() {
    let (rows, cols) = (16, 512);
    let ty = GgmlType::Q5_K;
    let rb = ty.row_bytes(cols).unwrap();
    let mut w = vec![0xFFu8; rows * rb];
    for blk in w.chunks_exact_mut(176) {
        blk[..4].copy_from_slice(&[0x00, 0x3c, 0x00, 0x00]); // d = 1.0, dmin = 0 (f16)
    }
    let packed = packed(ty, cols, &w);
    let vdt = ty.vec_dot_type();
    let ab = vdt.row_bytes(cols).unwrap();
    let mut acts = vec![0u8; 2 * ab];
    quantize_activation(vdt, &vec![1.0f32; cols], &mut acts[..ab]);
    quantize_activation(vdt, &vec![-0.5f32; cols], &mut acts[ab..]);
    let mut want = vec![0f32; rows * 2];
    matmul_packed_at(KernelLevel::Scalar, ty, cols, &packed, &acts, 2, &mut want);
    // 63 · 31 per element times 1.0 or -0.5, 512 elements: 1e6 and 5e5 in magnitude.
    assert!(want.iter().all(|v| v.abs() > 4e5), "{:?}", &want[..4]);
    for level in KernelLevel::under_test() {
        let mut got = vec![0f32; rows * 2];
        matmul_packed_at(level, ty, cols, &packed, &acts, 2, &mut got);
        assert_eq!(got, want, "{level}");
        let mut one = vec![0f32; rows];
        matmul_packed_at(level, ty, cols, &packed, &acts[..ab], 1, &mut one);
        assert_eq!(one, want[..rows], "{level}, one token");
    }
}

/// Q8_K activation rows built by hand (`quant(t, i)` for element `i` of token `t`), so that
/// they reach -128, which the quantizer never writes; `d` = 1/64, `bsums` the true sums.
fn q8_k_rows(cols: usize, n_tok: usize, quant: impl Fn(usize, usize) -> i8) -> Vec<u8> {
    let mut acts = Vec::with_capacity(n_tok * cols / 256 * 292);
    for t in 0..n_tok {
        for b in 0..cols / 256 {
            let q: Vec<i8> = (0..256).map(|i| quant(t, 256 * b + i)).collect();
            acts.extend_from_slice(&(1.0f32 / 64.0).to_le_bytes());
            acts.extend(q.iter().map(|&v| v as u8));
            for sum in q.chunks_exact(16) {
                let s: i16 = sum.iter().map(|&v| v as i16).sum();
                acts.extend_from_slice(&s.to_le_bytes());
            }
        }
    }
    acts
}

/// Packed `ty` weights (row-major `w`) against activations of -128, of 127 and of both, at
/// every level: each must give its scalar twin's bits (one token at a time too).
fn check_extremes(ty: GgmlType, cols: usize, w: &[u8]) {
    let rows = w.len() / ty.row_bytes(cols).unwrap();
    let packed = packed(ty, cols, w);
    let acts = q8_k_rows(cols, 3, |t, i| match t {
        0 => -128,
        1 => 127,
        _ if i % 3 == 0 => 127,
        _ => -128,
    });
    let ab = acts.len() / 3;
    for level in KernelLevel::under_test() {
        let mut want = vec![0f32; rows * 3];
        matmul_packed_twin(level, ty, cols, &packed, &acts, 3, &mut want);
        assert!(want.iter().all(|v| v.abs() > 1e3), "{ty} {:?}", &want[..4]);
        let mut got = vec![0f32; rows * 3];
        matmul_packed_at(level, ty, cols, &packed, &acts, 3, &mut got);
        assert_eq!(got, want, "{ty} {level}");
        for t in 0..3 {
            let mut one = vec![0f32; rows];
            let a = &acts[t * ab..(t + 1) * ab];
            matmul_packed_at(level, ty, cols, &packed, a, 1, &mut one);
            assert_eq!(
                one,
                want[t * rows..(t + 1) * rows],
                "{ty} {level} token {t}"
            );
        }
    }
}

/// Packed Q4_K at its extremes: every quant 15, every scale and min 63, against activations of
/// -128 (eight `pmaddubsw` results reach 8 × 2 × 15 × 128 = 30720 in one 16-bit sum).
#[test]
fn packed_q4_k_is_exact_at_extreme_quants() {
    let (rows, cols) = (16, 512);
    let ty = GgmlType::Q4_K;
    let mut w = vec![0xFFu8; rows * ty.row_bytes(cols).unwrap()];
    for blk in w.chunks_exact_mut(144) {
        blk[..4].copy_from_slice(&[0x00, 0x3c, 0x00, 0x38]); // d = 1.0, dmin = 0.5 (f16)
    }
    check_extremes(ty, cols, &w);
}

/// Packed Q6_K at its extremes: every quant 63 (or 0 in odd rows) and scales of 127 and -128,
/// against activations of -128 (two `pmaddubsw` results reach 2 × 2 × 63 × 128 = 32256).
#[test]
fn packed_q6_k_is_exact_at_extreme_quants() {
    let (rows, cols) = (16, 512);
    let ty = GgmlType::Q6_K;
    let rb = ty.row_bytes(cols).unwrap();
    let mut w = vec![0u8; rows * rb];
    for (r, row) in w.chunks_exact_mut(rb).enumerate() {
        for blk in row.chunks_exact_mut(210) {
            blk[..192].fill(if r % 2 == 0 { 0xFF } else { 0x00 }); // ql, qh
            for (i, sc) in blk[192..208].iter_mut().enumerate() {
                *sc = if (i + r) % 3 == 0 { 0x80 } else { 0x7F };
            }
            blk[208..].copy_from_slice(&[0x00, 0x3c]); // d = 1.0 (f16)
        }
    }
    check_extremes(ty, cols, &w);
}
