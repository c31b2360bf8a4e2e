//! `Weights`: the model's resident (non-expert) tensors as views into the mapped file, and the
//! byte layout of every expert, computed and checked once. Expert bytes themselves are only ever
//! reached through an `ExpertStore`.

use anyhow::{bail, Context, Result};
use moe_edge_kernels::GgmlType;

use super::config::{Arch, Config, QkNorm};
use super::linalg::WeightView;
use crate::gguf::{GgufFile, TensorBytes, TensorInfo};

/// A 2-D weight matrix `[rows][cols]` in ggml layout (each row contiguous, `cols` = ggml ne0).
pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    bytes: TensorBytes,
    /// Stored in the kernels' packed layout (an owned copy) rather than as mapped ggml rows.
    pub packed: bool,
}

impl Matrix {
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
    pub fn view(&self) -> WeightView<'_> {
        WeightView {
            ty: self.ty,
            cols: self.cols,
            rows: self.rows,
            bytes: self.bytes(),
            packed: self.packed,
        }
    }
    /// Replaces the mapped rows by a packed copy read from `file` (page cache dropped after).
    fn repack(&mut self, file: &GgufFile) -> Result<()> {
        if self.packed || !packs(true, self.ty, self.rows) {
            return Ok(());
        }
        let info = get(file, &self.name)?;
        let mut buf = crate::pages::zeroed_weight_buffer(info.n_bytes as usize);
        file.read_at_uncached(
            info.file_offset,
            &mut buf,
            &format!("tensor '{}'", self.name),
        )?;
        moe_edge_kernels::pack_rows_in_place(self.ty, self.cols, &mut buf, &mut Vec::new());
        self.bytes = TensorBytes::Owned(buf);
        self.packed = true;
        Ok(())
    }
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols).expect("validated")
    }
}

/// Whether a `rows`-row tensor of `ty` is stored packed when `repack` is asked for: only where
/// the active kernel level has a packed kernel, so scalar-only CPUs keep zero-copy mapping.
pub fn packs(repack: bool, ty: GgmlType, rows: usize) -> bool {
    repack && moe_edge_kernels::can_pack(ty, rows) && moe_edge_kernels::packing_pays(ty)
}

/// A vector (norm weights, biases) dequantized to f32 at load.
pub type Vector = Vec<f32>;

/// Where one stacked expert tensor (`ffn_{gate,up,down}_exps`) keeps each expert.
#[derive(Clone, Debug)]
pub struct ExpertTensor {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Absolute file offset of expert 0.
    pub file_offset: u64,
    /// Bytes of one expert's matrix.
    pub bytes_per_expert: u64,
    /// Experts are held in the kernels' packed layout once read (same size as the file's rows).
    pub packed: bool,
}

impl ExpertTensor {
    /// One expert's matrix (`bytes` as the store holds it).
    pub fn view<'a>(&self, bytes: &'a [u8]) -> WeightView<'a> {
        WeightView {
            ty: self.ty,
            cols: self.cols,
            rows: self.rows,
            bytes,
            packed: self.packed,
        }
    }

    pub fn offset_of(&self, expert: usize) -> u64 {
        self.file_offset + expert as u64 * self.bytes_per_expert
    }
}

/// The three matrices of one layer's experts: gate `[ff][embd]`, up `[ff][embd]`, down `[embd][ff]`.
#[derive(Clone, Debug)]
pub struct ExpertLayout {
    pub gate: ExpertTensor,
    pub up: ExpertTensor,
    pub down: ExpertTensor,
}

impl ExpertLayout {
    /// The layout with each tensor marked packed where `repack` is asked for and pays off.
    pub fn with_packing(mut self, repack: bool) -> ExpertLayout {
        for t in [&mut self.gate, &mut self.up, &mut self.down] {
            t.packed = packs(repack, t.ty, t.rows);
        }
        self
    }

    pub fn bytes_per_expert(&self) -> u64 {
        self.gate.bytes_per_expert + self.up.bytes_per_expert + self.down.bytes_per_expert
    }
}

pub struct DenseFfn {
    pub gate: Matrix,
    pub up: Matrix,
    pub down: Matrix,
}

pub struct SharedExpert {
    pub ffn: DenseFfn,
    /// `ffn_gate_inp_shexp`: one row; sigmoid(row · x) scales the shared expert (qwen2moe).
    pub gate_inp: Option<Matrix>,
}

#[allow(clippy::large_enum_variant)]
pub enum Ffn {
    Dense(DenseFfn),
    Moe {
        /// `ffn_gate_inp`: `[n_expert][n_embd]`, the router.
        router: Matrix,
        experts: ExpertLayout,
        shared: Option<SharedExpert>,
    },
}

pub struct LayerWeights {
    pub attn_norm: Vector,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vector>,
    pub bk: Option<Vector>,
    pub bv: Option<Vector>,
    pub bo: Option<Vector>,
    pub q_norm: Option<Vector>,
    pub k_norm: Option<Vector>,
    pub ffn_norm: Vector,
    pub ffn: Ffn,
}

