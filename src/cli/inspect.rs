//! `moe-edge inspect`: what a GGUF file holds and what it needs in memory.

use anyhow::Result;
use clap::Args;

use super::ModelArgs;
use crate::gguf::GgufFile;
use crate::model::weights::Weights;
use crate::model::Config;

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print every metadata key (arrays abbreviated)
    #[arg(long)]
    pub metadata: bool,
    /// Print the tensor table
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tensors: bool,
}

pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}

pub fn run(args: InspectArgs) -> Result<()> {
    let path = args.model.model_path();
    let file = GgufFile::open(&path)?;
    let h = file.header();
    println!("file: {}", path.display());
    println!(
        "GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at offset {}, {}",
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.alignment,
        h.data_offset,
        fmt_bytes(file.file_len())
    );
    println!("kernel level: {}", moe_edge_kernels::active_level());
    if args.metadata {
        println!("\nmetadata:");
        for (k, v) in h.metadata.iter() {
            println!("  {k} = {}", v.summary());
        }
    }
    if args.tensors && !h.tensors.is_empty() {
        println!(
            "\n{:<40} {:>6} {:>24} {:>12}",
            "tensor", "type", "shape", "bytes"
        );
        for t in &h.tensors {
            let shape = format!("{:?}", t.dims);
            println!(
                "{:<40} {:>6} {:>24} {:>12}",
                t.name,
                t.ggml_type.name(),
                shape,
                t.n_bytes
            );
        }
    }
    if h.tensors.is_empty() {
        println!("\nvocab-only file (no tensors)");
        return Ok(());
    }
    let cfg = Config::from_gguf(&file)?;
    let w = Weights::load(&file, &cfg)?;
    println!("\narchitecture: {}", cfg.arch.name());
    println!(
        "layers {}, width {}, heads {} (kv {}), head dim {}, vocab {}, context {}",
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.n_head_kv,
        cfg.head_dim,
        cfg.n_vocab,
        cfg.n_ctx_train
    );
    let resident = w.resident_bytes();
    let total_params: u64 = h.tensors.iter().map(|t| t.n_elements()).sum();
    if cfg.is_moe() {
        let layouts = w.expert_layouts();
        let per_expert: Vec<u64> = layouts
            .iter()
            .flatten()
            .map(|l| l.bytes_per_expert())
            .collect();
        let expert_params: u64 = layouts
            .iter()
            .flatten()
            .map(|l| {
                (l.gate.rows * l.gate.cols + l.up.rows * l.up.cols + l.down.rows * l.down.cols)
                    as u64
            })
            .sum();
        let all_experts: u64 = per_expert.iter().map(|b| b * cfg.n_expert as u64).sum();
        let one_token: u64 = per_expert
            .iter()
            .map(|b| b * cfg.n_expert_used as u64)
            .sum();
        let expert_params_total = expert_params * cfg.n_expert as u64;
        let active = total_params - expert_params_total + expert_params * cfg.n_expert_used as u64;
        println!(
            "experts: {} per layer, {} used per token, expert FFN {}, {} per expert",
            cfg.n_expert,
            cfg.n_expert_used,
            layouts
                .iter()
                .flatten()
                .next()
                .map(|l| l.gate.rows)
                .unwrap_or(0),
            fmt_bytes(per_expert.first().copied().unwrap_or(0))
        );
        println!(
            "parameters: {:.2} M total, {:.2} M active per token",
            total_params as f64 / 1e6,
            active as f64 / 1e6
        );
        println!(
            "memory, all experts resident: {}",
            fmt_bytes(resident + all_experts)
        );
        println!(
            "memory, non-expert weights + one token's experts: {} ({} + {})",
            fmt_bytes(resident + one_token),
            fmt_bytes(resident),
            fmt_bytes(one_token)
        );
    } else {
        println!(
            "dense model: {:.2} M parameters, {}",
            total_params as f64 / 1e6,
            fmt_bytes(resident)
        );
    }
    Ok(())
}
