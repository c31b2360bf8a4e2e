//! Whether the machine's CPUs run at full speed side by side: a chain of dependent integer adds
//! (one per clock cycle on any x86-64 core) timed on one thread alone, then on every CPU at
//! once.
//!
//!     cargo run --release -p moe-edge-kernels --example core_share -- [rounds]
//!
//! Prints billions of adds per second per thread, which is the core's clock in GHz while the
//! chain runs. On a VM whose virtual CPUs are separate cores, the side-by-side figures match the
//! lone one; where the host puts two of them on one core's hyperthreads, or time-shares them,
//! each side-by-side figure drops (to about half). Compute-bound work such as prompt
//! processing then scales far below 2× from one thread to two, for llama.cpp and moe-edge
//! alike; this is why BENCHMARKS.md takes ratios within a round, or from runs made at the same
//! time (`tools/bench/simultaneous_pp.sh`).
//!
//! x86-64 only (elsewhere it says so and exits).

/// Dependent adds per timing.
#[cfg(target_arch = "x86_64")]
const ADDS: u64 = 2_000_000_000;

/// Billions of dependent adds per second on the calling thread.
#[cfg(target_arch = "x86_64")]
fn adds_per_ns() -> f64 {
    let mut x = 0u64;
    let mut left = ADDS;
    let t = std::time::Instant::now();
    // SAFETY: register arithmetic only: no memory access, no stack use, flags clobbered
    // (declared by default for `asm!`).
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, 1",
            "add {x}, 1",
            "add {x}, 1",
            "add {x}, 1",
            "sub {n}, 4",
            "jnz 2b",
            x = inout(reg) x,
            n = inout(reg) left,
            options(nomem, nostack),
        );
    }
    std::hint::black_box((x, left));
    ADDS as f64 / t.elapsed().as_nanos() as f64
}

#[cfg(target_arch = "x86_64")]
fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds: a whole number"))
        .unwrap_or(3);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cpus} CPUs; adds per ns per thread (≈ GHz): alone | all {cpus} at once");
    for _ in 0..rounds {
        let alone = adds_per_ns();
        let together: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cpus).map(|_| s.spawn(adds_per_ns)).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a probe thread does not panic"))
                .collect()
        });
        let together: Vec<String> = together.iter().map(|g| format!("{g:.2}")).collect();
        println!("{alone:.2} | {}", together.join(" "));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("core_share: x86-64 only");
    std::process::exit(1);
}
