//! Which instruction-set level the kernels run at: detected once at run time, optionally lowered
//! with `MOE_EDGE_KERNELS=<level>`.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// A family of kernels, from the portable scalar twins up to the widest SIMD this build knows.
/// Levels of the other CPU architecture are never supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelLevel {
    Scalar,
    /// x86-64 SSSE3 (128-bit `pmaddubsw`), for CPUs without AVX2: Atom and Celeron J/N-series,
    /// Core 2, Xeons before Haswell. Packed Q4_0, Q8_0, Q4_K, Q5_K and Q6_K kernels, attention
    /// rows, axpy and the read probe; no FMA, so their accumulate step rounds twice (see
    /// `scalar::packed`).
    Ssse3,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// `Avx2` plus AVX-VNNI (the VEX-encoded 256-bit `vpdpbusd`), for CPUs that have it without
    /// AVX-512: Intel Alder Lake-N (N100, N97, i3-N305), Alder/Raptor/Meteor/Arrow Lake, and AMD
    /// Zen 5. Packed Q4_0 and Q4_K products run `vpdpbusd` kernels (except Q4_0 decode, which
    /// is bound by memory bandwidth and keeps the AVX2 form); everything else runs the `Avx2`
    /// kernels.
    AvxVnni,
    /// AVX-512 F/BW/VL on top of `Avx2`.
    Avx512,
    /// `Avx512` plus AVX-512 VNNI.
    Avx512Vnni,
    /// AArch64 Advanced SIMD.
    Neon,
    /// `Neon` plus the SDOT/UDOT dot-product instructions.
    NeonDotprod,
}

impl KernelLevel {
    pub const ALL: [KernelLevel; 8] = [
        KernelLevel::Scalar,
        KernelLevel::Ssse3,
        KernelLevel::Avx2,
        KernelLevel::AvxVnni,
        KernelLevel::Avx512,
        KernelLevel::Avx512Vnni,
        KernelLevel::Neon,
        KernelLevel::NeonDotprod,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            KernelLevel::Scalar => "scalar",
            KernelLevel::Ssse3 => "ssse3",
            KernelLevel::Avx2 => "avx2",
            KernelLevel::AvxVnni => "avxvnni",
            KernelLevel::Avx512 => "avx512",
            KernelLevel::Avx512Vnni => "avx512vnni",
            KernelLevel::Neon => "neon",
            KernelLevel::NeonDotprod => "neondotprod",
        }
    }

    /// Whether this CPU can run this level's kernels (checked at run time).
    pub fn is_supported(self) -> bool {
        match self {
            KernelLevel::Scalar => true,
            KernelLevel::Ssse3 => x86_has_ssse3(),
            KernelLevel::Avx2 => x86_has_avx2(),
            KernelLevel::AvxVnni => x86_has_avx2() && x86_has_avx_vnni(),
            KernelLevel::Avx512 => x86_has_avx2() && x86_has_avx512(),
            KernelLevel::Avx512Vnni => x86_has_avx2() && x86_has_avx512() && x86_has_vnni(),
            KernelLevel::Neon => arm_has_neon(),
            KernelLevel::NeonDotprod => arm_has_neon() && arm_has_dotprod(),
        }
    }

    /// Every level this CPU supports, lowest first (always starts with `Scalar`).
    pub fn supported() -> Vec<KernelLevel> {
        KernelLevel::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// The levels the test suites compare with the scalar twins: every supported level, or, if
    /// `MOE_EDGE_TEST_LEVELS` names some (comma-separated), only those of them this CPU supports.
    /// The AVX-512 emulator run (`tools/avx512-emu`) sets it to the AVX-512 levels: the others
    /// are tested on the host and under QEMU at native or near-native speed, and an instruction
    /// emulator is too slow to repeat them. Unknown names are an error, not silently no tests.
    pub fn under_test() -> Vec<KernelLevel> {
        let Ok(list) = std::env::var("MOE_EDGE_TEST_LEVELS") else {
            return KernelLevel::supported();
        };
        let wanted: Vec<KernelLevel> = list
            .split(',')
            .map(|name| {
                name.trim().parse().unwrap_or_else(|_| {
                    panic!("MOE_EDGE_TEST_LEVELS: {name:?} is not a kernel level")
                })
            })
            .collect();
        KernelLevel::supported()
            .into_iter()
            .filter(|l| wanted.contains(l))
            .collect()
    }

    /// The best level this CPU supports.
    pub fn best_supported() -> KernelLevel {
        *KernelLevel::supported()
            .last()
            .unwrap_or(&KernelLevel::Scalar)
    }
}

