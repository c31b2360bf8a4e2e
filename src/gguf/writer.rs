//! A streaming GGUF (v3) writer: metadata and tensor infos first, then tensor data written in
//! order, so files larger than RAM can be produced (`moe-edge synth`, tests).

use std::io::{Seek, SeekFrom, Write};

use anyhow::{bail, Result};
use moe_edge_kernels::GgmlType;

use super::Value;

/// A tensor to be written: name, ggml dims (row length first) and type.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: &[u64], ty: GgmlType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
        }
    }

    /// Bytes of the tensor's data (saturating: tests write deliberately absurd shapes).
    pub fn n_bytes(&self) -> u64 {
        let n: u64 = self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        (n / self.ty.block_size() as u64).saturating_mul(self.ty.type_size() as u64)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            let elem = items.first().map(type_id).unwrap_or(4);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// Encodes a GGUF header (magic through the padding before the data section).
pub fn encode_header(
    metadata: &[(String, Value)],
    tensors: &[TensorSpec],
    alignment: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = offset
            .saturating_add(t.n_bytes())
            .checked_next_multiple_of(alignment)
            .unwrap_or(u64::MAX);
    }
    out.resize((out.len() as u64).next_multiple_of(alignment) as usize, 0);
    out
}

/// Writes a GGUF file tensor by tensor.
pub struct GgufWriter<W: Write + Seek> {
    out: W,
    tensors: Vec<TensorSpec>,
    next: usize,
    alignment: u64,
    written_in_tensor: u64,
}

impl<W: Write + Seek> GgufWriter<W> {
    pub fn new(mut out: W, metadata: &[(String, Value)], tensors: Vec<TensorSpec>) -> Result<Self> {
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(32);
        out.write_all(&encode_header(metadata, &tensors, alignment))?;
        Ok(GgufWriter {
            out,
            tensors,
            next: 0,
            alignment,
            written_in_tensor: 0,
        })
    }

    /// The tensor the next bytes belong to.
    pub fn current(&self) -> Option<&TensorSpec> {
        self.tensors.get(self.next)
    }

    /// Appends bytes of the current tensor; moves to the next when it is complete.
    pub fn write_data(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.next) else {
            bail!("all tensors are already written")
        };
        let need = t.n_bytes();
        if self.written_in_tensor + bytes.len() as u64 > need {
            bail!("too many bytes for tensor '{}' ({need})", t.name);
        }
        self.out.write_all(bytes)?;
        self.written_in_tensor += bytes.len() as u64;
        if self.written_in_tensor == need {
            let pad = need.next_multiple_of(self.alignment) - need;
            if self.next + 1 < self.tensors.len() && pad > 0 {
                self.out.write_all(&vec![0u8; pad as usize])?;
            }
            self.next += 1;
            self.written_in_tensor = 0;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        if self.next != self.tensors.len() {
            bail!("tensor '{}' was not written", self.tensors[self.next].name);
        }
        self.out.flush()?;
        self.out.seek(SeekFrom::End(0))?;
        Ok(self.out)
    }
}
