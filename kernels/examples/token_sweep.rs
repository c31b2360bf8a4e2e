//! GFLOP/s of a packed product against its token count, as a prompt's MoE hands the kernels
//! (each expert gets the tokens routed to it: about 16 of a 128-token prompt on OLMoE, often
//! odd, often under 8).
//!
//!     cargo run --release -p moe-edge-kernels --example token_sweep -- [type] [max tokens]
//!
//! One OLMoE-expert-shaped matrix (1024 × 2048, packed `type`: q4_0 by default, or q4_k, q5_k,
//! q6_k, q8_0) stays in cache; each line is one token count, the best of 1000 products, one
//! thread, at the active kernel level (`MOE_EDGE_KERNELS` lowers it).

mod common;

use moe_edge_kernels::{matmul_packed, pack_rows_in_place, quantize_activation};
use std::time::Instant;

const COLS: usize = 2048;
const ROWS: usize = 1024;

fn main() {
    let mut args = std::env::args().skip(1);
    let ty = common::packed_type(args.next().as_deref());
    let max_tokens: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    // Valid blocks: quantize random rows with the reference quantizer, then pack.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let rb = ty.row_bytes(COLS).expect("whole blocks");
    let mut w = vec![0u8; rb * ROWS];
    let row: Vec<f32> = (0..COLS).map(|_| next()).collect();
    for dst in w.chunks_exact_mut(rb) {
        moe_edge_kernels::quantize_row_ref(ty, &row, dst);
    }
    pack_rows_in_place(ty, COLS, &mut w, &mut Vec::new());
    let act_ty = ty.vec_dot_type();
    let arb = act_ty.row_bytes(COLS).expect("whole blocks");
    let x: Vec<f32> = (0..COLS * max_tokens).map(|_| next()).collect();
    let mut acts = vec![0u8; arb * max_tokens];
    for (src, dst) in x.chunks_exact(COLS).zip(acts.chunks_exact_mut(arb)) {
        quantize_activation(act_ty, src, dst);
    }
    let mut out = vec![0f32; ROWS * max_tokens];
    println!(
        "{ty:?}, {ROWS} x {COLS}, level {:?}",
        moe_edge_kernels::active_level()
    );
    for n in 1..=max_tokens {
        let best = (0..1000)
            .map(|_| {
                let t = Instant::now();
                matmul_packed(ty, COLS, &w, &acts[..arb * n], n, &mut out[..ROWS * n]);
                std::hint::black_box(&out);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        let gflops = 2.0 * (ROWS * COLS * n) as f64 / best / 1e9;
        println!("tokens {n:>3}: {gflops:6.1} GFLOP/s");
    }
}
