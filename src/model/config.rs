//! `Config`: the model's blueprint, read from GGUF metadata with llama.cpp's semantics.

use anyhow::{bail, Context, Result};

use crate::gguf::{GgufFile, MetadataExt};

/// Caps on untrusted hyperparameters: far above any released model, low enough that a lying
/// header cannot make moe-edge allocate absurd buffers.
pub mod caps {
    pub const MAX_LAYERS: u64 = 512;
    pub const MAX_EXPERTS: u64 = 1024;
    pub const MAX_HEADS: u64 = 1024;
    pub const MAX_EMBD: u64 = 1 << 17;
    pub const MAX_CTX: u64 = 1 << 24;
}

/// Architectures moe-edge runs, as `general.architecture` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen2Moe,
    Qwen3,
    Qwen3Moe,
    Olmoe,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen2moe" => Arch::Qwen2Moe,
            "qwen3" => Arch::Qwen3,
            "qwen3moe" => Arch::Qwen3Moe,
            "olmoe" => Arch::Olmoe,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen2Moe => "qwen2moe",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Olmoe => "olmoe",
        }
    }

    /// llama.cpp's rope type: NORM rotates adjacent pairs, NEOX rotates halves.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Norm,
            _ => RopeStyle::Neox,
        }
    }

    /// Whether the top-k router weights are renormalised to sum to one (llama.cpp's `norm_w`).
    pub fn renormalizes_topk(self) -> bool {
        matches!(self, Arch::Llama | Arch::Qwen3Moe)
    }

    /// Where q/k normalisation applies, if any.
    pub fn qk_norm(self) -> QkNorm {
        match self {
            Arch::Qwen3 | Arch::Qwen3Moe => QkNorm::PerHead,
            Arch::Olmoe => QkNorm::Full,
            _ => QkNorm::None,
        }
    }
}

pub const SUPPORTED_ARCHS: &str = "llama, qwen2, qwen2moe, qwen3, qwen3moe, olmoe";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    Norm,
    Neox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// RMSNorm over each head's `head_dim` values (qwen3, qwen3moe).
    PerHead,
    /// RMSNorm over the whole q (or k) projection (olmoe).
    Full,
}

/// Hyperparameters of a model.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head size of q and k.
    pub head_dim: usize,
    /// Per-head size of v.
    pub head_dim_v: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dims: usize,
    /// 0 for dense models.
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Scale applied to the expert weights after selection (1 = none).
    pub expert_weights_scale: f32,
}

impl Config {
    pub fn from_gguf(file: &GgufFile) -> Result<Config> {
        let meta = file.metadata();
        let arch_name = meta.str_key("general.architecture")?;
        let arch = Arch::from_name(arch_name).with_context(|| {
            format!("unsupported architecture '{arch_name}' (moe-edge runs: {SUPPORTED_ARCHS})")
        })?;
        let k = |suffix: &str| format!("{arch_name}.{suffix}");
        let bounded = |key: String, max: u64| -> Result<usize> {
            let v = meta.u64_key(&key)?;
            if v == 0 || v > max {
                bail!("metadata key '{key}' = {v} is out of range (1 to {max})");
            }
            Ok(v as usize)
        };
        let n_layer = bounded(k("block_count"), caps::MAX_LAYERS)?;
        let n_embd = bounded(k("embedding_length"), caps::MAX_EMBD)?;
        let n_head = bounded(k("attention.head_count"), caps::MAX_HEADS)?;
        let n_head_kv = match meta.get(&k("attention.head_count_kv")) {
            None => n_head,
            Some(_) => bounded(k("attention.head_count_kv"), caps::MAX_HEADS)?,
        };
        if n_head % n_head_kv != 0 {
            bail!("attention.head_count {n_head} is not a multiple of head_count_kv {n_head_kv}");
        }
        let head_dim = match meta.get(&k("attention.key_length")) {
            None => {
                if n_embd % n_head != 0 {
                    bail!("embedding_length {n_embd} is not a multiple of head_count {n_head}");
                }
                n_embd / n_head
            }
            Some(_) => bounded(k("attention.key_length"), caps::MAX_EMBD)?,
        };
        let head_dim_v = match meta.get(&k("attention.value_length")) {
            None => head_dim,
            Some(_) => bounded(k("attention.value_length"), caps::MAX_EMBD)?,
        };
        let n_ctx_train = bounded(k("context_length"), caps::MAX_CTX)?;
        let rms_eps = meta.f32_or(&k("attention.layer_norm_rms_epsilon"), 1e-6)?;
        if !(rms_eps > 0.0 && rms_eps < 1.0) {
            bail!(
                "metadata key '{}' = {rms_eps} is out of range",
                k("attention.layer_norm_rms_epsilon")
            );
        }
        let rope_base = meta.f32_or(&k("rope.freq_base"), 10000.0)?;
        if !(rope_base.is_finite() && rope_base > 1.0) {
            bail!(
                "metadata key '{}' = {rope_base} is out of range",
                k("rope.freq_base")
            );
        }
        let rope_dims = meta.u64_or(&k("rope.dimension_count"), head_dim as u64)? as usize;
        if rope_dims == 0 || rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            bail!("rope.dimension_count {rope_dims} must be even and at most the head size {head_dim}");
        }
        let n_expert = meta.u64_or(&k("expert_count"), 0)?;
        if n_expert > caps::MAX_EXPERTS {
            bail!(
                "metadata key '{}' = {n_expert} exceeds the cap of {}",
                k("expert_count"),
                caps::MAX_EXPERTS
            );
        }
        let n_expert_used = if n_expert > 0 {
            meta.u64_key(&k("expert_used_count"))?
        } else {
            0
        };
        if n_expert > 0 && (n_expert_used == 0 || n_expert_used > n_expert) {
            bail!(
                "expert_used_count {n_expert_used} must be between 1 and expert_count {n_expert}"
            );
        }
        let is_moe_arch = matches!(arch, Arch::Qwen2Moe | Arch::Qwen3Moe | Arch::Olmoe);
        if is_moe_arch && n_expert == 0 {
            bail!(
                "required metadata key '{}' is missing (a {arch_name} model has experts)",
                k("expert_count")
            );
        }
        let expert_weights_scale = meta.f32_or(&k("expert_weights_scale"), 0.0)?;
        let n_vocab = file
            .tensor("token_embd.weight")
            .context("tensor 'token_embd.weight' is missing")?
            .dim(1) as usize;
        Ok(Config {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope_base,
            rope_dims,
            n_expert: n_expert as usize,
            n_expert_used: n_expert_used as usize,
            expert_weights_scale,
        })
    }

    pub fn is_moe(&self) -> bool {
        self.n_expert > 0
    }
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}
