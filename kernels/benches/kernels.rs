//! Kernel microbenchmarks (divan, one thread), each kernel at every level this CPU supports, so
//! the scalar twins and the SIMD levels are measured side by side in one run. Types: `Q4_0`,
//! `Q8_0`, `Q4_K`, `Q5_K`, `Q6_K`, `F16`, `BF16` (and `F32` in `matmul`, a router's type) in the
//! ggml row layout and `Q4_0x8`, `Q8_0x8`,
//! `Q4_Kx8`, `Q5_Kx8`, `Q6_Kx8` in the interleaved layouts of `packed/layouts.rs`.
//!
//! - `matvec::<TYPE>::<level>`: 4096 × 4096 weights times one activation row (decode).
//!   Counters: bytes of weights (divan prints GB/s) and flops, 2 per multiply-add, printed as
//!   `item/s`: read `Gitem/s` as GFLOP/s. One matrix is reused, so it may sit in a large L3.
//! - `matvec_dram::<TYPE>::<level>`: the same at the active level, cycling through copies of the
//!   matrix that span 256 MiB, so the weights come from memory as in real decode.
//! - `matmul::<TYPE>::<level>`: 1024 × 4096 weights times 64 activation rows (prompt
//!   processing). Counter: flops (`Gitem/s` = GFLOP/s).
//! - `matmul_expert::<TYPE>::<level>`: 4096 × 4096 weights times 16 activation rows, cycling
//!   through copies as `matvec_dram` does: one MoE expert's share of a prompt, weights from
//!   memory. Counter: flops.
//! - `pack::<TYPE>`: repacking 4096 rows into the interleaved layout (GB/s).
//! - `attention::{dot_rows, weighted_rows}::<level>`: scores and the weighted sum of values for
//!   one head of 128 over 4096 cached positions (stride 512 floats: 4 KV heads side by side).
//!   Counters: bytes of keys or values read, flops.
//! - `stream_read_128mib::<level>`: the memory-bandwidth probe, at the active level.
//!
//! Activations are quantized to the weight type's `vec_dot_type` before timing: only the dot
//! products are measured. Weights are 16 distinct quantized rows repeated (quantizing 16M values
//! with the K-quant reference quantizers would dominate the setup).
//!
//! Run everything (about 45 s with two levels; each benchmark stops after about 1 s):
//!
//!     cargo bench -p moe-edge-kernels --bench kernels
//!
//! Filters are divan's: regular expressions over `kernels::group::TYPE::level` (unanchored, so
//! `Q4_K` also matches `Q4_Kx8`), e.g. one type, one kernel at one level, or one group:
//!
//!     cargo bench -p moe-edge-kernels --bench kernels -- Q4_K
//!     cargo bench -p moe-edge-kernels --bench kernels -- '^kernels::matvec::Q4_0::avx2$'
//!     cargo bench -p moe-edge-kernels --bench kernels -- attention
//!
//! `MOE_EDGE_KERNELS=<level>` changes only the level of `matvec_dram`, `matmul_expert` and
//! `stream_read_128mib`;
//! the others run every supported level through the `*_at` functions. `--max-time 5
//! --sample-count 500` give steadier numbers; `cargo test -p moe-edge-kernels --benches` runs
//! each benchmark once as a smoke test.

use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use moe_edge_kernels::{
    active_level, dot_rows_at, matmul_at, matmul_packed_at, matvec_at, pack_rows,
    quantize_activation, quantize_row_ref, stream_read, weighted_rows_at, GgmlType, KernelLevel,
};

fn main() {
    divan::main();
}

/// Columns of every weight matrix.
const COLS: usize = 4096;
/// Rows of the matrix-vector benchmarks.
const MV_ROWS: usize = 4096;
/// Rows of the matrix-matrix benchmarks.
const MM_ROWS: usize = 1024;
/// Activation rows of the matrix-matrix benchmarks.
const TOKENS: usize = 64;
/// Tokens per expert in `matmul_expert`.
const EXPERT_TOKENS: usize = 16;
/// Bytes of weight copies `matvec_dram` cycles through (8× a 32 MiB L3).
const DRAM_BYTES: usize = 256 << 20;

