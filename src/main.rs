use std::process::ExitCode;

use clap::{Parser, Subcommand};
use moe_edge::cli;

/// moe-edge: run sparse Mixture-of-Experts GGUF models on small CPUs, under a RAM budget.
#[derive(Parser, Debug)]
#[command(name = "moe-edge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a GGUF file's architecture, tensors and memory needs
    Inspect(cli::inspect::InspectArgs),
    /// Write every position's logits for a token sequence to a .npy file
    Logits(cli::logits::LogitsArgs),
    /// Measure prompt and generation speed (like llama-bench), with the bandwidth roofline
    Bench(cli::bench::BenchArgs),
    /// Write a real-shaped MoE model with random weights (benchmarks)
    Synth(cli::synth::SynthArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Logits(a) => cli::logits::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Synth(a) => cli::synth::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
