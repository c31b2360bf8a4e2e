//! The one place where moe-edge maps a model file into memory.
//!
//! Mapping a file is `unsafe` in Rust because the bytes may change underneath the program if
//! another process writes or truncates the file while it is mapped: reads could then see torn
//! data or, past a truncation, fault with SIGBUS. moe-edge's contract: model files are treated as
//! read-only while loaded (documented in README "Model files"). Everything read through a map has
//! been range-checked against the file length at open time, and expert weights, which are read
//! again and again, are read with positional reads (`pread`) into owned buffers, not through the
//! map, so a file truncated while running gives an error there rather than a fault.

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

/// A read-only mapping of `len` bytes of a file starting at `offset`.
pub struct FileMap {
    map: Mmap,
}

impl FileMap {
    /// Maps `len` bytes at `offset` (`offset` need not be page aligned).
    pub fn new(file: &File, path: &Path, offset: u64, len: usize) -> anyhow::Result<FileMap> {
        // SAFETY: the mapping is read-only and the range was validated against the file's length;
        // the remaining hazard (the file modified while mapped) is the documented contract above.
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file) }.map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot map {len} bytes at offset {offset}: {e}",
                path.display()
            )
        })?;
        Ok(FileMap { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Turns off read-ahead for the mapping: under a RAM budget, faulting in a non-expert tensor
    /// must not drag the neighbouring experts' pages into the page cache (they are charged to
    /// the process's cgroup).
    pub fn advise_random(&self) {
        let _ = self.map.advise(memmap2::Advice::Random);
    }

    /// Reads the whole range in and maps every page now (what "all weights resident" means),
    /// so the first tokens do not pay hundreds of thousands of page faults. Falls back to
    /// touching one byte per page where `MADV_POPULATE_READ` is not available.
    pub fn populate(&self) {
        let _ = self.map.advise(memmap2::Advice::Sequential);
        #[cfg(target_os = "linux")]
        if self.map.advise(memmap2::Advice::PopulateRead).is_ok() {
            return;
        }
        let _ = self.map.advise(memmap2::Advice::WillNeed);
        let mut sum = 0u8;
        for b in self.map.iter().step_by(4096) {
            sum = sum.wrapping_add(*b);
        }
        std::hint::black_box(sum);
    }
}
