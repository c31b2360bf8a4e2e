//! The KV cache: every layer's keys and values of the positions seen so far, in f16 (default,
//! as llama.cpp) or f32; keys also in q8_0.
//!
//! Layout `[layer][kv_head][position][head_dim]`: one head's rows are contiguous, so decode
//! attention streams each head's keys and values in one run instead of gathering a head's
//! slice from every position's row.

use anyhow::{bail, Result};
use half::f16;
use moe_edge_kernels::GgmlType;
use smallvec::SmallVec;

use super::Config;

/// Element type of the K or V cache (`--cache-type-k`, `--cache-type-v`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KvType {
    /// 4 bytes per value: no rounding.
    F32,
    /// 2 bytes per value, rounded to nearest: llama.cpp's default.
    F16,
    /// 34 bytes per 32 values (K only, as llama.cpp without flash attention): scores are
    /// integer dot products with the query quantized to q8_0 too.
    #[value(name = "q8_0")]
    Q8_0,
}

impl KvType {
    /// Bytes of one cached row of `width` values (a multiple of 32 for q8_0).
    pub fn row_bytes(self, width: usize) -> usize {
        match self {
            KvType::F32 => 4 * width,
            KvType::F16 => 2 * width,
            KvType::Q8_0 => width / 32 * 34,
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
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
        let per_position =
            cfg.n_head_kv * (self.k.row_bytes(cfg.head_dim) + self.v.row_bytes(cfg.head_dim_v));
        (cfg.n_layer * n_ctx * per_position) as u64
    }

    /// Whether `cfg` can have these caches: q8_0 needs a head size that is a multiple of its
    /// 32-value blocks, and only K may be q8_0.
    pub fn check(self, cfg: &Config) -> Result<()> {
        if self.v == KvType::Q8_0 {
            bail!("--cache-type-v q8_0 is not supported: llama.cpp quantizes the V cache only with flash attention, which moe-edge does not have; use f16 (q8_0 works for K)");
        }
        if self.k == KvType::Q8_0 && !cfg.head_dim.is_multiple_of(32) {
            bail!(
                "--cache-type-k q8_0 needs a head size that is a multiple of 32; this model's is {}",
                cfg.head_dim
            );
        }
        Ok(())
    }
}

/// With a quantized K cache llama.cpp rotates queries and keys by an orthonormal Walsh-Hadamard
/// matrix before the keys are stored (q · k is unchanged, but the rotation spreads outliers over
/// the q8_0 blocks): for head sizes that are multiples of 64, in chunks of the largest power of
/// two from 64 up that divides the head size. `None` when no rotation applies.
pub fn k_rotation_size(types: KvTypes, head_dim: usize) -> Option<usize> {
    if types.k != KvType::Q8_0 || !head_dim.is_multiple_of(64) {
        return None;
    }
    let mut n = 64;
    while head_dim.is_multiple_of(2 * n) {
        n *= 2;
    }
    Some(n)
}

/// Rotates every `n`-value chunk of `x` by the orthonormal Walsh-Hadamard matrix: each value
/// scaled by 1/√n, then the butterflies in natural order, as ggml's transform computes it.
pub fn rotate_hadamard(x: &mut [f32], n: usize) {
    assert!(
        n.is_power_of_two() && x.len().is_multiple_of(n),
        "rotate_hadamard: bad size"
    );
    let scale = 1.0 / (n as f32).sqrt();
    for row in x.chunks_exact_mut(n) {
        row.iter_mut().for_each(|v| *v *= scale);
        let mut len = 1;
        while len < n {
            for pair in row.chunks_exact_mut(2 * len) {
                let (a, b) = pair.split_at_mut(len);
                for (u, v) in a.iter_mut().zip(b) {
                    let (p, q) = (*u, *v);
                    *u = p + q;
                    *v = p - q;
                }
            }
            len *= 2;
        }
    }
}

/// One side (K or V) of the cache.
/// Positions are addressed in values (`at`, `len`); q8_0 maps them to bytes block by block
/// (every row starts on a block, its width being a multiple of 32).
enum Side {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8_0(Vec<u8>),
}

impl Side {
    fn new(ty: KvType, len: usize) -> Side {
        match ty {
            KvType::F32 => Side::F32(vec![0.0; len]),
            KvType::F16 => Side::F16(vec![f16::ZERO; len]),
            KvType::Q8_0 => Side::Q8_0(vec![0; KvType::Q8_0.row_bytes(len)]),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Side::F32(v) => v.len() as u64 * 4,
            Side::F16(v) => v.len() as u64 * 2,
            Side::Q8_0(v) => v.len() as u64,
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Side::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Side::F16(v) => moe_edge_kernels::f32_to_f16_row(src, &mut v[at..at + src.len()]),
            Side::Q8_0(v) => {
                let (start, bytes) = (q8_bytes(at), q8_bytes(src.len()));
                moe_edge_kernels::quantize_activation(
                    GgmlType::Q8_0,
                    src,
                    &mut v[start..start + bytes],
                );
            }
        }
    }

