//! Scalar quantizers with ggml's reference rounding (`quantize_row_*_ref` in `ggml-quants.c`),
//! so rows we produce are byte-identical to ggml's.
//!
//! Activation quantizers: Q8_0, Q8_1, Q8_K, F16, BF16, F32. Weight quantizers (for model tools
//! and tests): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 here, K-quants in `k_quantize`.

use crate::blocks::*;

/// Largest |x| in a block and the signed value that has it (first one on ties).
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

pub fn f16(x: &[f32], y: &mut [F16Bits]) {
    for (d, &s) in y.iter_mut().zip(x) {
        *d = F16Bits::from_f32(s);
    }
}

pub fn bf16(x: &[f32], y: &mut [[u8; 2]]) {
    for (d, &s) in y.iter_mut().zip(x) {
        *d = f32_to_bf16_bits(s).to_le_bytes();
    }
}

pub fn f32(x: &[f32], y: &mut [[u8; 4]]) {
    for (d, &s) in y.iter_mut().zip(x) {
        *d = s.to_le_bytes();
    }
}

pub fn q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Bits::from_f32(d);
        for j in 0..QK {
            b.qs[j] = (x[j] * id).round() as i8;
        }
    }
}

pub fn q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Bits::from_f32(d);
        let mut sum = 0i32;
        for j in 0..QK {
            let q = (x[j] * id).round() as i8;
            b.qs[j] = q;
            sum += q as i32;
        }
        b.s = F16Bits::from_f32(sum as f32 * d);
    }
}

pub fn q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (amax, max) = signed_absmax(x);
        if amax == 0.0 {
            *b = BlockQ8K::zeroed();
            continue;
        }
        let iscale = -127.0f32 / max;
        for j in 0..QK_K {
            b.qs[j] = nearest_int(iscale * x[j]).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
            b.set_bsum(j, s as i16);
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

pub fn q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (_, max) = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Bits::from_f32(d);
        for j in 0..QK / 2 {
            let x0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let x1 = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = x0 | (x1 << 4);
        }
    }
}

pub fn q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Bits::from_f32(d);
        b.m = F16Bits::from_f32(min);
        for j in 0..QK / 2 {
            let x0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let x1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = x0 | (x1 << 4);
        }
    }
}

pub fn q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (_, max) = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Bits::from_f32(d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let x1 = ((x[j + QK / 2] * id + 16.5) as i8).min(31) as u8;
            b.qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
            qh |= (((x0 & 0x10) >> 4) as u32) << j;
            qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

pub fn q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Bits::from_f32(d);
        b.m = F16Bits::from_f32(min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = ((x[j] - min) * id + 0.5) as u8;
            let x1 = ((x[j + QK / 2] - min) * id + 0.5) as u8;
            b.qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
            qh |= (((x0 & 0x10) >> 4) as u32) << j;
            qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

use bytemuck::Zeroable;
