//! `moe-edge routing-stats`: what a routing trace says about expert use — a layer × expert
//! heatmap (terminal, SVG, PNG), entropy, imbalance, co-activated pairs and reuse distance.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::analysis::{heatmap, stats};
use crate::trace::read_trace;

#[derive(Args, Debug)]
pub struct RoutingStatsArgs {
    /// Routing trace (JSON Lines, as written by `run --trace`)
    pub trace: PathBuf,

    /// Write the layer × expert utilisation heatmap as SVG
    #[arg(long = "out-svg", value_name = "FILE")]
    pub out_svg: Option<PathBuf>,

    /// Write the heatmap as PNG (one square per cell, no text)
    #[arg(long = "out-png", value_name = "FILE")]
    pub out_png: Option<PathBuf>,

    /// Print all statistics as JSON instead of the text report
    #[arg(long)]
    pub json: bool,

    /// Experts per layer (default: the largest expert id in the trace plus one)
    #[arg(long = "n-expert", value_name = "N")]
    pub n_expert: Option<usize>,

    /// Co-activated pairs listed per layer
    #[arg(long = "top-pairs", value_name = "N", default_value_t = 3)]
    pub top_pairs: usize,
}

pub fn run(args: RoutingStatsArgs) -> Result<()> {
    let records = read_trace(&args.trace)?;
    let s = stats::compute(&records, args.n_expert, args.top_pairs)
        .with_context(|| format!("{}", args.trace.display()))?;
    let title = args
        .trace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(p) = &args.out_svg {
        std::fs::write(p, heatmap::svg(&s, &title))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &args.out_png {
        std::fs::write(p, heatmap::png_bytes(&s)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if args.json {
        print_out(&format!("{}\n", serde_json::to_string_pretty(&s)?))
    } else {
        print_out(&format!("{}\n{}", heatmap::terminal(&s), stats::report(&s)))
    }
}

/// Writes a command's output to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}