/// Every level this CPU supports, scalar first.
fn levels() -> Vec<KernelLevel> {
    KernelLevel::supported()
}

/// A weight type and layout (the divan type parameter names it: `Q4_0` is the ggml row layout,
/// `Q4_0x8` the interleaved one of `packed/layouts.rs`).
trait Weights {
    const TYPE: GgmlType;
    const PACKED: bool;
}

macro_rules! weight_types {
    ($($name:ident => $ty:ident, $packed:literal);* $(;)?) => {$(
        #[allow(non_camel_case_types)]
        struct $name;
        impl Weights for $name {
            const TYPE: GgmlType = GgmlType::$ty;
            const PACKED: bool = $packed;
        }
    )*};
}

weight_types!(
    Q4_0 => Q4_0, false;
    Q8_0 => Q8_0, false;
    Q4_K => Q4_K, false;
    Q5_K => Q5_K, false;
    Q6_K => Q6_K, false;
    F16 => F16, false;
    BF16 => BF16, false;
    F32 => F32, false;
    Q4_0x8 => Q4_0, true;
    Q4_Kx8 => Q4_K, true;
    Q6_Kx8 => Q6_K, true;
    Q8_0x8 => Q8_0, true;
    Q5_Kx8 => Q5_K, true;
);

/// Deterministic roughly normal values (sum of four uniforms, variance 1/3).
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

/// `rows` weight rows of `COLS` elements: 16 distinct quantized rows repeated.
fn weights(ty: GgmlType, rows: usize) -> Vec<u8> {
    let rb = ty.row_bytes(COLS).expect("COLS is whole blocks");
    let distinct: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            let mut q = vec![0u8; rb];
            quantize_row_ref(ty, &normals(i, COLS), &mut q);
            q
        })
        .collect();
    let mut w = Vec::with_capacity(rows * rb);
    for r in 0..rows {
        w.extend_from_slice(&distinct[r % 16]);
    }
    w
}

/// `n` activation rows quantized to `ty.vec_dot_type()`, back to back.
fn activations(ty: GgmlType, n: usize) -> Vec<u8> {
    let vdt = ty.vec_dot_type();
    let ab = vdt.row_bytes(COLS).expect("COLS is whole blocks");
    let mut acts = vec![0u8; ab * n];
    for (t, row) in acts.chunks_exact_mut(ab).enumerate() {
        quantize_activation(vdt, &normals(100 + t as u64, COLS), row);
    }
    acts
}

/// `rows` weight rows of `T` in its layout (repacked for the interleaved types).
fn weights_of<T: Weights>(rows: usize) -> Vec<u8> {
    let w = weights(T::TYPE, rows);
    if !T::PACKED {
        return w;
    }
    let mut packed = vec![0u8; w.len()];
    pack_rows(T::TYPE, COLS, &w, &mut packed);
    packed
}

/// `w` (whole rows of `T`) times `n_tokens` activation rows, in `T`'s layout.
fn multiply<T: Weights>(
    level: KernelLevel,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    if T::PACKED {
        matmul_packed_at(level, T::TYPE, COLS, w, acts, n_tokens, out);
    } else if n_tokens == 1 {
        matvec_at(level, T::TYPE, COLS, w, acts, out);
    } else {
        matmul_at(level, T::TYPE, COLS, w, acts, n_tokens, out);
    }
}

/// Flops of `rows × COLS` weights times `tokens` activation rows (2 per multiply-add).
fn flops(rows: usize, tokens: usize) -> ItemsCount {
    ItemsCount::new(2 * rows * COLS * tokens)
}

