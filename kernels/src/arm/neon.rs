//! AArch64 NEON kernels, with `dotprod` (SDOT) variants.
//!
//! Each kernel body is written once, generic over how 16 signed byte products are summed into
//! four i32 lanes (`Dot16`): `Widen` uses plain NEON multiply-long + pairwise add, `Sdot` the
//! SDOT instruction. Thin `#[target_feature]` wrappers instantiate them; the wrappers are only
//! reachable through the NEON(-dotprod) kernel table, built only after run-time detection found
//! those features. Slice lengths are checked by the public API before any call, so the raw block
//! pointers stay inside their rows.

use crate::blocks::*;
use crate::dispatch::{KernelTable, TypeKernels};
use crate::level::KernelLevel;
use crate::types::GgmlType;
use std::arch::aarch64::*;

/// acc + Σ of 16 byte products, grouped into 4 lanes of 4.
pub(crate) trait Dot16 {
    /// # Safety
    /// Needs the CPU features of the implementation (NEON; NEON + dotprod for `Sdot`).
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

pub(crate) struct Widen;
pub(crate) struct Sdot;

impl Dot16 for Widen {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON is part of the aarch64 baseline this crate is compiled for.
        unsafe {
            let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let p = vmlal_high_s8(p, a, b);
            vpadalq_s16(acc, p)
        }
    }
}

impl Dot16 for Sdot {
    #[inline]
    #[target_feature(enable = "dotprod")]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: SDOT is available (this function's target feature); register-only operation.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: caller guarantees 2 readable bytes at p.
    unsafe { F16Bits([*p, *p.add(1)]).to_f32() }
}

#[inline(always)]
unsafe fn ld(p: *const u8) -> int8x16_t {
    // SAFETY: caller guarantees 16 readable bytes at p.
    unsafe { vld1q_s8(p as *const i8) }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers (byte-identical to the scalar ones)

#[target_feature(enable = "neon")]
unsafe fn quantize_q8_0(x: &[f32], y: &mut [u8]) {
    assert!(y.len() == x.len() / QK * 34);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        // SAFETY: xb has 32 floats (8 loads of 4); yb has 34 bytes (2 + 4 stores of 8).
        unsafe {
            let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(xb.as_ptr().add(4 * i)));
            let mut m = vabsq_f32(v[0]);
            for vi in &v[1..] {
                m = vmaxq_f32(m, vabsq_f32(*vi));
            }
            let amax = vmaxvq_f32(m);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb[0..2].copy_from_slice(&F16Bits::from_f32(d).0);
            for k in 0..4 {
                // vcvtaq: round to nearest, ties away from zero (C `roundf`).
                let a = vcvtaq_s32_f32(vmulq_n_f32(v[2 * k], id));
                let b = vcvtaq_s32_f32(vmulq_n_f32(v[2 * k + 1], id));
                let q = vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)));
                vst1_s8(yb.as_mut_ptr().add(2 + 8 * k) as *mut i8, q);
            }
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_q8_k(x: &[f32], y: &mut [u8]) {
    assert!(y.len() == x.len() / QK_K * 292);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(292)) {
        // SAFETY: xb has 256 floats (64 loads of 4); yb has 292 bytes: d 0..4, qs 4..260
        // (32 stores of 8), bsums 260..292.
        unsafe {
            let p = xb.as_ptr();
            let mut m = vdupq_n_f32(0.0);
            for i in 0..64 {
                m = vmaxq_f32(m, vabsq_f32(vld1q_f32(p.add(4 * i))));
            }
            let amax = vmaxvq_f32(m);
            if amax == 0.0 {
                yb.fill(0);
                continue;
            }
            let max = *xb.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
            let iscale = -127.0f32 / max;
            let cap = vdupq_n_s32(127);
            for g in 0..16 {
                let mut sum = vdupq_n_s32(0);
                for k in 0..2 {
                    let off = 16 * g + 8 * k;
                    // vcvtnq: round to nearest, ties to even (ggml `nearest_int`).
                    let a = vminq_s32(
                        vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p.add(off)), iscale)),
                        cap,
                    );
                    let b = vminq_s32(
                        vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p.add(off + 4)), iscale)),
                        cap,
                    );
                    sum = vaddq_s32(sum, vaddq_s32(a, b));
                    let q = vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)));
                    vst1_s8(yb.as_mut_ptr().add(4 + off) as *mut i8, q);
                }
                let s = vaddvq_s32(sum) as i16;
                yb[260 + 2 * g..262 + 2 * g].copy_from_slice(&s.to_le_bytes());
            }
            yb[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Float dot

#[target_feature(enable = "neon")]
unsafe fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let (pw, pa) = (w.as_ptr() as *const f32, a.as_ptr() as *const f32);
    let n16 = n / 16 * 16;
    // SAFETY: reads stay below n elements of both rows; vld1q_f32 has no alignment requirement
    // beyond the element's, and read_unaligned covers the tail.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for i in (0..n16).step_by(16) {
            for k in 0..4 {
                let x = vld1q_u8(pw.add(i + 4 * k) as *const u8);
                let y = vld1q_u8(pa.add(i + 4 * k) as *const u8);
                acc[k] = vfmaq_f32(acc[k], vreinterpretq_f32_u8(x), vreinterpretq_f32_u8(y));
            }
        }
        let mut s = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
        for i in n16..n {
            s += pw.add(i).read_unaligned() * pa.add(i).read_unaligned();
        }
        s
    }
}

