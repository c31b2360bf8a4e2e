//! GGUF files: validated headers, memory-mapped tensor views and positional reads.
//!
//! Opening reads only a bounded prefix for the header (growing it as needed), validates the whole
//! header against the file length, and only then maps the tensor data. A 64-bit process maps the
//! data section whole; a process whose address space cannot hold it (32-bit, or a forced limit via
//! `MOE_EDGE_MAP_LIMIT`) maps each tensor's own range on demand, so the experts of a model larger
//! than the address space are read into cache slots by `pread` and never mapped.

mod mapping;
mod parse;
mod value;
pub mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};

pub use mapping::FileMap;
pub use parse::{caps, parse_header, Header, HeaderError, Metadata, TensorInfo};
pub use value::Value;

/// The largest mapping attempted in one piece on this build: the address space of a 32-bit
/// process cannot hold a multi-GB model.
fn default_map_limit() -> u64 {
    if cfg!(target_pointer_width = "32") {
        512 << 20
    } else {
        u64::MAX
    }
}

/// The map limit in force (`MOE_EDGE_MAP_LIMIT` bytes overrides the default; used by tests).
pub fn map_limit() -> u64 {
    std::env::var("MOE_EDGE_MAP_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(default_map_limit)
}

enum DataView {
    /// The whole data section in one map.
    Whole(FileMap),
    /// Tensors mapped one by one when first asked for (by name).
    PerTensor(Mutex<HashMap<String, Arc<FileMap>>>),
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    header: Header,
    data: DataView,
}

impl GgufFile {
    /// Opens, validates and maps a GGUF file. Errors name the file and the cause.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path)
            .with_context(|| format!("cannot open model file {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            bail!("{} is a directory, not a GGUF file", path.display());
        }
        let len = meta.len();
        let header =
            read_header(&file, len).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let data_len = len - header.data_offset.min(len);
        let data = if data_len == 0 {
            DataView::PerTensor(Mutex::new(HashMap::new()))
        } else if data_len <= map_limit() && usize::try_from(data_len).is_ok() {
            let map = FileMap::new(&file, path, header.data_offset, data_len as usize)?;
            // Until told otherwise (`populate`), a fault reads its own page only: read-around
            // would pull neighbouring tensors, often experts, into the page cache, where they
            // count against a RAM budget.
            map.advise_random();
            DataView::Whole(map)
        } else {
            log::info!(
                "{}: data section ({data_len} bytes) exceeds the map limit; mapping tensors one by one",
                path.display()
            );
            DataView::PerTensor(Mutex::new(HashMap::new()))
        };
        Ok(GgufFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            len,
            header,
            data,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }
    pub fn file_len(&self) -> u64 {
        self.len
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }
    /// Disables read-ahead on the data mapping (budgeted mode).
    pub fn advise_random(&self) {
        if let DataView::Whole(map) = &self.data {
            map.advise_random();
        }
    }

    /// Faults the whole data section in (all-resident mode); no-op for per-tensor maps.
    pub fn populate(&self) {
        if let DataView::Whole(map) = &self.data {
            map.populate();
        }
    }

    pub fn is_mapped_whole(&self) -> bool {
        matches!(self.data, DataView::Whole(_))
    }

    /// Names of tensors mapped one by one so far (empty when the data is mapped whole).
    pub fn mapped_tensor_names(&self) -> Vec<String> {
        match &self.data {
            DataView::Whole(_) => Vec::new(),
            DataView::PerTensor(m) => {
                let mut v: Vec<String> = m
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                v.sort();
                v
            }
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header
            .tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The bytes of a tensor, through the map. Valid for the file's lifetime.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<TensorBytes> {
        match &self.data {
            DataView::Whole(map) => {
                let start = (info.file_offset - self.header.data_offset) as usize;
                let bytes = &map.bytes()[start..start + info.n_bytes as usize];
                Ok(TensorBytes::Borrowed(bytes.as_ptr(), bytes.len()))
            }
            DataView::PerTensor(maps) => {
                let mut maps = maps.lock().unwrap_or_else(|e| e.into_inner());
                let map = match maps.get(&info.name) {
                    Some(m) => m.clone(),
                    None => {
                        let len = usize::try_from(info.n_bytes).with_context(|| {
                            format!("tensor '{}' is too large for this address space", info.name)
                        })?;
                        let m =
                            Arc::new(FileMap::new(&self.file, &self.path, info.file_offset, len)?);
                        maps.insert(info.name.clone(), m.clone());
                        m
                    }
                };
                Ok(TensorBytes::Mapped(map))
            }
        }
    }

    /// Reads like [`GgufFile::read_at`], in pieces, and drops each piece from the page cache once
    /// read (the caller keeps its own copy; the cache would only hold RAM twice).
    pub fn read_at_uncached(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        const PIECE: usize = 64 << 20;
        // SAFETY: as below, advice only. Random access turns off read-ahead for this descriptor,
        // which would otherwise pull the next tensor's pages (often experts) into the cache
        // behind each read; the reads themselves are large enough to need none.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
        }
        let mut done = 0usize;
        for piece in buf.chunks_mut(PIECE) {
            let at = offset + done as u64;
            self.read_at(at, piece, what)?;
            // SAFETY: posix_fadvise only advises the kernel about this file's page cache; it
            // touches no memory of ours, and a failure is harmless.
            unsafe {
                use std::os::fd::AsRawFd;
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    at as libc::off_t,
                    piece.len() as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
            done += piece.len();
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at absolute file offset `offset` (pread). A short read is an error
    /// naming `what` (the file may have been truncated since it was opened).
    pub fn read_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        self.file.read_exact_at(buf, offset).with_context(|| {
            format!(
                "{}: cannot read {} bytes of {what} at offset {offset} (was the file truncated or changed?)",
                self.path.display(),
                buf.len()
            )
        })
    }
}

/// Bytes of one tensor: borrowed from the whole-file map, or owning its own map.
pub enum TensorBytes {
    /// Pointer and length into a map owned by the `GgufFile`.
    Borrowed(*const u8, usize),
    Mapped(Arc<FileMap>),
    /// Read into memory of our own (e.g. repacked for the kernels).
    Owned(Vec<u8>),
}

// SAFETY: the borrowed pointer points into a read-only map that is never mutated; sharing it
// across threads is as safe as sharing `&[u8]`.
unsafe impl Send for TensorBytes {}
// SAFETY: as above, the data behind the pointer is immutable.
unsafe impl Sync for TensorBytes {}

impl TensorBytes {
    /// The bytes. The caller keeps the `GgufFile` alive as long as it uses them (the model owns
    /// both, see `model::Weights`).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            // SAFETY: pointer and length came from a slice of the whole-file map, which lives as
            // long as the GgufFile; the model keeps the file alive for as long as it holds these.
            TensorBytes::Borrowed(p, n) => unsafe { std::slice::from_raw_parts(*p, *n) },
            TensorBytes::Mapped(m) => m.bytes(),
            TensorBytes::Owned(v) => v,
        }
    }
}

/// Reads the header with positional reads of a growing prefix, never the whole file.
fn read_header(file: &File, len: u64) -> std::result::Result<Header, String> {
    let mut want: u64 = 1 << 20;
    loop {
        let n = want.min(len) as usize;
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, 0)
            .map_err(|e| format!("cannot read the header: {e}"))?;
        match parse_header(&buf, len) {
            Ok(h) => return Ok(h),
            Err(HeaderError::Truncated { .. }) if (n as u64) < len => want = want.saturating_mul(4),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Typed access to metadata with errors that name the key.
pub trait MetadataExt {
    fn require(&self, key: &str) -> Result<&Value>;
    fn u64_key(&self, key: &str) -> Result<u64>;
    fn u64_or(&self, key: &str, default: u64) -> Result<u64>;
    fn f32_or(&self, key: &str, default: f32) -> Result<f32>;
    fn str_key(&self, key: &str) -> Result<&str>;
}

impl MetadataExt for Metadata {
    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .with_context(|| format!("required metadata key '{key}' is missing"))
    }
    fn u64_key(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().with_context(|| {
            format!(
                "metadata key '{key}' is a {}, expected a non-negative integer",
                v.type_name()
            )
        })
    }
    fn u64_or(&self, key: &str, default: u64) -> Result<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.u64_key(key),
        }
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f32().with_context(|| {
                format!(
                    "metadata key '{key}' is a {}, expected a number",
                    v.type_name()
                )
            }),
        }
    }
    fn str_key(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().with_context(|| {
            format!(
                "metadata key '{key}' is a {}, expected a string",
                v.type_name()
            )
        })
    }
}
