//! SwiGLU, the gated activation of every expert FFN: `gate[i] = silu(gate[i]) · up[i]`, with
//! `silu(x) = x · σ(x)`. The exponential is evaluated here, the same way at every level, so the
//! SIMD forms equal the scalar twin bit for bit:
//!
//! - `t = e^(−|x|)` ∈ (0, 1], so nothing overflows: `|x|·log2 e` is split into an integer `n`
//!   (rounded to nearest, ties to even) and a remainder `r` ∈ [−ln2/2, ln2/2] (Cody–Waite, with
//!   ln 2 in a 9-bit head, whose products with `n` are exact, and a tail);
//! - `e^r` by its degree-7 Taylor polynomial (truncation below 4·10⁻⁹ relative), in Horner form,
//!   then scaled by `2^−n` through the exponent bits; `t = 0` past |x| = 87, where `2^−n` would
//!   leave the normal range (σ is then 0 or 1 to f32 precision);
//! - `σ(x) = 1 / (1 + t)` for x ≥ 0 and `t / (1 + t)` below.
//!
//! Every step is one IEEE-rounded multiply, add or divide — no fused multiply-adds, which not
//! every level has — so the result is within a few ulp of the exact SiLU and identical on every
//! level and CPU. ggml evaluates its SiLU with a SIMD exponential of its own too; neither matches
//! a libm `expf` bit for bit.

use crate::level::KernelLevel;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO; LN2_HI has 9 significant bits, so `n · LN2_HI` is exact for |n| < 2^15.
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Beyond this |x|, `t` is set to 0 (2^−126 is the smallest normal scale).
const T_ZERO_ABOVE: f32 = 87.0;
/// 1/k! for k = 7 down to 2 (Horner order; the 1/1! and 1/0! terms are 1).
const TAYLOR: [f32; 6] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// `gate[i] = silu(gate[i]) · up[i]` for every `i`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    swiglu_at(crate::active_level(), gate, up)
}

/// [`swiglu`] at an explicit level (which this CPU must support). Every level gives the same bits.
pub fn swiglu_at(level: KernelLevel, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: lengths differ");
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2
        | KernelLevel::AvxVnni
        | KernelLevel::Avx512
        | KernelLevel::Avx512Vnni => {
            // SAFETY: the level is supported, so AVX2 (and AVX's rounding) is present.
            unsafe { swiglu_avx2(gate, up) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Ssse3 => {
            // SAFETY: SSE2 is part of every x86-64 CPU.
            unsafe { swiglu_sse2(gate, up) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelLevel::Neon | KernelLevel::NeonDotprod => {
            // SAFETY: the level is supported, so NEON is present.
            unsafe { swiglu_neon(gate, up) }
        }
        _ => swiglu_scalar(gate, up),
    }
}

/// The SiLU of one value, as every level computes it (the scalar twin).
pub fn silu(x: f32) -> f32 {
    let a = x.abs();
    let n = (a * LOG2E).round_ties_even();
    let r = (n * LN2_HI - a) + n * LN2_LO;
    let mut p = TAYLOR[0];
    for c in &TAYLOR[1..] {
        p = p * r + c;
    }
    let p = (p * r + 1.0) * r + 1.0;
    // n ≤ 126 wherever t is kept (a ≤ 87), so 127 − n is a normal exponent.
    let scale = f32::from_bits(((127 - (n as i32).min(126)) as u32) << 23);
    // Written as the SIMD forms' mask: NaN fails `a <= …` too, and gets t = 0.
    let t = if a <= T_ZERO_ABOVE { p * scale } else { 0.0 };
    let num = if x >= 0.0 { 1.0 } else { t };
    x * (num / (1.0 + t))
}

fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let n8 = gate.len() / 8 * 8;
    let sign = _mm256_set1_ps(-0.0);
    let one = _mm256_set1_ps(1.0);
    let zero = _mm256_setzero_ps();
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= n8 <= both lengths (equal, asserted by the caller).
        unsafe {
            let pg = gate.as_mut_ptr().add(i);
            let x = _mm256_loadu_ps(pg);
            let a = _mm256_andnot_ps(sign, x);
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(a, _mm256_set1_ps(LOG2E)),
            );
            let r = _mm256_add_ps(
                _mm256_sub_ps(_mm256_mul_ps(n, _mm256_set1_ps(LN2_HI)), a),
                _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
            );
            let mut p = _mm256_set1_ps(TAYLOR[0]);
            for c in &TAYLOR[1..] {
                p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(*c));
            }
            let p = _mm256_add_ps(
                _mm256_mul_ps(_mm256_add_ps(_mm256_mul_ps(p, r), one), r),
                one,
            );
            let ni = _mm256_min_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126));
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_sub_epi32(
                _mm256_set1_epi32(127),
                ni,
            )));
            let keep = _mm256_cmp_ps::<_CMP_LE_OQ>(a, _mm256_set1_ps(T_ZERO_ABOVE));
            // NaN: the comparison fails, t = 0, and x · … stays NaN.
            let t = _mm256_and_ps(keep, _mm256_mul_ps(p, scale));
            let nonneg = _mm256_cmp_ps::<_CMP_GE_OQ>(x, zero);
            let num = _mm256_blendv_ps(t, one, nonneg);
            let s = _mm256_mul_ps(x, _mm256_div_ps(num, _mm256_add_ps(one, t)));
            _mm256_storeu_ps(pg, _mm256_mul_ps(s, _mm256_loadu_ps(up.as_ptr().add(i))));
        }
    }
    swiglu_scalar(&mut gate[n8..], &up[n8..]);
}