/// Decode: 4096 × 4096 weights times one activation row. Counters: weight bytes (GB/s) and
/// flops (`item/s`). One matrix (9.4 MB for Q4_0, 32 MiB for F16) is reused every iteration, so
/// on a CPU with a large L3 it is partly cache-resident: this measures the kernel; `matvec_dram`
/// measures decode from memory.
#[divan::bench(
    types = [Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, Q4_0x8, Q8_0x8, Q4_Kx8, Q5_Kx8, Q6_Kx8],
    args = levels(),
    max_time = 1,
)]
fn matvec<T: Weights>(bencher: Bencher, level: KernelLevel) {
    let w = weights_of::<T>(MV_ROWS);
    let act = activations(T::TYPE, 1);
    let mut out = vec![0f32; MV_ROWS];
    bencher
        .counter(BytesCount::new(w.len()))
        .counter(flops(MV_ROWS, 1))
        .bench_local(|| {
            multiply::<T>(level, black_box(&w), black_box(&act), 1, &mut out);
            black_box(&mut out);
        });
}

/// Decode with the weights streamed from memory, at the active level: the `matvec` of each
/// iteration uses the next of several copies of the matrix that together span `DRAM_BYTES`,
/// far beyond any L3. Counters as `matvec`; compare its GB/s with `stream_read`.
#[divan::bench(
    types = [Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, Q4_0x8, Q8_0x8, Q4_Kx8, Q5_Kx8, Q6_Kx8],
    args = [active_level()],
    max_time = 1,
)]
fn matvec_dram<T: Weights>(bencher: Bencher, level: KernelLevel) {
    let one = weights_of::<T>(MV_ROWS);
    let copies = DRAM_BYTES.div_ceil(one.len());
    let w = one.repeat(copies);
    let act = activations(T::TYPE, 1);
    let mut out = vec![0f32; MV_ROWS];
    let mut next = w.chunks_exact(one.len()).cycle();
    bencher
        .counter(BytesCount::new(one.len()))
        .counter(flops(MV_ROWS, 1))
        .bench_local(|| {
            let copy = next.next().expect("a cycle of copies never ends");
            multiply::<T>(level, black_box(copy), black_box(&act), 1, &mut out);
            black_box(&mut out);
        });
}

/// Prompt processing: 1024 × 4096 weights times 64 activation rows. Counter: flops (`item/s`,
/// read as FLOP/s).
#[divan::bench(
    types = [Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32, Q4_0x8, Q8_0x8, Q4_Kx8, Q5_Kx8, Q6_Kx8],
    args = levels(),
    max_time = 1,
)]
fn matmul<T: Weights>(bencher: Bencher, level: KernelLevel) {
    let w = weights_of::<T>(MM_ROWS);
    let acts = activations(T::TYPE, TOKENS);
    let mut out = vec![0f32; MM_ROWS * TOKENS];
    bencher.counter(flops(MM_ROWS, TOKENS)).bench_local(|| {
        multiply::<T>(level, black_box(&w), black_box(&acts), TOKENS, &mut out);
        black_box(&mut out);
    });
}

/// Prompt processing as an MoE expert sees it: 4096 × 4096 weights times 16 activation rows
/// (an OLMoE-shaped pp128 routes 128 × 8 tokens over 64 experts), the weights streamed from
/// memory as in `matvec_dram`, at the active level. Counter: flops.
#[divan::bench(
    types = [Q4_0, Q8_0, Q4_K, Q6_K, Q4_0x8, Q8_0x8, Q4_Kx8, Q5_Kx8, Q6_Kx8],
    args = [active_level()],
    max_time = 1,
)]
fn matmul_expert<T: Weights>(bencher: Bencher, level: KernelLevel) {
    let one = weights_of::<T>(MV_ROWS);
    let copies = DRAM_BYTES.div_ceil(one.len());
    let w = one.repeat(copies);
    let acts = activations(T::TYPE, EXPERT_TOKENS);
    let mut out = vec![0f32; MV_ROWS * EXPERT_TOKENS];
    let mut next = w.chunks_exact(one.len()).cycle();
    bencher
        .counter(flops(MV_ROWS, EXPERT_TOKENS))
        .bench_local(|| {
            let copy = next.next().expect("a cycle of copies never ends");
            multiply::<T>(
                level,
                black_box(copy),
                black_box(&acts),
                EXPERT_TOKENS,
                &mut out,
            );
            black_box(&mut out);
        });
}