/// Eight f16 values (as raw bits) widened to two f32x4 with FCVTL/FCVTL2 (base ARMv8 FP; the
/// f16 vector types are not stable in Rust, so inline assembly does the conversion).
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn f16x8_to_f32(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: register-only conversions available on every aarch64 CPU.
    unsafe {
        std::arch::asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    (lo, hi)
}

#[target_feature(enable = "neon")]
unsafe fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let n16 = n / 16 * 16;
    let mut s = 0f32;
    // SAFETY: every 16-byte load is below 2 * n16 bytes of both rows (checked above).
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for i in (0..n16).step_by(16) {
            for k in 0..2 {
                let (w0, w1) =
                    f16x8_to_f32(vld1q_u16(w.as_ptr().add(2 * (i + 8 * k)) as *const u16));
                let (a0, a1) =
                    f16x8_to_f32(vld1q_u16(a.as_ptr().add(2 * (i + 8 * k)) as *const u16));
                acc[2 * k] = vfmaq_f32(acc[2 * k], w0, a0);
                acc[2 * k + 1] = vfmaq_f32(acc[2 * k + 1], w1, a1);
            }
        }
        s += vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
    }
    for i in n16..n {
        let x = F16Bits([w[2 * i], w[2 * i + 1]]).to_f32();
        let y = F16Bits([a[2 * i], a[2 * i + 1]]).to_f32();
        s += x * y;
    }
    s
}

#[target_feature(enable = "neon")]
unsafe fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let n8 = n / 8 * 8;
    let mut s = 0f32;
    // SAFETY: every 16-byte load is below 2 * n8 bytes of both rows (checked above).
    unsafe {
        let widen = |v: uint16x8_t| {
            (
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))),
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_high_u16(v))),
            )
        };
        let mut acc = [vdupq_n_f32(0.0); 2];
        for i in (0..n8).step_by(8) {
            let (w0, w1) = widen(vld1q_u16(w.as_ptr().add(2 * i) as *const u16));
            let (a0, a1) = widen(vld1q_u16(a.as_ptr().add(2 * i) as *const u16));
            acc[0] = vfmaq_f32(acc[0], w0, a0);
            acc[1] = vfmaq_f32(acc[1], w1, a1);
        }
        s += vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    }
    for i in n8..n {
        let x = bf16_bits_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]]));
        let y = bf16_bits_to_f32(u16::from_le_bytes([a[2 * i], a[2 * i + 1]]));
        s += x * y;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Quantized block dot products: returns `acc + contribution of one weight block`.

#[inline(always)]
unsafe fn blk_q4_0<D: Dot16>(w: *const u8, a: *const u8, acc: float32x4_t) -> float32x4_t {
    // SAFETY: w is an 18-byte Q4_0 block, a a 34-byte Q8_0 block.
    unsafe {
        let raw = vld1q_u8(w.add(2));
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F))), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw)), eight);
        let s = D::dot(D::dot(vdupq_n_s32(0), lo, ld(a.add(2))), hi, ld(a.add(18)));
        vfmaq_n_f32(acc, vcvtq_f32_s32(s), f16_at(w) * f16_at(a))
    }
}

#[inline(always)]
unsafe fn blk_q8_0<D: Dot16>(w: *const u8, a: *const u8, acc: float32x4_t) -> float32x4_t {
    // SAFETY: both are 34-byte Q8_0 blocks.
    unsafe {
        let s = D::dot(
            D::dot(vdupq_n_s32(0), ld(w.add(2)), ld(a.add(2))),
            ld(w.add(18)),
            ld(a.add(18)),
        );
        vfmaq_n_f32(acc, vcvtq_f32_s32(s), f16_at(w) * f16_at(a))
    }
}

