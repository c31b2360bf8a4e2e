//! `moe-edge synth`: writes real-shaped MoE models with random weights, for benchmarks.
//!
//! Quantized blocks are written directly (random quants, sane f16 scales) and streamed to disk,
//! so a 17 GB model needs no more RAM than one tensor row batch. The vocabulary is synthetic
//! (SentencePiece-style: control tokens, 256 byte tokens, then `▁tokN` pieces). Random routers
//! route near-uniformly: the worst case for an expert cache.

use crate::rng::XorShift64;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use half::f16;
use moe_edge_kernels::GgmlType;

use crate::gguf::writer::{GgufWriter, TensorSpec};
use crate::gguf::Value;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// olmoe: 2048 wide, 16 layers, 64 experts top-8, expert FFN 1024, vocab 50304
    Olmoe1b7b,
    /// qwen3moe: 2048 wide, 48 layers, 128 experts top-8, expert FFN 768, 32/4 heads of 128, vocab 151936
    Qwen3_30bA3b,
    /// qwen3moe: 512 wide, 4 layers, 16 experts top-4, expert FFN 512 (quick tests)
    Tiny,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SynthType {
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k")]
    Q4K,
    #[value(name = "q5_k")]
    Q5K,
    #[value(name = "q6_k")]
    Q6K,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Model shape
    #[arg(long, value_enum)]
    pub preset: Preset,
    /// Weight type of the matrices
    #[arg(long = "type", value_enum, default_value_t = SynthType::Q4_0)]
    pub ty: SynthType,
    /// Weight type of the output head (default: the matrices' type). llama.cpp's quantizer
    /// writes the output head of a Q4_0 or Q4_K_M file as q6_k.
    #[arg(long = "output-type", value_enum)]
    pub output_ty: Option<SynthType>,
    /// Output GGUF file
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
    /// Random seed
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

struct Shape {
    arch: &'static str,
    n_embd: u64,
    n_layer: u64,
    n_head: u64,
    n_head_kv: u64,
    head_dim: u64,
    n_expert: u64,
    n_expert_used: u64,
    ff_exp: u64,
    n_vocab: u64,
}

fn shape(p: Preset) -> Shape {
    match p {
        Preset::Olmoe1b7b => Shape {
            arch: "olmoe",
            n_embd: 2048,
            n_layer: 16,
            n_head: 16,
            n_head_kv: 16,
            head_dim: 128,
            n_expert: 64,
            n_expert_used: 8,
            ff_exp: 1024,
            n_vocab: 50304,
        },
        Preset::Qwen3_30bA3b => Shape {
            arch: "qwen3moe",
            n_embd: 2048,
            n_layer: 48,
            n_head: 32,
            n_head_kv: 4,
            head_dim: 128,
            n_expert: 128,
            n_expert_used: 8,
            ff_exp: 768,
            n_vocab: 151936,
        },
        Preset::Tiny => Shape {
            arch: "qwen3moe",
            n_embd: 512,
            n_layer: 4,
            n_head: 8,
            n_head_kv: 4,
            head_dim: 64,
            n_expert: 16,
            n_expert_used: 4,
            ff_exp: 512,
            n_vocab: 4096,
        },
    }
}

/// Random blocks of `ty` for `n` elements whose dequantized values have roughly `std` spread.
fn random_blocks(ty: GgmlType, n: usize, std: f32, rng: &mut XorShift64, out: &mut Vec<u8>) {
    let nb = n / ty.block_size();
    out.resize(nb * ty.type_size(), 0);
    rng.fill(out);
    let h = |x: f32| f16::from_f32(x).to_le_bytes();
    for b in out.chunks_exact_mut(ty.type_size()) {
        // A random sign per block keeps the weights zero-mean (random quants alone are biased,
        // e.g. Q4_0's q−8 averages −0.5), or every token's hidden state would share one
        // dominant direction and the router would pick the same experts for every token.
        let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        let jitter = sign * (0.75 + 0.5 * rng.unit());
        match ty {
            // d·(q−8), q uniform in 0..16: std ≈ 4.6·d
            GgmlType::Q4_0 => b[0..2].copy_from_slice(&h(std / 4.6 * jitter)),
            // d·q, q uniform in −128..128: std ≈ 74·d
            GgmlType::Q8_0 => b[0..2].copy_from_slice(&h(std / 74.0 * jitter)),
            GgmlType::Q4_K => {
                // d·sc·q − dmin·m with 6-bit sc, m: keep the product modest.
                b[0..2].copy_from_slice(&h(std / 140.0 * jitter));
                b[2..4].copy_from_slice(&h(std / 60.0 * jitter));
            }
            GgmlType::Q5_K => {
                // As Q4_K, with quants twice as wide (0..32).
                b[0..2].copy_from_slice(&h(std / 280.0 * jitter));
                b[2..4].copy_from_slice(&h(std / 60.0 * jitter));
            }
            GgmlType::Q6_K => {
                let l = b.len();
                b[l - 2..].copy_from_slice(&h(std / 1200.0 * jitter));
                for s in &mut b[192..208] {
                    *s &= 0x3f;
                }
            }
            _ => unreachable!("synth writes Q4_0, Q8_0, Q4_K, Q5_K, Q6_K"),
        }
    }
}

pub fn run(args: SynthArgs) -> Result<()> {
    let s = shape(args.preset);
    let ggml = |t: SynthType| match t {
        SynthType::Q4_0 => GgmlType::Q4_0,
        SynthType::Q8_0 => GgmlType::Q8_0,
        SynthType::Q4K => GgmlType::Q4_K,
        SynthType::Q5K => GgmlType::Q5_K,
        SynthType::Q6K => GgmlType::Q6_K,
    };
    let wty = ggml(args.ty);
    let out_ty = args.output_ty.map_or(wty, ggml);
    for d in [s.n_embd, s.ff_exp, s.n_head * s.head_dim] {
        if d % wty.block_size() as u64 != 0 {
            bail!(
                "{wty} needs widths that are multiples of {}",
                wty.block_size()
            );
        }
    }
    let a = s.arch;
    let k = |x: &str| format!("{a}.{x}");
    let mut tokens: Vec<Value> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<Value> = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    for b in 0..256 {
        tokens.push(Value::String(format!("<0x{b:02X}>")));
        types.push(Value::I32(6));
    }
    while (tokens.len() as u64) < s.n_vocab {
        tokens.push(Value::String(format!("\u{2581}tok{}", tokens.len())));
        types.push(Value::I32(1));
    }
    let scores: Vec<Value> = (0..s.n_vocab).map(|i| Value::F32(-(i as f32))).collect();
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), a.into()),
        (
            "general.name".into(),
            format!("synthetic {:?} {:?}", args.preset, args.ty).into(),
        ),
        (k("block_count"), Value::U32(s.n_layer as u32)),
        (k("context_length"), Value::U32(4096)),
        (k("embedding_length"), Value::U32(s.n_embd as u32)),
        (
            k("feed_forward_length"),
            // olmoe sizes its experts by feed_forward_length, qwen3moe by expert_feed_forward_length.
            Value::U32(if a == "olmoe" {
                s.ff_exp
            } else {
                s.ff_exp * s.n_expert_used
            } as u32),
        ),
        (k("expert_feed_forward_length"), Value::U32(s.ff_exp as u32)),
        (k("attention.head_count"), Value::U32(s.n_head as u32)),
        (k("attention.head_count_kv"), Value::U32(s.n_head_kv as u32)),
        (k("attention.key_length"), Value::U32(s.head_dim as u32)),
        (k("attention.value_length"), Value::U32(s.head_dim as u32)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        (k("rope.freq_base"), Value::F32(10000.0)),
        (k("expert_count"), Value::U32(s.n_expert as u32)),
        (k("expert_used_count"), Value::U32(s.n_expert_used as u32)),
        // llama_ftype: 2 = Q4_0, 7 = Q8_0, 15 = Q4_K_M, 17 = Q5_K_M, 18 = Q6_K
        (
            "general.file_type".into(),
            Value::U32(match args.ty {
                SynthType::Q4_0 => 2,
                SynthType::Q8_0 => 7,
                SynthType::Q4K => 15,
                SynthType::Q5K => 17,
                SynthType::Q6K => 18,
            }),
        ),
        ("tokenizer.ggml.model".into(), "llama".into()),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.scores".into(), Value::Array(scores)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ];
    let (e, qd, kd) = (s.n_embd, s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
    let f32t = GgmlType::F32;
    let mut specs = vec![TensorSpec::new("token_embd.weight", &[e, s.n_vocab], wty)];
    for l in 0..s.n_layer {
        let n = |x: &str| format!("blk.{l}.{x}");
        specs.push(TensorSpec::new(n("attn_norm.weight"), &[e], f32t));
        specs.push(TensorSpec::new(n("attn_q.weight"), &[e, qd], wty));
        specs.push(TensorSpec::new(n("attn_k.weight"), &[e, kd], wty));
        specs.push(TensorSpec::new(n("attn_v.weight"), &[e, kd], wty));
        specs.push(TensorSpec::new(n("attn_output.weight"), &[qd, e], wty));
        if a == "olmoe" {
            specs.push(TensorSpec::new(n("attn_q_norm.weight"), &[qd], f32t));
            specs.push(TensorSpec::new(n("attn_k_norm.weight"), &[kd], f32t));
        } else {
            specs.push(TensorSpec::new(
                n("attn_q_norm.weight"),
                &[s.head_dim],
                f32t,
            ));
            specs.push(TensorSpec::new(
                n("attn_k_norm.weight"),
                &[s.head_dim],
                f32t,
            ));
        }
        specs.push(TensorSpec::new(n("ffn_norm.weight"), &[e], f32t));
        specs.push(TensorSpec::new(
            n("ffn_gate_inp.weight"),
            &[e, s.n_expert],
            f32t,
        ));
        specs.push(TensorSpec::new(
            n("ffn_gate_exps.weight"),
            &[e, s.ff_exp, s.n_expert],
            wty,
        ));
        specs.push(TensorSpec::new(
            n("ffn_up_exps.weight"),
            &[e, s.ff_exp, s.n_expert],
            wty,
        ));
        specs.push(TensorSpec::new(
            n("ffn_down_exps.weight"),
            &[s.ff_exp, e, s.n_expert],
            wty,
        ));
    }
    specs.push(TensorSpec::new("output_norm.weight", &[e], f32t));
    specs.push(TensorSpec::new("output.weight", &[e, s.n_vocab], out_ty));
    let total: u64 = specs.iter().map(|t| t.n_bytes()).sum();
    eprintln!(
        "writing {} ({:.2} GiB, {} tensors)",
        args.out.display(),
        total as f64 / (1u64 << 30) as f64,
        specs.len()
    );
    let f =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut w = GgufWriter::new(
        BufWriter::with_capacity(8 << 20, f),
        &metadata,
        specs.clone(),
    )?;
    let mut rng = XorShift64(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut buf = Vec::new();
    let mut done = 0u64;
    let mut last_pct = 0;
    for t in &specs {
        let n: u64 = t.dims.iter().product();
        if t.ty == GgmlType::F32 {
            let is_norm = t.name.contains("norm");
            let std = 1.0 / (e as f32).sqrt() * 4.0;
            let vals: Vec<u8> = (0..n)
                .flat_map(|_| {
                    let v = if is_norm {
                        1.0
                    } else {
                        (rng.unit() * 2.0 - 1.0) * std * 1.7
                    };
                    v.to_le_bytes()
                })
                .collect();
            w.write_data(&vals)?;
        } else {
            let row = t.dims[0] as usize;
            let std = 1.0 / (row as f32).sqrt();
            let rows_per_write = ((4 << 20) / row).max(1) as u64;
            let n_rows = n / row as u64;
            let mut r = 0;
            while r < n_rows {
                let m = rows_per_write.min(n_rows - r);
                random_blocks(t.ty, row * m as usize, std, &mut rng, &mut buf);
                w.write_data(&buf)?;
                r += m;
            }
        }
        done += t.n_bytes();
        let pct = done * 100 / total.max(1);
        if pct >= last_pct + 10 {
            eprint!("{pct}% ");
            last_pct = pct;
        }
    }
    w.finish()?;
    eprintln!("\ndone");
    Ok(())
}
