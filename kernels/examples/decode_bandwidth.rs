//! How close a packed decode kernel comes to plain memory reads, with 1..N threads.
//!
//!     cargo run --release -p moe-edge-kernels --example decode_bandwidth -- [threads] [MiB] [type] [shape]
//!
//! Over a buffer far larger than the caches (768 MiB by default) each thread takes its share
//! and the example prints GB/s (best of 15 rounds after a warm-up; each round runs the three
//! passes in turn) for:
//! - `kernel`: one-token products of OLMoE-expert-shaped matrices (1024 × 2048, packed `type`:
//!   q4_0 by default, or q4_k, q5_k, q6_k, q8_0), as decode runs them; shape `down` takes
//!   the transposed shape (2048 × 1024, the down projection's);
//! - `read1`: one sequential stream of 256-bit loads per thread, no arithmetic;
//! - `read4`: four interleaved streams per thread (`stream_read`, the roofline probe of
//!   `moe-edge bench`).
//!
//! It also prints the median (and range) of kernel / read4 taken within each round, the figure
//! least moved by a shared machine's minute-to-minute noise.
//!
//! Pages are the allocator's (4 KiB unless the system gives huge pages to every mapping).

mod common;

use moe_edge_kernels::{matmul_packed, pack_rows_in_place, quantize_activation, GgmlType};
use std::time::Instant;

/// OLMoE's expert up and gate projections (columns, rows); `down` in the arguments swaps them.
const UP_SHAPE: (usize, usize) = (2048, 1024);

/// Interleaved rounds of the three passes.
const ROUNDS: usize = 15;

/// Valid rows of `ty` (every f16 scale 1/8, the other bytes random), packed as the runtime
/// packs them.
fn packed_matrices(ty: GgmlType, total: usize, cols: usize, rows: usize) -> (Vec<u8>, usize) {
    let block = ty.type_size();
    let matrix = ty.row_bytes(cols).expect("whole blocks") * rows;
    // Where each block keeps its f16 scales (bytes written as 1/8 = 0x3000).
    let scale_bytes: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        other => panic!("no packed decode kernel for {other:?}"),
    };
    let mut w = vec![0u8; total / matrix * matrix];
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for (i, b) in w.iter_mut().enumerate() {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let at = i % block;
        *b = if scale_bytes.contains(&at) {
            0x00
        } else if scale_bytes.iter().any(|&o| at == o + 1) {
            0x30
        } else {
            (s >> 33) as u8
        };
    }
    let mut scratch = Vec::new();
    for m in w.chunks_exact_mut(matrix) {
        pack_rows_in_place(ty, cols, m, &mut scratch);
    }
    (w, matrix)
}

fn one_stream(buf: &[u8]) -> u64 {
    // Eight u64 lanes per 64-byte line keep the loop free of a single dependency chain.
    let mut acc = [0u64; 8];
    for line in buf.chunks_exact(64) {
        for (a, word) in acc.iter_mut().zip(line.chunks_exact(8)) {
            *a ^= u64::from_le_bytes(word.try_into().expect("8 bytes"));
        }
    }
    acc.iter().fold(0, |x, &a| x ^ a)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(768);
    let ty = common::packed_type(args.next().as_deref());
    let (cols, rows) = match args.next().as_deref().unwrap_or("up") {
        "up" => UP_SHAPE,
        "down" => (UP_SHAPE.1, UP_SHAPE.0),
        other => panic!("unknown shape {other}: use up or down"),
    };
    let (w, matrix) = packed_matrices(ty, mib << 20, cols, rows);
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let act_ty = ty.vec_dot_type();
    let mut act = vec![0u8; act_ty.row_bytes(cols).expect("whole blocks")];
    quantize_activation(act_ty, &x, &mut act);
    let share = w.len().div_ceil(threads).div_ceil(matrix) * matrix;
    let on_threads = |work: &(dyn Fn(&[u8]) + Sync)| {
        std::thread::scope(|scope| {
            for part in w.chunks(share) {
                scope.spawn(move || work(part));
            }
        })
    };
    let kernel_pass = || {
        on_threads(&|part| {
            let mut out = vec![0f32; rows];
            for m in part.chunks_exact(matrix) {
                matmul_packed(ty, cols, m, &act, 1, &mut out);
            }
            std::hint::black_box(&out);
        })
    };
    let read1_pass = || {
        on_threads(&|part| {
            std::hint::black_box(one_stream(part));
        })
    };
    let read4_pass = || {
        on_threads(&|part| {
            std::hint::black_box(moe_edge_kernels::stream_read(part));
        })
    };
    // Passes interleaved round by round, so a slow minute on a shared machine slows all three
    // alike; the ratios are taken within each round.
    let gbs = |pass: &dyn Fn()| {
        let t = Instant::now();
        pass();
        w.len() as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    let passes: [&dyn Fn(); 3] = [&kernel_pass, &read1_pass, &read4_pass];
    for pass in passes {
        pass();
    }
    let rounds: Vec<[f64; 3]> = (0..ROUNDS).map(|_| passes.map(&gbs)).collect();
    let best = |i: usize| rounds.iter().map(|r| r[i]).fold(0.0, f64::max);
    let (kernel, read1, read4) = (best(0), best(1), best(2));
    let mut ratios: Vec<f64> = rounds.iter().map(|r| 100.0 * r[0] / r[2]).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "{ty:?}, threads {threads}, {} MiB: kernel {kernel:.1} GB/s, read1 {read1:.1} GB/s, read4 {read4:.1} GB/s (best of {ROUNDS}), kernel/read1 {:.0} %, kernel/read4 {:.0} %; kernel/read4 within a round: median {:.0} % ({:.0}-{:.0})",
        w.len() >> 20,
        100.0 * kernel / read1,
        100.0 * kernel / read4,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    );
}