/// Σ_j bsums[j]·mins[j/2] of a Q8_K block (the min part of Q4_K/Q5_K).
#[inline(always)]
unsafe fn bsum_mins(mins: &[u8; 8], a: *const u8) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        // SAFETY: a is a 292-byte Q8_K block; bsums are at 260..292.
        let b = unsafe { i16::from_le_bytes([*a.add(260 + 2 * j), *a.add(261 + 2 * j)]) };
        s += b as i32 * mins[j / 2] as i32;
    }
    s
}

#[inline(always)]
unsafe fn blk_q4_k<D: Dot16>(w: *const u8, a: *const u8, acc: float32x4_t) -> float32x4_t {
    // SAFETY: w is a 144-byte Q4_K block (quants at 16..144), a a 292-byte Q8_K block
    // (quants at 4..260).
    unsafe {
        let (sc, mn) = crate::scalar::dot::k4_scales_mins(&*(w.add(4) as *const [u8; 12]));
        let ad = (a as *const f32).read_unaligned();
        let summ = bsum_mins(&mn, a);
        let m4 = vdupq_n_u8(0x0F);
        let mut sumi = vdupq_n_s32(0);
        for j in 0..4 {
            let q0 = vld1q_u8(w.add(16 + 32 * j));
            let q1 = vld1q_u8(w.add(32 + 32 * j));
            let y = a.add(4 + 64 * j);
            let lo = D::dot(
                D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q0, m4)), ld(y)),
                vreinterpretq_s8_u8(vandq_u8(q1, m4)),
                ld(y.add(16)),
            );
            let hi = D::dot(
                D::dot(
                    vdupq_n_s32(0),
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0)),
                    ld(y.add(32)),
                ),
                vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1)),
                ld(y.add(48)),
            );
            sumi = vmlaq_n_s32(sumi, lo, sc[2 * j] as i32);
            sumi = vmlaq_n_s32(sumi, hi, sc[2 * j + 1] as i32);
        }
        let acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), f16_at(w) * ad);
        let dmin = f16_at(w.add(2)) * ad;
        vsetq_lane_f32::<0>(vgetq_lane_f32::<0>(acc) - dmin * summ as f32, acc)
    }
}

#[inline(always)]
unsafe fn blk_q5_k<D: Dot16>(w: *const u8, a: *const u8, acc: float32x4_t) -> float32x4_t {
    // SAFETY: w is a 176-byte Q5_K block (qh at 16..48, quants at 48..176), a a 292-byte Q8_K
    // block.
    unsafe {
        let (sc, mn) = crate::scalar::dot::k4_scales_mins(&*(w.add(4) as *const [u8; 12]));
        let ad = (a as *const f32).read_unaligned();
        let summ = bsum_mins(&mn, a);
        let m4 = vdupq_n_u8(0x0F);
        let sixteen = vdupq_n_u8(16);
        let qh = [vld1q_u8(w.add(16)), vld1q_u8(w.add(32))];
        let mut sumi = vdupq_n_s32(0);
        for j in 0..4 {
            let (b_lo, b_hi) = (vdupq_n_u8(1 << (2 * j)), vdupq_n_u8(2 << (2 * j)));
            let y = a.add(4 + 64 * j);
            let mut lo = vdupq_n_s32(0);
            let mut hi = vdupq_n_s32(0);
            for h in 0..2 {
                let q = vld1q_u8(w.add(48 + 32 * j + 16 * h));
                let hl = vandq_u8(vtstq_u8(qh[h], b_lo), sixteen);
                let hh = vandq_u8(vtstq_u8(qh[h], b_hi), sixteen);
                let l = vorrq_u8(vandq_u8(q, m4), hl);
                let u = vorrq_u8(vshrq_n_u8::<4>(q), hh);
                lo = D::dot(lo, vreinterpretq_s8_u8(l), ld(y.add(16 * h)));
                hi = D::dot(hi, vreinterpretq_s8_u8(u), ld(y.add(32 + 16 * h)));
            }
            sumi = vmlaq_n_s32(sumi, lo, sc[2 * j] as i32);
            sumi = vmlaq_n_s32(sumi, hi, sc[2 * j + 1] as i32);
        }
        let acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), f16_at(w) * ad);
        let dmin = f16_at(w.add(2)) * ad;
        vsetq_lane_f32::<0>(vgetq_lane_f32::<0>(acc) - dmin * summ as f32, acc)
    }
}

