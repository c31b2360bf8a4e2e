//! How close the packed Q4_0 decode kernel comes to plain memory reads, with 1..N threads.
//!
//!     cargo run --release -p moe-edge-kernels --example decode_bandwidth -- [threads] [MiB]
//!
//! Over a buffer far larger than the caches (768 MiB by default) each thread takes its share
//! and the example prints GB/s (best of 5 passes after a warm-up) for:
//! - `kernel`: one-token products of OLMoE-expert-shaped matrices (1024 × 2048, packed Q4_0),
//!   as decode runs them;
//! - `read1`: one sequential stream of 256-bit loads per thread, no arithmetic;
//! - `read4`: four interleaved streams per thread (`stream_read`, the roofline probe of
//!   `moe-edge bench`).
//!
//! Pages are the allocator's (4 KiB unless the system gives huge pages to every mapping).

use moe_edge_kernels::{matmul_packed, pack_rows_in_place, quantize_activation, GgmlType};
use std::time::Instant;

const COLS: usize = 2048;
const ROWS: usize = 1024;

fn best_gbs(bytes: usize, mut pass: impl FnMut()) -> f64 {
    pass();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            pass();
            bytes as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Valid Q4_0 rows (scale 1/8 as f16, random nibbles), packed as the runtime packs them.
fn packed_matrices(total: usize) -> (Vec<u8>, usize) {
    let matrix = ROWS * COLS / 32 * 18;
    let mut w = vec![0u8; total / matrix * matrix];
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for (i, b) in w.iter_mut().enumerate() {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *b = match i % 18 {
            0 => 0x00,
            1 => 0x30,
            _ => (s >> 33) as u8,
        };
    }
    let mut scratch = Vec::new();
    for m in w.chunks_exact_mut(matrix) {
        pack_rows_in_place(GgmlType::Q4_0, COLS, m, &mut scratch);
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
    let (w, matrix) = packed_matrices(mib << 20);
    let x: Vec<f32> = (0..COLS)
        .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let mut act = vec![0u8; COLS / 32 * 34];
    quantize_activation(GgmlType::Q8_0, &x, &mut act);
    let share = w.len().div_ceil(threads).div_ceil(matrix) * matrix;
    let on_threads = |work: &(dyn Fn(&[u8]) + Sync)| {
        std::thread::scope(|scope| {
            for part in w.chunks(share) {
                scope.spawn(move || work(part));
            }
        })
    };
    let kernel = best_gbs(w.len(), || {
        on_threads(&|part| {
            let mut out = vec![0f32; ROWS];
            for m in part.chunks_exact(matrix) {
                matmul_packed(GgmlType::Q4_0, COLS, m, &act, 1, &mut out);
            }
            std::hint::black_box(&out);
        })
    });
    let read1 = best_gbs(w.len(), || {
        on_threads(&|part| {
            std::hint::black_box(one_stream(part));
        })
    });
    let read4 = best_gbs(w.len(), || {
        on_threads(&|part| {
            std::hint::black_box(moe_edge_kernels::stream_read(part));
        })
    });
    println!(
        "threads {threads}, {} MiB: kernel {kernel:.1} GB/s, read1 {read1:.1} GB/s, read4 {read4:.1} GB/s, kernel/read1 {:.0} %, kernel/read4 {:.0} %",
        w.len() >> 20,
        100.0 * kernel / read1,
        100.0 * kernel / read4
    );
}