pub struct Weights {
    /// `token_embd`: `[n_vocab][n_embd]`.
    pub token_embd: Matrix,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vector,
    /// `output` or, when absent, the tied `token_embd`.
    pub output: Matrix,
}

fn get<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    file.tensor(name)
        .with_context(|| format!("required tensor '{name}' is missing"))
}

fn expect_dims(t: &TensorInfo, want: &[u64]) -> Result<()> {
    let trim = |d: &[u64]| {
        let mut v = d.to_vec();
        while v.len() > 1 && v.last() == Some(&1) {
            v.pop();
        }
        v
    };
    if trim(&t.dims) != trim(want) {
        bail!(
            "tensor '{}' has shape {:?}, expected {:?}",
            t.name,
            t.dims,
            want
        );
    }
    Ok(())
}

fn matrix(file: &GgufFile, name: &str, cols: usize, rows: usize) -> Result<Matrix> {
    let t = get(file, name)?;
    expect_dims(t, &[cols as u64, rows as u64])?;
    Ok(Matrix {
        name: name.to_string(),
        ty: t.ggml_type,
        rows,
        cols,
        bytes: file.tensor_bytes(t)?,
        packed: false,
    })
}

fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vector> {
    let t = get(file, name)?;
    expect_dims(t, &[len as u64])?;
    let bytes = file.tensor_bytes(t)?;
    let mut out = vec![0f32; len];
    moe_edge_kernels::dequantize_row(t.ggml_type, bytes.as_slice(), &mut out);
    Ok(out)
}

fn opt_vector(file: &GgufFile, name: &str, len: usize) -> Result<Option<Vector>> {
    if file.tensor(name).is_some() {
        vector(file, name, len).map(Some)
    } else {
        Ok(None)
    }
}

fn expert_tensor(
    file: &GgufFile,
    name: &str,
    cols: Option<usize>,
    rows: Option<usize>,
    n_expert: usize,
) -> Result<ExpertTensor> {
    let t = get(file, name)?;
    if t.dims.len() != 3 || t.dims[2] != n_expert as u64 {
        bail!(
            "tensor '{name}' has shape {:?}, expected [cols, rows, {n_expert}]",
            t.dims
        );
    }
    let (c, r) = (t.dims[0] as usize, t.dims[1] as usize);
    if cols.is_some_and(|x| x != c) || rows.is_some_and(|x| x != r) {
        bail!(
            "tensor '{name}' has shape {:?}, expected [{cols:?}, {rows:?}, {n_expert}]",
            t.dims
        );
    }
    Ok(ExpertTensor {
        name: name.to_string(),
        ty: t.ggml_type,
        rows: r,
        cols: c,
        file_offset: t.file_offset,
        bytes_per_expert: t.n_bytes / n_expert as u64,
        packed: false,
    })
}

