//! The GGUF header parser. It reads from a byte slice (a prefix of the file, or all of it) and
//! validates everything before any tensor data is viewed: caps on counts and lengths, checked
//! arithmetic, known types only, every tensor inside the file and aligned.
//!
//! Format facts (GGUF v2/v3, little-endian): magic `GGUF`, u32 version, u64 tensor count, u64
//! metadata count, the metadata key/value pairs, the tensor infos, padding to `general.alignment`
//! (default 32), then the tensor data. Tensor offsets are relative to the start of the data.

use std::collections::HashMap;

use moe_edge_kernels::GgmlType;

use super::value::Value;

/// Limits applied to untrusted headers.
pub mod caps {
    pub const MAX_TENSORS: u64 = 1 << 20;
    pub const MAX_METADATA: u64 = 1 << 16;
    pub const MAX_KEY_LEN: u64 = 1 << 16;
    pub const MAX_STRING_LEN: u64 = 1 << 26;
    pub const MAX_ARRAY_LEN: u64 = 1 << 24;
    pub const MAX_NESTING: u32 = 4;
    pub const MAX_DIMS: u32 = 4;
    pub const MAX_ALIGNMENT: u64 = 1 << 16;
    /// No dimension and no element count may exceed this (2^48 elements is far past any model).
    pub const MAX_ELEMENTS: u64 = 1 << 48;
}

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Why a header was rejected. The message names the field or tensor.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (moe-edge reads versions 2 and 3)")]
    BadVersion(u32),
    #[error("file is truncated: {what} needs {need} bytes at offset {at}, but the {have} bytes end first")]
    Truncated {
        what: String,
        at: u64,
        need: u64,
        have: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> HeaderError {
    HeaderError::Invalid(msg.into())
}

/// One tensor's description, validated against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute offset of the tensor's first byte in the file.
    pub file_offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    pub fn row_bytes(&self) -> usize {
        self.ggml_type
            .row_bytes(self.dims[0] as usize)
            .expect("validated at parse time")
    }

    /// The dimension `i`, or 1 beyond the tensor's rank (ggml's convention).
    pub fn dim(&self, i: usize) -> u64 {
        self.dims.get(i).copied().unwrap_or(1)
    }
}

/// A parsed, validated GGUF header.
#[derive(Debug)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
    /// Bytes of the file the header itself occupies (before the data section).
    pub header_len: u64,
}

/// The metadata key/value pairs, in file order.
#[derive(Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Builds metadata from pairs (tests and tools). Later duplicates are rejected.
    pub fn from_pairs(pairs: Vec<(String, Value)>) -> Result<Metadata, HeaderError> {
        let mut m = Metadata::default();
        for (k, v) in pairs {
            m.insert(k, v)?;
        }
        Ok(m)
    }

    fn insert(&mut self, key: String, value: Value) -> Result<(), HeaderError> {
        if self.index.contains_key(&key) {
            return Err(invalid(format!("metadata key '{key}' appears twice")));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], HeaderError> {
        let end = (self.pos as u64).checked_add(n);
        match end {
            Some(end) if end <= self.buf.len() as u64 => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            _ => Err(HeaderError::Truncated {
                what: what(),
                at: self.pos as u64,
                need: n,
                have: self.file_len.min(self.buf.len() as u64),
            }),
        }
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, HeaderError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16, HeaderError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, cap: u64, what: &dyn Fn() -> String) -> Result<String, HeaderError> {
        let len = self.u64(what)?;
        if len > cap {
            return Err(invalid(format!(
                "{}: string length {len} exceeds the cap of {cap}",
                what()
            )));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid(format!("{}: string is not valid UTF-8", what())))
    }

    fn value(
        &mut self,
        type_id: u32,
        depth: u32,
        what: &dyn Fn() -> String,
    ) -> Result<Value, HeaderError> {
        Ok(match type_id {
            0 => Value::U8(self.u8(what)?),
            1 => Value::I8(self.u8(what)? as i8),
            2 => Value::U16(self.u16(what)?),
            3 => Value::I16(self.u16(what)? as i16),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(self.u32(what)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(invalid(format!(
                        "{}: bool byte {b} is neither 0 nor 1",
                        what()
                    )))
                }
            },
            8 => Value::String(self.string(caps::MAX_STRING_LEN, what)?),
            9 => {
                if depth >= caps::MAX_NESTING {
                    return Err(invalid(format!(
                        "{}: arrays nested deeper than {}",
                        what(),
                        caps::MAX_NESTING
                    )));
                }
                let elem_type = self.u32(what)?;
                let count = self.u64(what)?;
                if count > caps::MAX_ARRAY_LEN {
                    return Err(invalid(format!(
                        "{}: array of {count} items exceeds the cap of {}",
                        what(),
                        caps::MAX_ARRAY_LEN
                    )));
                }
                // Every element takes at least one byte (strings and arrays at least 8): refuse
                // counts the remaining bytes cannot hold before allocating for them.
                let min_size = match elem_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => {
                        return Err(invalid(format!(
                            "{}: unknown array element type {t}",
                            what()
                        )))
                    }
                };
                if count.saturating_mul(min_size) > self.remaining() {
                    return Err(HeaderError::Truncated {
                        what: what(),
                        at: self.pos as u64,
                        need: count.saturating_mul(min_size),
                        have: self.file_len.min(self.buf.len() as u64),
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, depth + 1, what)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(what)?)),
            t => {
                return Err(invalid(format!(
                    "{}: unknown metadata value type {t}",
                    what()
                )))
            }
        })
    }
}