/// Repacking 4096 row-major rows into the interleaved layout (no levels: plain byte shuffles).
/// Counter: bytes (GB/s).
#[divan::bench(types = [Q4_0x8, Q8_0x8, Q4_Kx8, Q5_Kx8, Q6_Kx8], max_time = 1)]
fn pack<T: Weights>(bencher: Bencher) {
    let w = weights(T::TYPE, MV_ROWS);
    let mut packed = vec![0u8; w.len()];
    bencher.counter(BytesCount::new(w.len())).bench_local(|| {
        pack_rows(T::TYPE, COLS, black_box(&w), &mut packed);
        black_box(&mut packed);
    });
}

/// Attention over a KV cache of one layer: 4096 cached positions, head size 128, rows
/// `STRIDE` floats apart (4 KV heads side by side, as in the cache of `forward`).
mod attention {
    use super::*;

    const HEAD: usize = 128;
    const POSITIONS: usize = 4096;
    const STRIDE: usize = 4 * HEAD;

    fn cache() -> Vec<f32> {
        normals(7, POSITIONS * STRIDE)
    }

    /// Scores `q · k_p` for every position. Counters: key bytes read (GB/s), flops (`item/s`).
    #[divan::bench(args = levels(), max_time = 1)]
    fn dot_rows(bencher: Bencher, level: KernelLevel) {
        let keys = cache();
        let q = normals(8, HEAD);
        let mut scores = vec![0f32; POSITIONS];
        bencher
            .counter(BytesCount::new(POSITIONS * HEAD * 4))
            .counter(ItemsCount::new(2 * POSITIONS * HEAD))
            .bench_local(|| {
                dot_rows_at(
                    level,
                    black_box(&q),
                    black_box(&keys),
                    STRIDE,
                    0.088,
                    &mut scores,
                );
                black_box(&mut scores);
            });
    }

    /// Weighted sum of every position's value row. Counters: value bytes read (GB/s), flops
    /// (`item/s`).
    #[divan::bench(args = levels(), max_time = 1)]
    fn weighted_rows(bencher: Bencher, level: KernelLevel) {
        let values = cache();
        let w: Vec<f32> = normals(9, POSITIONS)
            .iter()
            .map(|x| x.abs() / POSITIONS as f32)
            .collect();
        let mut out = vec![0f32; HEAD];
        bencher
            .counter(BytesCount::new(POSITIONS * HEAD * 4))
            .counter(ItemsCount::new(2 * POSITIONS * HEAD))
            .bench_local(|| {
                weighted_rows_at(level, black_box(&w), black_box(&values), STRIDE, &mut out);
                black_box(&mut out);
            });
    }
}

/// SwiGLU over one OLMoE expert's hidden width (1024) times 16 tokens. Counter: values
/// (`item/s`).
#[divan::bench(args = levels(), max_time = 1)]
fn swiglu_expert(bencher: Bencher, level: KernelLevel) {
    let n = 1024 * 16;
    let gate0: Vec<f32> = normals(11, n).iter().map(|x| 4.0 * x).collect();
    let up = normals(12, n);
    let mut gate = gate0.clone();
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        gate.copy_from_slice(&gate0);
        moe_edge_kernels::swiglu_at(level, black_box(&mut gate), black_box(&up));
    });
}

/// Memory bandwidth: one pass over 128 MiB at the active level (`MOE_EDGE_KERNELS` lowers it).
/// Counter: bytes (GB/s).
#[divan::bench(args = [active_level()], max_time = 1)]
fn stream_read_128mib(bencher: Bencher, _level: KernelLevel) {
    let buf: Vec<u8> = (0..128usize << 20).map(|i| ((i * 31) >> 7) as u8).collect();
    bencher
        .counter(BytesCount::new(buf.len()))
        .bench_local(|| stream_read(black_box(&buf)));
}