#[inline(always)]
unsafe fn blk_q6_k<D: Dot16>(w: *const u8, a: *const u8, acc: float32x4_t) -> float32x4_t {
    // SAFETY: w is a 210-byte Q6_K block (ql 0..128, qh 128..192, scales 192..208, d 208..210),
    // a a 292-byte Q8_K block.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let m2 = vdupq_n_u8(3);
        let off = vdupq_n_s8(32);
        let sc = w.add(192) as *const i8;
        let mut sumi = vdupq_n_s32(0);
        for half in 0..2 {
            for h in 0..2 {
                let ql0 = vld1q_u8(w.add(64 * half + 16 * h));
                let ql1 = vld1q_u8(w.add(64 * half + 32 + 16 * h));
                let qh = vld1q_u8(w.add(128 + 32 * half + 16 * h));
                let q = [
                    vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8::<4>(vandq_u8(qh, m2))),
                    vorrq_u8(
                        vandq_u8(ql1, m4),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(qh), m2)),
                    ),
                    vorrq_u8(
                        vshrq_n_u8::<4>(ql0),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(qh), m2)),
                    ),
                    vorrq_u8(vshrq_n_u8::<4>(ql1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh))),
                ];
                for (k, qk) in q.into_iter().enumerate() {
                    // Elements 128·half + 32k + 16h .. +16: one group of 16 with one scale.
                    let e = 128 * half + 32 * k + 16 * h;
                    let v = vsubq_s8(vreinterpretq_s8_u8(qk), off);
                    let s = D::dot(vdupq_n_s32(0), v, ld(a.add(4 + e)));
                    sumi = vmlaq_n_s32(sumi, s, *sc.add(e / 16) as i32);
                }
            }
        }
        let d = f16_at(w.add(208)) * (a as *const f32).read_unaligned();
        vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), d)
    }
}

// ---------------------------------------------------------------------------------------------
// Row drivers (generic bodies; instantiated per level below).

const ROWS: usize = 4;

