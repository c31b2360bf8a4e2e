//! Shared test helpers: a seeded generator (no dependencies) and fixture loading.
#![allow(dead_code)]

use moe_edge_kernels::GgmlType;

/// SplitMix64: deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.uniform() as f64).max(1e-12);
        let u2 = self.uniform() as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

pub fn fixture_f32(name: &str) -> Vec<f32> {
    fixture(name)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Quantizes `x` to `ty` with the reference quantizer.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    moe_edge_kernels::quantize_row_ref(ty, x, &mut q);
    q
}

/// The operands of a random `ty` product: `rows` weight rows of `n` gaussian values quantized to
/// `ty`, then `tokens` activation rows quantized to its `vec_dot_type`.
pub fn random_product(
    ty: GgmlType,
    rng: &mut Rng,
    n: usize,
    rows: usize,
    tokens: usize,
) -> (Vec<u8>, Vec<u8>) {
    let w: Vec<u8> = (0..rows)
        .flat_map(|_| quantize(ty, &rng.normals(n)))
        .collect();
    let acts: Vec<u8> = (0..tokens)
        .flat_map(|_| quantize(ty.vec_dot_type(), &rng.normals(n)))
        .collect();
    (w, acts)
}

pub fn dequantize(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    moe_edge_kernels::dequantize_row_at(moe_edge_kernels::KernelLevel::Scalar, ty, q, &mut y);
    y
}

/// The types activations are quantized to (`vec_dot_type` of every weight type).
pub const ACTIVATION_TYPES: [GgmlType; 6] = [
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q8_K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// Weight types the runtime computes with (everything but the activation-only Q8_1/Q8_K).
pub const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];
