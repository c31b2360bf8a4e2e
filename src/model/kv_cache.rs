//! The KV cache: every layer's keys and values of the positions seen so far, in f16 (default,
//! as llama.cpp) or f32.
//!
//! Layout `[layer][kv_head][position][head_dim]`: one head's rows are contiguous, so decode
//! attention streams each head's keys and values in one run instead of gathering a head's
//! slice from every position's row.

use half::f16;

use super::Config;

/// Element type of the K or V cache (`--cache-type-k`, `--cache-type-v`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KvType {
    /// 4 bytes per value: no rounding.
    F32,
    /// 2 bytes per value, rounded to nearest: llama.cpp's default.
    F16,
}

impl KvType {
    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        })
    }
}

/// Types of the K and of the V cache.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KvTypes {
    pub k: KvType,
    pub v: KvType,
}

impl Default for KvTypes {
    fn default() -> Self {
        KvTypes {
            k: KvType::F16,
            v: KvType::F16,
        }
    }
}

impl KvTypes {
    pub const F32: KvTypes = KvTypes {
        k: KvType::F32,
        v: KvType::F32,
    };

    /// Bytes a cache of `n_ctx` positions takes for `cfg`.
    pub fn cache_bytes(self, cfg: &Config, n_ctx: usize) -> u64 {
        let per_position = cfg.kv_dim() * self.k.bytes() + cfg.v_dim() * self.v.bytes();
        (cfg.n_layer * n_ctx * per_position) as u64
    }
}

/// One side (K or V) of the cache.
enum Side {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Side {
    fn new(ty: KvType, len: usize) -> Side {
        match ty {
            KvType::F32 => Side::F32(vec![0.0; len]),
            KvType::F16 => Side::F16(vec![f16::ZERO; len]),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Side::F32(v) => v.len() as u64 * 4,
            Side::F16(v) => v.len() as u64 * 2,
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Side::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Side::F16(v) => moe_edge_kernels::f32_to_f16_row(src, &mut v[at..at + src.len()]),
        }
    }

    fn rows(&self, at: usize, len: usize) -> Rows<'_> {
        match self {
            Side::F32(v) => Rows::F32(&v[at..at + len]),
            Side::F16(v) => Rows::F16(&v[at..at + len]),
        }
    }
}

/// One head's cached rows (contiguous, `head_dim` values each).
#[derive(Copy, Clone)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl Rows<'_> {
    /// `out[p] = scale · q · row[p]` for `p < out.len()`.
    pub fn scores(self, q: &[f32], scale: f32, out: &mut [f32]) {
        match self {
            Rows::F32(k) => moe_edge_kernels::dot_rows(q, k, q.len(), scale, out),
            Rows::F16(k) => moe_edge_kernels::dot_rows_f16(q, k, q.len(), scale, out),
        }
    }

    /// `out = Σ_p w[p] · row[p]`.
    pub fn weighted_sum(self, w: &[f32], out: &mut [f32]) {
        let width = out.len();
        match self {
            Rows::F32(v) => moe_edge_kernels::weighted_rows(w, v, width, out),
            Rows::F16(v) => moe_edge_kernels::weighted_rows_f16(w, v, width, out),
        }
    }
}

/// Keys and values of every layer, for `n_ctx` positions.
pub struct KvCache {
    n_ctx: usize,
    n_head_kv: usize,
    head_dim: usize,
    head_dim_v: usize,
    types: KvTypes,
    k: Side,
    v: Side,
}

impl KvCache {
    /// One allocation per side (a large one is mapped by the allocator and handed back whole
    /// when the cache is dropped, so states made one after another never hold two caches).
    pub fn new(cfg: &Config, n_ctx: usize, types: KvTypes) -> KvCache {
        KvCache {
            n_ctx,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
            head_dim_v: cfg.head_dim_v,
            types,
            k: Side::new(types.k, cfg.n_layer * n_ctx * cfg.kv_dim()),
            v: Side::new(types.v, cfg.n_layer * n_ctx * cfg.v_dim()),
        }
    }

    pub fn types(&self) -> KvTypes {
        self.types
    }

    pub fn bytes(&self) -> u64 {
        self.k.bytes() + self.v.bytes()
    }

    /// Stores `k` and `v` (token-major rows of every KV head, `k.len() / kv_dim` tokens) at
    /// positions `p0..` of layer `il`.
    pub fn store(&mut self, il: usize, p0: usize, k: &[f32], v: &[f32]) {
        let (hk, hv) = (self.head_dim, self.head_dim_v);
        let kd = self.n_head_kv * hk;
        let vd = self.n_head_kv * hv;
        for (t, (kt, vt)) in k.chunks_exact(kd).zip(v.chunks_exact(vd)).enumerate() {
            for h in 0..self.n_head_kv {
                let at = self.head_start(il, h, hk) + (p0 + t) * hk;
                self.k.write(at, &kt[h * hk..(h + 1) * hk]);
                let at = self.head_start(il, h, hv) + (p0 + t) * hv;
                self.v.write(at, &vt[h * hv..(h + 1) * hv]);
            }
        }
    }

    /// The first `n` cached keys of KV head `h` in layer `il`.
    pub fn keys(&self, il: usize, h: usize, n: usize) -> Rows<'_> {
        let hk = self.head_dim;
        self.k.rows(self.head_start(il, h, hk), n * hk)
    }

    /// The first `n` cached values of KV head `h` in layer `il`.
    pub fn values(&self, il: usize, h: usize, n: usize) -> Rows<'_> {
        let hv = self.head_dim_v;
        self.v.rows(self.head_start(il, h, hv), n * hv)
    }

    fn head_start(&self, il: usize, h: usize, width: usize) -> usize {
        (il * self.n_head_kv + h) * self.n_ctx * width
    }
}