macro_rules! neon_kernels {
    ($feat:literal, $D:ty, $dot:ident, $matvec:ident, $matmul:ident, $blk:ident, $ws:expr, $as_:expr, $bs:expr) => {
        #[target_feature(enable = $feat)]
        unsafe fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let nb = n / $bs;
            assert!(w.len() >= nb * $ws && a.len() >= nb * $as_);
            // SAFETY: block b of each row is inside the row (checked above); features enabled.
            unsafe {
                let mut acc = vdupq_n_f32(0.0);
                for b in 0..nb {
                    acc = $blk::<$D>(w.as_ptr().add(b * $ws), a.as_ptr().add(b * $as_), acc);
                }
                vaddvq_f32(acc)
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn $matvec(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let nb = n / $bs;
            let rb = nb * $ws;
            assert!(w.len() >= rb * out.len() && a.len() >= nb * $as_);
            let mut groups = out.chunks_exact_mut(ROWS);
            let mut r0 = 0;
            for o in &mut groups {
                // SAFETY: rows r0..r0+ROWS exist (out has a slot for each); block b is inside.
                unsafe {
                    let mut acc = [vdupq_n_f32(0.0); ROWS];
                    for b in 0..nb {
                        let pa = a.as_ptr().add(b * $as_);
                        for r in 0..ROWS {
                            acc[r] =
                                $blk::<$D>(w.as_ptr().add((r0 + r) * rb + b * $ws), pa, acc[r]);
                        }
                    }
                    for r in 0..ROWS {
                        o[r] = vaddvq_f32(acc[r]);
                    }
                }
                r0 += ROWS;
            }
            for (i, o) in groups.into_remainder().iter_mut().enumerate() {
                // SAFETY: same features; one whole row.
                *o = unsafe { $dot(n, &w[(r0 + i) * rb..(r0 + i + 1) * rb], a) };
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn $matmul(n: usize, w: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]) {
            let nb = n / $bs;
            let (rb, ab) = (nb * $ws, nb * $as_);
            let n_rows = out.len() / n_tokens;
            assert!(w.len() >= rb * n_rows && acts.len() >= ab * n_tokens);
            let mut tmp = [0f32; ROWS];
            for r0 in (0..n_rows).step_by(ROWS) {
                let rows = ROWS.min(n_rows - r0);
                let wg = &w[r0 * rb..(r0 + rows) * rb];
                for t in 0..n_tokens {
                    // SAFETY: same features; `wg` holds `rows` whole rows, one activation row.
                    unsafe { $matvec(n, wg, &acts[t * ab..(t + 1) * ab], &mut tmp[..rows]) };
                    out[t * n_rows + r0..t * n_rows + r0 + rows].copy_from_slice(&tmp[..rows]);
                }
            }
        }
    };
}

neon_kernels!(
    "neon",
    Widen,
    dot_q4_0_n,
    matvec_q4_0_n,
    matmul_q4_0_n,
    blk_q4_0,
    18,
    34,
    QK
);
neon_kernels!(
    "neon",
    Widen,
    dot_q8_0_n,
    matvec_q8_0_n,
    matmul_q8_0_n,
    blk_q8_0,
    34,
    34,
    QK
);
neon_kernels!(
    "neon",
    Widen,
    dot_q4_k_n,
    matvec_q4_k_n,
    matmul_q4_k_n,
    blk_q4_k,
    144,
    292,
    QK_K
);
neon_kernels!(
    "neon",
    Widen,
    dot_q5_k_n,
    matvec_q5_k_n,
    matmul_q5_k_n,
    blk_q5_k,
    176,
    292,
    QK_K
);
neon_kernels!(
    "neon",
    Widen,
    dot_q6_k_n,
    matvec_q6_k_n,
    matmul_q6_k_n,
    blk_q6_k,
    210,
    292,
    QK_K
);
neon_kernels!(
    "neon,dotprod",
    Sdot,
    dot_q4_0_d,
    matvec_q4_0_d,
    matmul_q4_0_d,
    blk_q4_0,
    18,
    34,
    QK
);
neon_kernels!(
    "neon,dotprod",
    Sdot,
    dot_q8_0_d,
    matvec_q8_0_d,
    matmul_q8_0_d,
    blk_q8_0,
    34,
    34,
    QK
);
neon_kernels!(
    "neon,dotprod",
    Sdot,
    dot_q4_k_d,
    matvec_q4_k_d,
    matmul_q4_k_d,
    blk_q4_k,
    144,
    292,
    QK_K
);
neon_kernels!(
    "neon,dotprod",
    Sdot,
    dot_q5_k_d,
    matvec_q5_k_d,
    matmul_q5_k_d,
    blk_q5_k,
    176,
    292,
    QK_K
);
neon_kernels!(
    "neon,dotprod",
    Sdot,
    dot_q6_k_d,
    matvec_q6_k_d,
    matmul_q6_k_d,
    blk_q6_k,
    210,
    292,
    QK_K
);

/// Installs the NEON kernels (and the SDOT ones at `NeonDotprod`) into `t`.
pub(crate) fn fill(level: KernelLevel, t: &mut KernelTable) {
    fn set(t: &mut KernelTable, ty: GgmlType, f: impl FnOnce(&mut TypeKernels)) {
        f(t.get_mut(ty))
    }
    set(t, GgmlType::Q8_0, |k| k.quantize = quantize_q8_0);
    set(t, GgmlType::Q8_K, |k| k.quantize = quantize_q8_k);
    set(t, GgmlType::F32, |k| k.vec_dot = dot_f32);
    set(t, GgmlType::F16, |k| k.vec_dot = dot_f16);
    set(t, GgmlType::BF16, |k| k.vec_dot = dot_bf16);
    macro_rules! install {
        ($ty:expr, $dot:ident, $mv:ident, $mm:ident) => {
            set(t, $ty, |k| {
                k.vec_dot = $dot;
                k.matvec = Some($mv);
                k.matmul = Some($mm);
            })
        };
    }
    if level >= KernelLevel::NeonDotprod {
        install!(GgmlType::Q4_0, dot_q4_0_d, matvec_q4_0_d, matmul_q4_0_d);
        install!(GgmlType::Q8_0, dot_q8_0_d, matvec_q8_0_d, matmul_q8_0_d);
        install!(GgmlType::Q4_K, dot_q4_k_d, matvec_q4_k_d, matmul_q4_k_d);
        install!(GgmlType::Q5_K, dot_q5_k_d, matvec_q5_k_d, matmul_q5_k_d);
        install!(GgmlType::Q6_K, dot_q6_k_d, matvec_q6_k_d, matmul_q6_k_d);
    } else {
        install!(GgmlType::Q4_0, dot_q4_0_n, matvec_q4_0_n, matmul_q4_0_n);
        install!(GgmlType::Q8_0, dot_q8_0_n, matvec_q8_0_n, matmul_q8_0_n);
        install!(GgmlType::Q4_K, dot_q4_k_n, matvec_q4_k_n, matmul_q4_k_n);
        install!(GgmlType::Q5_K, dot_q5_k_n, matvec_q5_k_n, matmul_q5_k_n);
        install!(GgmlType::Q6_K, dot_q6_k_n, matvec_q6_k_n, matmul_q6_k_n);
    }
}
