//! `moe-edge logits`: every position's logits for a token sequence, as a NumPy `.npy` file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::ModelArgs;
use crate::model::LogitsWanted;

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids, evaluated at positions 0..n-1
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Output .npy file: little-endian f32, C order, shape [n_tokens, n_vocab]
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluate one token at a time instead of as one batch
    #[arg(long)]
    pub sequential: bool,
}

/// Writes a 2-D little-endian f32 array in NumPy's .npy format (version 1.0).
pub fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&out)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn run(args: LogitsArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let n = args.tokens.len();
    let mut state = model.new_state(n);
    let logits = if args.sequential {
        let mut all = Vec::with_capacity(n * model.cfg.n_vocab);
        for &t in &args.tokens {
            all.extend(
                model
                    .forward(&mut state, &[t], LogitsWanted::Last, None)?
                    .logits,
            );
        }
        all
    } else {
        model
            .forward(&mut state, &args.tokens, LogitsWanted::All, None)?
            .logits
    };
    write_npy(&args.out, &logits, n, model.cfg.n_vocab)?;
    eprintln!(
        "wrote {} x {} logits to {}",
        n,
        model.cfg.n_vocab,
        args.out.display()
    );
    Ok(())
}