impl Weights {
    pub fn load(file: &GgufFile, cfg: &Config) -> Result<Weights> {
        let e = cfg.n_embd;
        let token_embd = matrix(file, "token_embd.weight", e, cfg.n_vocab)?;
        let output_norm = vector(file, "output_norm.weight", e)?;
        let output = if file.tensor("output.weight").is_some() {
            matrix(file, "output.weight", e, cfg.n_vocab)?
        } else {
            matrix(file, "token_embd.weight", e, cfg.n_vocab)?
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for il in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            if file.tensor(&n("attn_qkv.weight")).is_some() {
                bail!(
                    "tensor '{}' (fused QKV) is not supported yet",
                    n("attn_qkv.weight")
                );
            }
            let (q_norm, k_norm) = match cfg.arch.qk_norm() {
                QkNorm::None => (None, None),
                QkNorm::PerHead => (
                    Some(vector(file, &n("attn_q_norm.weight"), cfg.head_dim)?),
                    Some(vector(file, &n("attn_k_norm.weight"), cfg.head_dim)?),
                ),
                QkNorm::Full => (
                    Some(vector(file, &n("attn_q_norm.weight"), cfg.q_dim())?),
                    Some(vector(file, &n("attn_k_norm.weight"), cfg.kv_dim())?),
                ),
            };
            let ffn = if cfg.is_moe() {
                let router = matrix(file, &n("ffn_gate_inp.weight"), e, cfg.n_expert)?;
                let gate = expert_tensor(
                    file,
                    &n("ffn_gate_exps.weight"),
                    Some(e),
                    None,
                    cfg.n_expert,
                )?;
                let ff = gate.rows;
                let up = expert_tensor(
                    file,
                    &n("ffn_up_exps.weight"),
                    Some(e),
                    Some(ff),
                    cfg.n_expert,
                )?;
                let down = expert_tensor(
                    file,
                    &n("ffn_down_exps.weight"),
                    Some(ff),
                    Some(e),
                    cfg.n_expert,
                )?;
                let shared = if file.tensor(&n("ffn_up_shexp.weight")).is_some() {
                    let up_t = get(file, &n("ffn_up_shexp.weight"))?;
                    let ffs = up_t.dim(1) as usize;
                    let gate_inp = if file.tensor(&n("ffn_gate_inp_shexp.weight")).is_some() {
                        Some(matrix(file, &n("ffn_gate_inp_shexp.weight"), e, 1)?)
                    } else {
                        None
                    };
                    Some(SharedExpert {
                        ffn: DenseFfn {
                            gate: matrix(file, &n("ffn_gate_shexp.weight"), e, ffs)?,
                            up: matrix(file, &n("ffn_up_shexp.weight"), e, ffs)?,
                            down: matrix(file, &n("ffn_down_shexp.weight"), ffs, e)?,
                        },
                        gate_inp,
                    })
                } else {
                    None
                };
                if cfg.arch == Arch::Qwen2Moe && shared.is_none() {
                    bail!(
                        "tensor '{}' is missing (qwen2moe has a shared expert)",
                        n("ffn_up_shexp.weight")
                    );
                }
                Ffn::Moe {
                    router,
                    experts: ExpertLayout { gate, up, down },
                    shared,
                }
            } else {
                let gate_t = get(file, &n("ffn_gate.weight"))?;
                let ff = gate_t.dim(1) as usize;
                Ffn::Dense(DenseFfn {
                    gate: matrix(file, &n("ffn_gate.weight"), e, ff)?,
                    up: matrix(file, &n("ffn_up.weight"), e, ff)?,
                    down: matrix(file, &n("ffn_down.weight"), ff, e)?,
                })
            };
            layers.push(LayerWeights {
                attn_norm: vector(file, &n("attn_norm.weight"), e)?,
                wq: matrix(file, &n("attn_q.weight"), e, cfg.q_dim())?,
                wk: matrix(file, &n("attn_k.weight"), e, cfg.kv_dim())?,
                wv: matrix(file, &n("attn_v.weight"), e, cfg.v_dim())?,
                wo: matrix(
                    file,
                    &n("attn_output.weight"),
                    cfg.n_head * cfg.head_dim_v,
                    e,
                )?,
                bq: opt_vector(file, &n("attn_q.bias"), cfg.q_dim())?,
                bk: opt_vector(file, &n("attn_k.bias"), cfg.kv_dim())?,
                bv: opt_vector(file, &n("attn_v.bias"), cfg.v_dim())?,
                bo: opt_vector(file, &n("attn_output.bias"), e)?,
                q_norm,
                k_norm,
                ffn_norm: vector(file, &n("ffn_norm.weight"), e)?,
                ffn,
            });
        }
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
        })
    }

    /// Packs every resident matrix that has a packed layout (all but the token embeddings,
    /// which are looked up by row), as llama.cpp's CPU repack does, and with `experts` marks
    /// expert tensors packed (the expert store must then hand them out packed). Returns the
    /// bytes now held in owned packed copies.
    pub fn repack(&mut self, file: &GgufFile, experts: bool) -> Result<u64> {
        let mut packed = 0u64;
        let mut one = |m: &mut Matrix| -> Result<()> {
            m.repack(file)?;
            if m.packed {
                packed += m.bytes().len() as u64;
            }
            Ok(())
        };
        one(&mut self.output)?;
        for l in &mut self.layers {
            for m in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo] {
                one(m)?;
            }
            match &mut l.ffn {
                Ffn::Dense(d) => {
                    for m in [&mut d.gate, &mut d.up, &mut d.down] {
                        one(m)?;
                    }
                }
                Ffn::Moe {
                    router,
                    experts: layout,
                    shared,
                } => {
                    one(router)?;
                    if let Some(s) = shared {
                        for m in [&mut s.ffn.gate, &mut s.ffn.up, &mut s.ffn.down] {
                            one(m)?;
                        }
                    }
                    *layout = layout.clone().with_packing(experts);
                }
            }
        }
        Ok(packed)
    }

    /// The expert layout of every MoE layer (`None` for dense layers).
    pub fn expert_layouts(&self) -> Vec<Option<ExpertLayout>> {
        self.layers
            .iter()
            .map(|l| match &l.ffn {
                Ffn::Moe { experts, .. } => Some(experts.clone()),
                Ffn::Dense(_) => None,
            })
            .collect()
    }

    /// Bytes of every resident (non-expert) tensor the model reads, counting a tied output once.
    pub fn resident_bytes(&self) -> u64 {
        let m = |x: &Matrix| x.bytes().len() as u64;
        let mut total = m(&self.token_embd) + (self.output_norm.len() * 4) as u64;
        if self.output.bytes().as_ptr() != self.token_embd.bytes().as_ptr() {
            total += m(&self.output);
        }
        for l in &self.layers {
            total += m(&l.wq) + m(&l.wk) + m(&l.wv) + m(&l.wo);
            total += ((l.attn_norm.len() + l.ffn_norm.len()) * 4) as u64;
            match &l.ffn {
                Ffn::Dense(d) => total += m(&d.gate) + m(&d.up) + m(&d.down),
                Ffn::Moe { router, shared, .. } => {
                    total += m(router);
                    if let Some(s) = shared {
                        total += m(&s.ffn.gate) + m(&s.ffn.up) + m(&s.ffn.down);
                    }
                }
            }
        }
        total
    }
}