/// The SSSE3 level's form (it needs only SSE2). SSE2 has no rounding instruction: `cvtps2dq`
/// rounds to nearest, ties to even (the MXCSR default), as `round_ties_even` does, wherever
/// `t` is kept (n ≤ 126); lanes past |x| = 87, where it may return 0x80000000, are masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn swiglu_sse2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let n4 = gate.len() / 4 * 4;
    let sign = _mm_set1_ps(-0.0);
    let one = _mm_set1_ps(1.0);
    for i in (0..n4).step_by(4) {
        // SAFETY: i + 4 <= n4 <= both lengths (equal, asserted by the caller).
        unsafe {
            let pg = gate.as_mut_ptr().add(i);
            let x = _mm_loadu_ps(pg);
            let a = _mm_andnot_ps(sign, x);
            let ni = _mm_cvtps_epi32(_mm_mul_ps(a, _mm_set1_ps(LOG2E)));
            let n = _mm_cvtepi32_ps(ni);
            let r = _mm_add_ps(
                _mm_sub_ps(_mm_mul_ps(n, _mm_set1_ps(LN2_HI)), a),
                _mm_mul_ps(n, _mm_set1_ps(LN2_LO)),
            );
            let mut p = _mm_set1_ps(TAYLOR[0]);
            for c in &TAYLOR[1..] {
                p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(*c));
            }
            let p = _mm_add_ps(_mm_mul_ps(_mm_add_ps(_mm_mul_ps(p, r), one), r), one);
            let cap = _mm_set1_epi32(126);
            let over = _mm_cmpgt_epi32(ni, cap);
            let ni = _mm_or_si128(_mm_and_si128(over, cap), _mm_andnot_si128(over, ni));
            let scale =
                _mm_castsi128_ps(_mm_slli_epi32::<23>(_mm_sub_epi32(_mm_set1_epi32(127), ni)));
            let keep = _mm_cmple_ps(a, _mm_set1_ps(T_ZERO_ABOVE));
            // NaN: the comparison fails, t = 0, and x · … stays NaN.
            let t = _mm_and_ps(keep, _mm_mul_ps(p, scale));
            let nonneg = _mm_cmpge_ps(x, _mm_setzero_ps());
            let num = _mm_or_ps(_mm_and_ps(nonneg, one), _mm_andnot_ps(nonneg, t));
            let s = _mm_mul_ps(x, _mm_div_ps(num, _mm_add_ps(one, t)));
            _mm_storeu_ps(pg, _mm_mul_ps(s, _mm_loadu_ps(up.as_ptr().add(i))));
        }
    }
    swiglu_scalar(&mut gate[n4..], &up[n4..]);
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn swiglu_neon(gate: &mut [f32], up: &[f32]) {
    use std::arch::aarch64::*;
    let n4 = gate.len() / 4 * 4;
    for i in (0..n4).step_by(4) {
        // SAFETY: i + 4 <= n4 <= both lengths (equal, asserted by the caller).
        unsafe {
            let pg = gate.as_mut_ptr().add(i);
            let x = vld1q_f32(pg);
            let a = vabsq_f32(x);
            // FRINTN: round to nearest, ties to even.
            let n = vrndnq_f32(vmulq_f32(a, vdupq_n_f32(LOG2E)));
            let r = vaddq_f32(
                vsubq_f32(vmulq_f32(n, vdupq_n_f32(LN2_HI)), a),
                vmulq_f32(n, vdupq_n_f32(LN2_LO)),
            );
            let mut p = vdupq_n_f32(TAYLOR[0]);
            for c in &TAYLOR[1..] {
                p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(*c));
            }
            let one = vdupq_n_f32(1.0);
            let p = vaddq_f32(vmulq_f32(vaddq_f32(vmulq_f32(p, r), one), r), one);
            let ni = vminq_s32(vcvtq_s32_f32(n), vdupq_n_s32(126));
            let scale = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vsubq_s32(vdupq_n_s32(127), ni)));
            let keep = vcleq_f32(a, vdupq_n_f32(T_ZERO_ABOVE));
            let t =
                vreinterpretq_f32_u32(vandq_u32(keep, vreinterpretq_u32_f32(vmulq_f32(p, scale))));
            let nonneg = vcgeq_f32(x, vdupq_n_f32(0.0));
            let num = vbslq_f32(nonneg, one, t);
            let s = vmulq_f32(x, vdivq_f32(num, vaddq_f32(one, t)));
            vst1q_f32(pg, vmulq_f32(s, vld1q_f32(up.as_ptr().add(i))));
        }
    }
    swiglu_scalar(&mut gate[n4..], &up[n4..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SiLU against the exact one in f64, over the range that matters and its edges.
    #[test]
    fn silu_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -100f32;
        while x < 100.0 {
            let exact = x as f64 / (1.0 + (-(x as f64)).exp());
            let got = silu(x) as f64;
            let ulp = (exact.abs() as f32).max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
            if exact.abs() > 1e-30 {
                worst = worst.max((got - exact).abs() / ulp);
            }
            x += 0.001_37;
        }
        assert!(worst <= 4.0, "worst error {worst} ulp");
        assert_eq!(silu(0.0), 0.0);
        assert_eq!(silu(f32::INFINITY), f32::INFINITY);
        assert!(silu(f32::NAN).is_nan());
        assert!(silu(f32::NEG_INFINITY).is_nan());
        assert_eq!(silu(200.0), 200.0);
        assert_eq!(silu(-200.0), 0.0);
        println!("silu: worst error {worst:.2} ulp");
    }

    /// Every supported level gives the scalar twin's bits, at every length and tail.
    #[test]
    fn swiglu_levels_match_the_scalar_twin() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut gate: Vec<f32> = (0..1 << 16).map(|_| (next() - 0.5) * 40.0).collect();
        // Edges: zeros, infinities, NaN, the cut-off, huge and tiny values, ties of n.
        gate[..12].copy_from_slice(&[
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            87.0,
            -87.0,
            87.000_01,
            -1e30,
            1e-30,
            std::f32::consts::LN_2 * 1.5,
            -std::f32::consts::LN_2 * 2.5,
        ]);
        let up: Vec<f32> = (0..gate.len()).map(|_| next() * 2.0 - 1.0).collect();
        for len in [0, 1, 7, 8, 9, 31, 64, 1037, 1 << 16] {
            let mut want = gate[..len].to_vec();
            swiglu_scalar(&mut want, &up[..len]);
            for level in KernelLevel::under_test() {
                let mut got = gate[..len].to_vec();
                swiglu_at(level, &mut got, &up[..len]);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{level}, {len} values");
            }
        }
    }
}