    fn prefetch(&self, at: usize, len: usize) {
        match self {
            Side::F32(v) => moe_edge_kernels::prefetch(&v[at..at + len]),
            Side::F16(v) => moe_edge_kernels::prefetch(&v[at..at + len]),
            Side::Q8_0(v) => moe_edge_kernels::prefetch(&v[q8_bytes(at)..q8_bytes(at + len)]),
        }
    }

    fn rows(&self, at: usize, len: usize) -> Rows<'_> {
        match self {
            Side::F32(v) => Rows::F32(&v[at..at + len]),
            Side::F16(v) => Rows::F16(&v[at..at + len]),
            Side::Q8_0(v) => Rows::Q8_0(&v[q8_bytes(at)..q8_bytes(at + len)]),
        }
    }
}

fn q8_bytes(values: usize) -> usize {
    KvType::Q8_0.row_bytes(values)
}

/// One head's cached rows (contiguous, `head_dim` values each).
#[derive(Copy, Clone)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    /// q8_0 blocks, `head_dim / 32` per row.
    Q8_0(&'a [u8]),
}

impl Rows<'_> {
    /// `out[p] = scale · q · row[p]` for `p < out.len()`.
    pub fn scores(self, q: &[f32], scale: f32, out: &mut [f32]) {
        match self {
            Rows::F32(k) => moe_edge_kernels::dot_rows(q, k, q.len(), scale, out),
            Rows::F16(k) => moe_edge_kernels::dot_rows(q, k, q.len(), scale, out),
            Rows::Q8_0(k) => {
                // As ggml's product with a q8_0 matrix: the query quantized to q8_0, integer
                // dot products per block, then the scale. Head sizes up to 960 stay on the stack.
                let mut qq: SmallVec<[u8; 1024]> = SmallVec::new();
                qq.resize(q8_bytes(q.len()), 0);
                moe_edge_kernels::quantize_activation(GgmlType::Q8_0, q, &mut qq);
                let n = out.len();
                moe_edge_kernels::matvec(
                    GgmlType::Q8_0,
                    q.len(),
                    &k[..n * q8_bytes(q.len())],
                    &qq,
                    out,
                );
                out.iter_mut().for_each(|s| *s *= scale);
            }
        }
    }

    /// `out = Σ_p w[p] · row[p]`.
    pub fn weighted_sum(self, w: &[f32], out: &mut [f32]) {
        let width = out.len();
        match self {
            Rows::F32(v) => moe_edge_kernels::weighted_rows(w, v, width, out),
            Rows::F16(v) => moe_edge_kernels::weighted_rows(w, v, width, out),
            Rows::Q8_0(_) => unreachable!("a q8_0 V cache is refused by KvTypes::check"),
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
        if let Err(e) = types.check(cfg) {
            panic!("{e:#} (callers check KvTypes first)");
        }
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

    /// Asks for the cache lines [`KvCache::store`] will write for position `pos` of layer `il`
    /// (one row per KV head and side, scattered over the cache): a decode step calls it right
    /// after its q, k and v products, so the lines arrive while q and k are normed and rotated.
    /// Without it, storing one token's keys and values waited about 10 µs per layer on
    /// those lines (OLMoE shape).
    pub fn prefetch_row(&self, il: usize, pos: usize) {
        let (hk, hv) = (self.head_dim, self.head_dim_v);
        for h in 0..self.n_head_kv {
            self.k.prefetch(self.head_start(il, h, hk) + pos * hk, hk);
            self.v.prefetch(self.head_start(il, h, hv) + pos * hv, hv);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    fn config(head_dim: usize) -> Config {
        Config {
            arch: Arch::Qwen3Moe,
            n_layer: 2,
            n_embd: 3 * head_dim,
            n_head: 6,
            n_head_kv: 3,
            head_dim,
            head_dim_v: head_dim,
            n_vocab: 10,
            n_ctx_train: 64,
            rms_eps: 1e-6,
            rope_base: 1e4,
            rope_dims: head_dim,
            n_expert: 0,
            n_expert_used: 0,
            expert_weights_scale: 1.0,
        }
    }

    /// Deterministic values in about [-2, 2).
    fn values(seed: usize, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 4001) as f32 / 1000.0 - 2.0)
            .collect()
    }

    #[test]
    fn every_type_reads_back_what_was_stored_head_by_head() {
        let hd = 64;
        let cfg = config(hd);
        let kd = cfg.kv_dim();
        for (k_ty, v_ty, tol) in [
            (KvType::F32, KvType::F32, 1e-5),
            (KvType::F16, KvType::F16, 2e-2),
            (KvType::Q8_0, KvType::F16, 0.15),
        ] {
            let types = KvTypes { k: k_ty, v: v_ty };
            let mut cache = KvCache::new(&cfg, 8, types);
            assert_eq!(cache.bytes(), types.cache_bytes(&cfg, 8));
            // Layer 1, positions 2..5 stored in one call, as a prompt batch does.
            let (k, v) = (values(1, 3 * kd), values(2, 3 * kd));
            cache.store(1, 2, &k, &v);
            let q = values(3, hd);
            for h in 0..cfg.n_head_kv {
                let mut scores = [0f32; 5];
                cache.keys(1, h, 5).scores(&q, 0.5, &mut scores);
                for t in 0..3 {
                    let row = &k[t * kd + h * hd..t * kd + (h + 1) * hd];
                    let want = 0.5 * q.iter().zip(row).map(|(a, b)| a * b).sum::<f32>();
                    let got = scores[2 + t];
                    assert!(
                        (got - want).abs() <= tol * (1.0 + want.abs()),
                        "{k_ty} head {h} position {}: {got} vs {want}",
                        2 + t
                    );
                }
                let mut w = [0f32; 5];
                w[3] = 1.0;
                let mut out = vec![0f32; hd];
                cache.values(1, h, 5).weighted_sum(&w, &mut out);
                let row = &v[kd + h * hd..kd + (h + 1) * hd];
                for (got, want) in out.iter().zip(row) {
                    assert!((got - want).abs() <= 1e-3 * (1.0 + want.abs()), "{v_ty}");
                }
            }
        }
    }

    #[test]
    fn hadamard_rotation_is_orthonormal_and_sized_as_llama_cpp() {
        let q8 = KvTypes {
            k: KvType::Q8_0,
            v: KvType::F16,
        };
        assert_eq!(k_rotation_size(q8, 32), None);
        assert_eq!(k_rotation_size(q8, 64), Some(64));
        assert_eq!(k_rotation_size(q8, 128), Some(128));
        assert_eq!(k_rotation_size(q8, 192), Some(64));
        assert_eq!(k_rotation_size(KvTypes::default(), 128), None);
        // H·e0 is the first column: every entry 1/√n. Two rotations give back the input
        // (H² = I), and dot products are kept.
        let mut e0 = vec![0f32; 128];
        e0[0] = 1.0;
        rotate_hadamard(&mut e0, 128);
        assert!(e0.iter().all(|&v| (v - 1.0 / 128f32.sqrt()).abs() < 1e-7));
        let (a, b) = (values(5, 256), values(6, 256));
        let (mut ra, mut rb) = (a.clone(), b.clone());
        rotate_hadamard(&mut ra, 128);
        rotate_hadamard(&mut rb, 128);
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!((dot(&a, &b) - dot(&ra, &rb)).abs() < 1e-3 * dot(&a, &a));
        rotate_hadamard(&mut ra, 128);
        assert!(ra.iter().zip(&a).all(|(p, q)| (p - q).abs() < 1e-5));
        // The second row of H (Sylvester order) alternates signs.
        let mut e1 = vec![0f32; 64];
        e1[1] = 1.0;
        rotate_hadamard(&mut e1, 64);
        assert!(e1
            .iter()
            .enumerate()
            .all(|(i, &v)| (v - if i % 2 == 0 { 0.125 } else { -0.125 }).abs() < 1e-7));
    }

    #[test]
    fn q8_0_is_refused_where_it_cannot_work() {
        let q8_k = KvTypes {
            k: KvType::Q8_0,
            v: KvType::F16,
        };
        assert!(q8_k.check(&config(64)).is_ok());
        let e = q8_k.check(&config(48)).unwrap_err().to_string();
        assert!(e.contains("multiple of 32") && e.contains("48"), "{e}");
        let q8_v = KvTypes {
            k: KvType::F16,
            v: KvType::Q8_0,
        };
        let e = q8_v.check(&config(64)).unwrap_err().to_string();
        assert!(e.contains("--cache-type-v q8_0"), "{e}");
        // 64 values: 2 blocks of 34 bytes for K, 128 bytes of f16 for V, 3 heads, 2 layers.
        assert_eq!(q8_k.cache_bytes(&config(64), 1), 2 * 3 * (68 + 128));
    }
}