/// Parses and validates a GGUF header.
///
/// `prefix` holds the first bytes of the file (at least the whole header; all of it is fine) and
/// `file_len` the real file length, against which every tensor's range is checked.
pub fn parse_header(prefix: &[u8], file_len: u64) -> Result<Header, HeaderError> {
    let mut r = Reader {
        buf: prefix,
        pos: 0,
        file_len,
    };
    let magic: [u8; 4] = r.take(4, &|| "the magic bytes".into())?.try_into().unwrap();
    if &magic != GGUF_MAGIC {
        return Err(HeaderError::BadMagic(magic));
    }
    let version = r.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        return Err(HeaderError::BadVersion(version));
    }
    let n_tensors = r.u64(&|| "the tensor count".into())?;
    let n_kv = r.u64(&|| "the metadata count".into())?;
    if n_tensors > caps::MAX_TENSORS {
        return Err(invalid(format!(
            "tensor count {n_tensors} exceeds the cap of {}",
            caps::MAX_TENSORS
        )));
    }
    if n_kv > caps::MAX_METADATA {
        return Err(invalid(format!(
            "metadata count {n_kv} exceeds the cap of {}",
            caps::MAX_METADATA
        )));
    }

    let mut metadata = Metadata::default();
    for i in 0..n_kv {
        let key = r.string(caps::MAX_KEY_LEN, &|| format!("metadata key #{i}"))?;
        let what = || format!("metadata '{key}'");
        let type_id = r.u32(&what)?;
        let value = r.value(type_id, 0, &what)?;
        metadata.insert(key, value)?;
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_u64().ok_or_else(|| {
                invalid(format!(
                    "general.alignment is a {}, expected an integer",
                    v.type_name()
                ))
            })?;
            if a == 0 || !a.is_power_of_two() || a > caps::MAX_ALIGNMENT {
                return Err(invalid(format!(
                    "general.alignment {a} is not a power of two up to {}",
                    caps::MAX_ALIGNMENT
                )));
            }
            a
        }
    };

    struct RawTensor {
        name: String,
        dims: Vec<u64>,
        ggml_type: GgmlType,
        offset: u64,
        n_bytes: u64,
    }
    let mut raw = Vec::with_capacity(n_tensors.min(4096) as usize);
    let mut tensor_index = HashMap::new();
    for i in 0..n_tensors {
        let name = r.string(caps::MAX_KEY_LEN, &|| format!("tensor #{i}'s name"))?;
        let what = || format!("tensor '{name}'");
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims > caps::MAX_DIMS {
            return Err(invalid(format!(
                "tensor '{name}': {n_dims} dimensions (1 to {} allowed)",
                caps::MAX_DIMS
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for _ in 0..n_dims {
            let d = r.u64(&what)?;
            if d == 0 || d > caps::MAX_ELEMENTS {
                return Err(invalid(format!(
                    "tensor '{name}': dimension {d} is out of range"
                )));
            }
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= caps::MAX_ELEMENTS)
                .ok_or_else(|| invalid(format!("tensor '{name}': element count overflows")))?;
            dims.push(d);
        }
        let type_id = r.u32(&what)?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            invalid(format!(
                "tensor '{name}' has type {} (id {type_id}), which moe-edge does not support",
                GgmlType::name_of_id(type_id)
            ))
        })?;
        if dims[0] % ggml_type.block_size() as u64 != 0 {
            return Err(invalid(format!(
                "tensor '{name}': row length {} is not a multiple of {}'s block size {}",
                dims[0],
                ggml_type,
                ggml_type.block_size()
            )));
        }
        let n_bytes = (n_elements / ggml_type.block_size() as u64)
            .checked_mul(ggml_type.type_size() as u64)
            .ok_or_else(|| invalid(format!("tensor '{name}': byte size overflows")))?;
        let offset = r.u64(&what)?;
        if offset % alignment != 0 {
            return Err(invalid(format!(
                "tensor '{name}': offset {offset} is not aligned to {alignment}"
            )));
        }
        if tensor_index.insert(name.clone(), raw.len()).is_some() {
            return Err(invalid(format!("tensor '{name}' appears twice")));
        }
        raw.push(RawTensor {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    let header_len = r.pos as u64;
    let data_offset = header_len.div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for t in raw {
        let file_offset = data_offset
            .checked_add(t.offset)
            .ok_or_else(|| invalid(format!("tensor '{}': offset overflows", t.name)))?;
        let end = file_offset
            .checked_add(t.n_bytes)
            .ok_or_else(|| invalid(format!("tensor '{}': offset + size overflows", t.name)))?;
        if end > file_len {
            return Err(invalid(format!(
                "tensor '{}' ({} bytes at offset {file_offset}) runs past the end of the file ({file_len} bytes): the file is truncated or corrupt",
                t.name, t.n_bytes
            )));
        }
        tensors.push(TensorInfo {
            name: t.name,
            dims: t.dims,
            ggml_type: t.ggml_type,
            file_offset,
            n_bytes: t.n_bytes,
        });
    }
    check_no_overlap(&tensors)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
        header_len,
    })
}

/// Two tensors sharing bytes is a lying header (or an attempt to alias weights): refuse it.
fn check_no_overlap(tensors: &[TensorInfo]) -> Result<(), HeaderError> {
    let mut ranges: Vec<(u64, u64, &str)> = tensors
        .iter()
        .map(|t| (t.file_offset, t.file_offset + t.n_bytes, t.name.as_str()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(invalid(format!(
                "tensors '{}' and '{}' overlap in the file",
                w[0].2, w[1].2
            )));
        }
    }
    Ok(())
}
