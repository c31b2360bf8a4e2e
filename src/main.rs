use std::process::ExitCode;

use clap::{Parser, Subcommand};
use moe_edge::cli;

/// moe-edge: run sparse Mixture-of-Experts GGUF models on small CPUs, under a RAM budget.
#[derive(Parser, Debug)]
#[command(
    name = "moe-edge",
    version,
    about,
    long_about = None,
    after_help = "Environment:\n  MOE_EDGE_KERNELS=LEVEL  force a lower kernel level: scalar, ssse3, avx2, avxvnni, avx512,\n                          avx512vnni, neon, neondotprod (default: the best this CPU has)\n  RUST_LOG=info|debug     more logging (default: warnings and errors)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt (default: the bundled model and a sample prompt)
    Run(cli::run::RunArgs),
    /// Chat interactively using the model's chat template
    Chat(cli::chat::ChatArgs),
    /// Tokenize text like llama-tokenize
    Tokenize(cli::tokenize::TokenizeArgs),
    /// Measure perplexity (and KL divergence against a saved base) like llama-perplexity
    Perplexity(cli::perplexity::PerplexityArgs),
    /// Show a GGUF file's architecture, tensors and memory needs
    Inspect(cli::inspect::InspectArgs),
    /// Write every position's logits for a token sequence to a .npy file
    Logits(cli::logits::LogitsArgs),
    /// Measure prompt and generation speed (like llama-bench), with the bandwidth roofline
    Bench(cli::bench::BenchArgs),
    /// Write a real-shaped MoE model with random weights (benchmarks)
    Synth(cli::synth::SynthArgs),
    /// Expert utilisation heatmap (terminal, SVG, PNG), entropy, co-activation and reuse distance of a routing trace
    RoutingStats(cli::routing_stats::RoutingStatsArgs),
    /// Replay a routing trace against expert-cache policies (LRU, LFU, reuse, Belady's optimum)
    Simulate(cli::simulate::SimulateArgs),
    /// Caps x budgets x policies: decode speed, hit rate, perplexity and KL divergence, with a plot
    Sweep(cli::sweep::SweepArgs),
}

impl Command {
    /// The model options of the commands that load a model (their `-t` sizes the pool).
    fn model_args(&self) -> Option<&cli::ModelArgs> {
        match self {
            Command::Run(a) => Some(&a.model),
            Command::Chat(a) => Some(&a.model),
            Command::Perplexity(a) => Some(&a.model),
            Command::Inspect(a) => Some(&a.model),
            Command::Logits(a) => Some(&a.model),
            Command::Bench(a) => Some(&a.model),
            Command::Sweep(a) => Some(&a.model),
            _ => None,
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(a) => cli::run::run(a),
        Command::Chat(a) => cli::chat::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Logits(a) => cli::logits::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Synth(a) => cli::synth::run(a),
        Command::RoutingStats(a) => cli::routing_stats::run(a),
        Command::Simulate(a) => cli::simulate::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
    }
}

/// Builds the compute thread pool with the command's `-t` (default: all cores).
fn start_pool(command: &Command) -> anyhow::Result<()> {
    let threads = command.model_args().and_then(|m| m.threads);
    cli::build_pool(threads)
}

/// The forward pass frees and reallocates the same activation buffers (megabytes each in prompt
/// processing) for every layer. glibc would hand big ones back to the kernel on free and take
/// fresh zeroed pages on the next allocation (page faults and page clearing were 7 % of prompt
/// time); keep them in the heap instead. Their size is bounded by one micro-batch's buffers,
/// which the RAM budget's working-memory allowance counts.
fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator's thresholds; called before any other thread
    // exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// llama.cpp's multi-letter short flags, which clap cannot declare, spelled as our long ones.
fn llama_style_flag(arg: std::ffi::OsString) -> std::ffi::OsString {
    match arg.to_str() {
        Some("-ctk") => "--cache-type-k".into(),
        Some("-ctv") => "--cache-type-v".into(),
        _ => arg,
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    keep_freed_memory_for_reuse();
    let cli = Cli::parse_from(std::env::args_os().map(llama_style_flag));
    let result = start_pool(&cli.command).and_then(|()| {
        // The command runs on a worker of the pool, so its parallel regions are forked from
        // inside the pool (no job is injected from outside per region, which costs rayon an
        // allocation now and then): the decode step allocates nothing.
        rayon::scope(move |_| dispatch(cli.command))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
