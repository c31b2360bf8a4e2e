//! All experts resident: views into the memory-mapped file, or owned packed copies when the
//! layout asks for the kernels' packed layout (like llama.cpp's repack, an anonymous copy).

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::{ExpertBytes, ExpertStore, StoreStats};
use crate::gguf::{GgufFile, TensorBytes};
use crate::model::weights::{ExpertLayout, ExpertTensor};

struct LayerExperts {
    gate: (TensorBytes, u64),
    up: (TensorBytes, u64),
    down: (TensorBytes, u64),
    n_expert: usize,
}

/// Serves expert bytes from the file mapping.
pub struct MappedExpertStore {
    layers: Vec<Option<LayerExperts>>,
    requests: AtomicU64,
    total_bytes: u64,
    /// Some tensor is held as packed copies.
    packed: bool,
}

/// The tensor's bytes: a view into the map, or (for a packed tensor) an owned copy read with
/// `pread`, packed expert by expert in parallel, the page cache dropped behind it.
fn view(file: &GgufFile, t: &ExpertTensor) -> Result<(TensorBytes, u64)> {
    let info = file
        .tensor(&t.name)
        .ok_or_else(|| anyhow::anyhow!("tensor '{}' is missing", t.name))?;
    if !t.packed {
        return Ok((file.tensor_bytes(info)?, t.bytes_per_expert));
    }
    let mut buf = crate::pages::zeroed_weight_buffer(info.n_bytes as usize);
    file.read_at_uncached(info.file_offset, &mut buf, &format!("tensor '{}'", t.name))?;
    buf.par_chunks_mut(t.bytes_per_expert as usize)
        .for_each_init(Vec::new, |scratch, expert| {
            moe_edge_kernels::pack_rows_in_place(t.ty, t.cols, expert, scratch)
        });
    Ok((TensorBytes::Owned(buf), t.bytes_per_expert))
}

impl MappedExpertStore {
    pub fn new(file: &GgufFile, layouts: &[Option<ExpertLayout>], n_expert: usize) -> Result<Self> {
        let mut layers = Vec::with_capacity(layouts.len());
        let mut total_bytes = 0;
        for l in layouts {
            layers.push(match l {
                None => None,
                Some(l) => {
                    total_bytes += l.bytes_per_expert() * n_expert as u64;
                    Some(LayerExperts {
                        gate: view(file, &l.gate)?,
                        up: view(file, &l.up)?,
                        down: view(file, &l.down)?,
                        n_expert,
                    })
                }
            });
        }
        let packed = layouts
            .iter()
            .flatten()
            .any(|l| l.gate.packed || l.up.packed || l.down.packed);
        Ok(MappedExpertStore {
            layers,
            requests: AtomicU64::new(0),
            total_bytes,
            packed,
        })
    }
}

fn slice(t: &(TensorBytes, u64), e: usize) -> &[u8] {
    let n = t.1 as usize;
    &t.0.as_slice()[e * n..(e + 1) * n]
}

impl ExpertStore for MappedExpertStore {
    fn kind(&self) -> &'static str {
        "mapped"
    }

    fn with_experts(
        &self,
        layer: usize,
        experts: &[usize],
        f: &mut dyn FnMut(&[ExpertBytes<'_>]) -> Result<()>,
    ) -> Result<()> {
        let Some(Some(l)) = self.layers.get(layer) else {
            bail!("layer {layer} has no experts");
        };
        // On the stack for a decode step's experts: the in-RAM path allocates nothing.
        let mut views: smallvec::SmallVec<[ExpertBytes<'_>; 16]> = smallvec::SmallVec::new();
        for &e in experts {
            if e >= l.n_expert {
                bail!(
                    "expert {e} of layer {layer} does not exist ({} experts)",
                    l.n_expert
                );
            }
            views.push(ExpertBytes {
                gate: slice(&l.gate, e),
                up: slice(&l.up, e),
                down: slice(&l.down, e),
            });
        }
        self.requests
            .fetch_add(experts.len() as u64, Ordering::Relaxed);
        f(&views)
    }

    fn packs_experts(&self) -> bool {
        self.packed
    }

    fn stats(&self) -> StoreStats {
        let requests = self.requests.load(Ordering::Relaxed);
        StoreStats {
            requests,
            hits: requests,
            resident_bytes: self.total_bytes,
            capacity_bytes: self.total_bytes,
            ..StoreStats::default()
        }
    }
}
