//! Kernel microbenchmarks (single thread, plain `std::time`):
//! matvec 4096×4096 (decode: GB/s of weight bytes) and matmul 1024×4096 × 64 tokens
//! (prompt processing: GFLOP/s, 2 flops per multiply-add), per type and supported level.
//!
//! Run: `cargo bench -p moe-edge-kernels --bench kernels [-- TYPE...]`, e.g. `-- Q4_0 Q4_K`.

use moe_edge_kernels::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

const COLS: usize = 4096;
const MV_ROWS: usize = 4096;
const MM_ROWS: usize = 1024;
const TOKENS: usize = 64;

fn normals(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let mut v = 0.0f32;
            for _ in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            v
        })
        .collect()
}

/// `rows` weight rows: 16 distinct quantized rows repeated (quantizing 16M values with the
/// K-quant reference quantizers would dominate the run).
fn weights(ty: GgmlType, rows: usize) -> Vec<u8> {
    let distinct: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            let x = normals(i, COLS);
            let mut q = vec![0u8; ty.row_bytes(COLS).unwrap()];
            quantize_row_ref(ty, &x, &mut q);
            q
        })
        .collect();
    (0..rows).flat_map(|r| distinct[r % 16].clone()).collect()
}

/// Seconds per call (best of several timed batches of at least `min` total).
fn time(min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    let start = Instant::now();
    while start.elapsed() < min {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ];
    println!("levels supported: {:?}", KernelLevel::supported());
    println!(
        "{:<6} {:<12} {:>16} {:>16} {:>18}",
        "type", "level", "matvec GB/s", "matvec GFLOP/s", "matmul64 GFLOP/s"
    );
    for ty in types {
        if !wanted.is_empty() && !wanted.iter().any(|w| w.eq_ignore_ascii_case(ty.name())) {
            continue;
        }
        let w = weights(ty, MV_ROWS);
        let vdt = ty.vec_dot_type();
        let ab = vdt.row_bytes(COLS).unwrap();
        let mut acts = vec![0u8; ab * TOKENS];
        for t in 0..TOKENS {
            quantize_activation(
                vdt,
                &normals(100 + t as u64, COLS),
                &mut acts[t * ab..(t + 1) * ab],
            );
        }
        let mm_w = &w[..MM_ROWS * ty.row_bytes(COLS).unwrap()];
        for level in KernelLevel::supported() {
            let mut out = vec![0f32; MV_ROWS];
            let s = time(Duration::from_millis(400), || {
                matvec_at(level, ty, COLS, black_box(&w), &acts[..ab], &mut out);
                black_box(&out);
            });
            let gbs = w.len() as f64 / s / 1e9;
            let mv_gflops = 2.0 * (MV_ROWS * COLS) as f64 / s / 1e9;
            let mut out = vec![0f32; MM_ROWS * TOKENS];
            let s = time(Duration::from_millis(600), || {
                matmul_at(level, ty, COLS, black_box(mm_w), &acts, TOKENS, &mut out);
                black_box(&out);
            });
            let mm_gflops = 2.0 * (MM_ROWS * COLS * TOKENS) as f64 / s / 1e9;
            println!(
                "{:<6} {:<12} {:>16.2} {:>16.2} {:>18.2}",
                ty.name(),
                level.name(),
                gbs,
                mv_gflops,
                mm_gflops
            );
            if can_pack(ty, MV_ROWS) {
                let mut packed = vec![0u8; w.len()];
                let s = time(Duration::from_millis(300), || {
                    pack_rows(ty, COLS, black_box(&w), &mut packed);
                });
                println!(
                    "{:<6} packing: {:.2} GB/s",
                    ty.name(),
                    w.len() as f64 / s / 1e9
                );
                let mut out = vec![0f32; MV_ROWS];
                let s = time(Duration::from_millis(400), || {
                    matmul_packed_at(
                        level,
                        ty,
                        COLS,
                        black_box(&packed),
                        &acts[..ab],
                        1,
                        &mut out,
                    );
                    black_box(&out);
                });
                let gbs = w.len() as f64 / s / 1e9;
                let mv_gflops = 2.0 * (MV_ROWS * COLS) as f64 / s / 1e9;
                let mm_packed = &packed[..mm_w.len()];
                let mut out = vec![0f32; MM_ROWS * TOKENS];
                let s = time(Duration::from_millis(600), || {
                    matmul_packed_at(
                        level,
                        ty,
                        COLS,
                        black_box(mm_packed),
                        &acts,
                        TOKENS,
                        &mut out,
                    );
                    black_box(&out);
                });
                let mm_gflops = 2.0 * (MM_ROWS * COLS * TOKENS) as f64 / s / 1e9;
                println!(
                    "{:<6} {:<12} {:>16.2} {:>16.2} {:>18.2}",
                    format!("{}x8", ty.name()),
                    level.name(),
                    gbs,
                    mv_gflops,
                    mm_gflops
                );
            }
        }
    }
}