impl fmt::Display for KernelLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text was not one of the level names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown kernel level {:?} (expected one of: scalar, ssse3, avx2, avxvnni, avx512, avx512vnni, neon, neondotprod)",
            self.0
        )
    }
}

impl std::error::Error for UnknownLevel {}

impl FromStr for KernelLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<KernelLevel, UnknownLevel> {
        let t = s.trim().to_ascii_lowercase();
        KernelLevel::ALL
            .into_iter()
            .find(|l| l.name() == t)
            .ok_or_else(|| UnknownLevel(s.to_string()))
    }
}

/// What `choose_level` decided and why, so the caller can log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChoice {
    /// No request: the best detected level.
    Detected(KernelLevel),
    /// The requested level, which this CPU supports.
    Forced(KernelLevel),
    /// The request could not be honoured (unknown name or a level this CPU lacks); the best
    /// detected level is used instead.
    Rejected {
        requested: String,
        used: KernelLevel,
    },
}

impl LevelChoice {
    pub fn level(&self) -> KernelLevel {
        match self {
            LevelChoice::Detected(l) | LevelChoice::Forced(l) => *l,
            LevelChoice::Rejected { used, .. } => *used,
        }
    }
}

/// Picks a level from an optional request (the `MOE_EDGE_KERNELS` value) and a support test.
pub fn choose_level(
    requested: Option<&str>,
    supported: impl Fn(KernelLevel) -> bool,
) -> LevelChoice {
    let best = KernelLevel::ALL
        .into_iter()
        .rfind(|&l| supported(l))
        .unwrap_or(KernelLevel::Scalar);
    match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => LevelChoice::Detected(best),
        Some(req) => match req.parse::<KernelLevel>() {
            Ok(l) if supported(l) => LevelChoice::Forced(l),
            _ => LevelChoice::Rejected {
                requested: req.to_string(),
                used: best,
            },
        },
    }
}

/// The level every dispatching function uses, chosen on first call by run-time feature
/// detection, lowered by `MOE_EDGE_KERNELS=<level>` if set. Logged once.
pub fn active_level() -> KernelLevel {
    static ACTIVE: OnceLock<KernelLevel> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let env = std::env::var("MOE_EDGE_KERNELS").ok();
        let choice = choose_level(env.as_deref(), KernelLevel::is_supported);
        match &choice {
            LevelChoice::Detected(KernelLevel::Scalar) => log::warn!(
                "kernels: this CPU has no SIMD level moe-edge has kernels for (SSSE3 or AVX2 on x86-64, NEON on ARM); the portable scalar kernels run, about 10x slower"
            ),
            LevelChoice::Detected(KernelLevel::Ssse3) => log::warn!(
                "kernels: this CPU has no AVX2+FMA+F16C; using the 128-bit SSSE3 kernels (packed Q4_0, Q8_0, Q4_K, Q5_K and Q6_K weights; other types run the scalar kernels), several times slower than AVX2"
            ),
            LevelChoice::Detected(l) => log::info!("kernels: using {l} (detected)"),
            LevelChoice::Forced(l) => log::info!("kernels: using {l} (MOE_EDGE_KERNELS)"),
            LevelChoice::Rejected { requested, used } => log::warn!(
                "kernels: MOE_EDGE_KERNELS={requested:?} is unknown or not supported by this CPU; using {used}"
            ),
        }
        choice.level()
    })
}

#[cfg(target_arch = "x86_64")]
fn x86_has_ssse3() -> bool {
    std::arch::is_x86_feature_detected!("ssse3")
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_has_ssse3() -> bool {
    false
}
#[cfg(target_arch = "x86_64")]
fn x86_has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}
#[cfg(target_arch = "x86_64")]
fn x86_has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
}
#[cfg(target_arch = "x86_64")]
fn x86_has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
}
#[cfg(target_arch = "x86_64")]
fn x86_has_avx_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avxvnni")
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_has_avx2() -> bool {
    false
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_has_avx512() -> bool {
    false
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_has_vnni() -> bool {
    false
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_has_avx_vnni() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn arm_has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}
#[cfg(target_arch = "aarch64")]
fn arm_has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}
#[cfg(not(target_arch = "aarch64"))]
fn arm_has_neon() -> bool {
    false
}
#[cfg(not(target_arch = "aarch64"))]
fn arm_has_dotprod() -> bool {
    false
}
