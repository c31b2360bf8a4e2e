//! Quantized block layouts, byte for byte as ggml stores them (`ggml/src/ggml-common.h`).
//!
//! Every struct has alignment 1 (scales are kept as little-endian byte pairs), so a block can be
//! viewed in place inside any byte buffer — a memory-mapped GGUF tensor or an activation row —
//! whatever its address. `bytemuck::cast_slice` does the viewing; it checks the length.

use bytemuck::{Pod, Zeroable};

/// Elements in a K-quant super-block (ggml `QK_K`).
pub const QK_K: usize = 256;
/// Elements in a Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q8_1 block (ggml `QK4_0` … `QK8_1`).
pub const QK: usize = 32;

/// An IEEE-754 binary16 value stored as two little-endian bytes (ggml `ggml_half`).
#[repr(transparent)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct F16Bits(pub [u8; 2]);

impl F16Bits {
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        half::f16::from_bits(u16::from_le_bytes(self.0)).to_f32()
    }

    /// Round to nearest even, as ggml's `GGML_FP32_TO_FP16`.
    #[inline(always)]
    pub fn from_f32(x: f32) -> F16Bits {
        F16Bits(half::f16::from_f32(x).to_bits().to_le_bytes())
    }
}

/// ggml `block_q4_0`: 32 weights, `x = d * (q - 8)`; 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: F16Bits,
    /// Low nibbles: elements 0..16; high nibbles: elements 16..32.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// ggml `block_q4_1`: 32 weights, `x = d * q + m`; 5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: F16Bits,
    pub m: F16Bits,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// ggml `block_q5_0`: 32 weights, `x = d * (q - 16)`, fifth bits in `qh`; 5.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: F16Bits,
    /// Bit j (little-endian u32) is the fifth bit of element j.
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// ggml `block_q5_1`: 32 weights, `x = d * q + m`; 6 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: F16Bits,
    pub m: F16Bits,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// ggml `block_q8_0`: 32 values, `x = d * q`; 8.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: F16Bits,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// ggml `block_q8_1`: 32 values, `x = d * q`, `s = d * sum(q)`; 9 bits per weight.
/// Only used for activations paired with Q4_1/Q5_1 weights.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: F16Bits,
    pub s: F16Bits,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// ggml `block_q2_K`: 256 weights in 16 groups of 16, `x = d*sc*q - dmin*m`; 2.625 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Low nibble: 4-bit scale; high nibble: 4-bit min, one byte per group of 16.
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: F16Bits,
    pub dmin: F16Bits,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// ggml `block_q3_K`: 256 weights in 16 groups of 16, `x = d*(sc-32)*(q-4*!hbit)`;
/// 3.4375 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales packed in 12 bytes.
    pub scales: [u8; 12],
    pub d: F16Bits,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// ggml `block_q4_K`: 256 weights in 8 groups of 32, `x = d*sc*q - dmin*m`; 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: F16Bits,
    pub dmin: F16Bits,
    /// Eight 6-bit scales and eight 6-bit mins packed in 12 bytes (`get_scale_min_k4`).
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// ggml `block_q5_K`: like Q4_K plus a fifth bit per weight; 5.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: F16Bits,
    pub dmin: F16Bits,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

/// ggml `block_q6_K`: 256 weights in 16 groups of 16, `x = d*sc*(q-32)`; 6.5625 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: F16Bits,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// ggml `block_q8_K`: 256 activation values, `x = d * q` with an f32 `d` and the sums of each
/// group of 16 quants; 9.125 bits per value. Only used for activations paired with K-quants.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8K {
    /// f32, little-endian.
    pub d: [u8; 4],
    pub qs: [i8; QK_K],
    /// Sixteen i16 sums, little-endian.
    pub bsums: [u8; QK_K / 16 * 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl BlockQ8K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    #[inline(always)]
    pub fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes([self.bsums[2 * j], self.bsums[2 * j + 1]])
    }

    #[inline(always)]
    pub fn set_bsum(&mut self, j: usize, v: i16) {
        let b = v.to_le_bytes();
        self.bsums[2 * j] = b[0];
        self.bsums[2 * j + 1] = b[1];
    }
}

/// Unpacks the 6-bit scale and min of group `j` (0..8) of a Q4_K/Q5_K block
/// (ggml `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Unpacks the sixteen 6-bit scales of a Q3_K block, each still offset by 32.
#[inline(always)]
pub fn q3k_scales(packed: &[u8; 12]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0xF
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = low | (high << 4);
    }
    out
}

/// Round to nearest (ties to even) for |x| < 2^22, as ggml's `nearest_int` does it.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// f32 → bf16 bits exactly as ggml's `GGML_FP32_TO_BF16` (round to nearest even, NaN made quiet).
#[inline(always)]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}
