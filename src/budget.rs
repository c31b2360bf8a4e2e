//! RAM budgets: parsing sizes, reading the box's limits, and splitting a budget between the
//! resident (non-expert) weights, the KV cache, working memory and the expert cache.
//!
//! Accounting (README "RAM budgets"): everything the process keeps resident counts —
//! non-expert weights (mapped, so their page cache is charged to the process's cgroup), the f32
//! KV cache, a fixed allowance for the runtime itself (code, heap, tokenizer, thread stacks) plus
//! the prompt batch's working buffers, and the expert cache slots. Experts are read with O_DIRECT
//! (or `pread` + `POSIX_FADV_DONTNEED`), so they are not also held in page cache.

use anyhow::{bail, Context, Result};

/// Runtime allowance: the binary, allocator slack and thread stacks (measured: a small model's
/// whole process peaks near 17 MiB RSS). The parsed metadata and tokenizer are added per model.
pub const RUNTIME_OVERHEAD: u64 = 16 << 20;

/// Parses `1.5G`, `800M`, `2GiB`, `512MB`, `1073741824` (binary units: K = 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("'{s}' is not a size (try 1.5G or 800M)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        u => bail!("'{s}': unknown size unit '{u}' (use K, M, G or T)"),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || !(1.0..=1e18).contains(&bytes) {
        bail!("'{s}' is not a usable size");
    }
    Ok(bytes as u64)
}

/// The memory limit of this process's cgroup (v2 `memory.max` or v1 `memory.limit_in_bytes`).
pub fn cgroup_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let candidates = if controllers.is_empty() {
            vec![format!("/sys/fs/cgroup{path}/memory.max")]
        } else if controllers.split(',').any(|c| c == "memory") {
            vec![format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")]
        } else {
            continue;
        };
        for c in candidates {
            if let Ok(v) = std::fs::read_to_string(&c) {
                if let Ok(n) = v.trim().parse::<u64>() {
                    // v1 reports "no limit" as a huge page-rounded number.
                    if n < (1u64 << 60) {
                        return Some(n);
                    }
                }
            }
        }
    }
    None
}

/// `MemAvailable` from /proc/meminfo.
pub fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// What the box can give this process: the smaller of its cgroup limit and available memory.
pub fn box_memory() -> Option<u64> {
    match (cgroup_limit(), mem_available()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How the budget is spent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BudgetPlan {
    pub budget: u64,
    pub non_expert: u64,
    pub kv_cache: u64,
    pub working: u64,
    pub slot_bytes: u64,
    pub slots: usize,
    /// Smallest budget that still runs: fixed parts plus one token's experts.
    pub minimum: u64,
}

impl BudgetPlan {
    /// Splits `budget`; errors with the minimum if it cannot hold one token's experts.
    pub fn new(
        budget: u64,
        non_expert: u64,
        kv_cache: u64,
        working: u64,
        slot_bytes: u64,
        experts_per_token: usize,
    ) -> Result<BudgetPlan> {
        let fixed = non_expert + kv_cache + working;
        let minimum = fixed + slot_bytes * experts_per_token as u64;
        if budget < minimum {
            bail!(
                "--ram-budget {} is too small: this model needs at least {} ({} non-expert weights + {} KV cache + {} working memory + {} for one token's {} experts); raise the budget or lower -c",
                fmt_mib(budget),
                fmt_mib(minimum),
                fmt_mib(non_expert),
                fmt_mib(kv_cache),
                fmt_mib(working),
                fmt_mib(slot_bytes * experts_per_token as u64),
                experts_per_token
            );
        }
        let slots = ((budget - fixed) / slot_bytes.max(1)) as usize;
        Ok(BudgetPlan {
            budget,
            non_expert,
            kv_cache,
            working,
            slot_bytes,
            slots,
            minimum,
        })
    }
}

pub fn fmt_mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("800M").unwrap(), 800 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn plan_refuses_a_budget_below_one_tokens_experts() {
        let err = BudgetPlan::new(100, 50, 10, 10, 20, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too small"), "{err}");
        let p = BudgetPlan::new(200, 50, 10, 10, 20, 2).unwrap();
        assert_eq!(p.minimum, 110);
        assert_eq!(p.slots, 6);
    }
}
