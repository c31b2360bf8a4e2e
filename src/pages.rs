//! Large owned weight buffers backed by transparent huge pages where the kernel allows it.
//!
//! Decode streams every resident weight once per token. With 4 KiB pages that is a TLB miss (and
//! a page walk) every 4 KiB; with 2 MiB pages, one per 2 MiB. Linux's default
//! (`transparent_hugepage/enabled = madvise`) gives anonymous memory huge pages only when asked,
//! so packed copies ask before their first touch. Measured effect: BENCHMARKS.md (tenth
//! session): the read-bandwidth probe read 21-31 GB/s (median 27) against 21-24, and decode
//! gained a few per cent.

/// Size of an x86-64 / AArch64 transparent huge page.
const HUGE_PAGE: usize = 2 << 20;

/// A zeroed buffer of `len` bytes whose whole 2 MiB-aligned interior is advised to use huge
/// pages. Small buffers (under two huge pages) are plain.
pub fn zeroed_weight_buffer(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    advise_huge_pages(&mut buf);
    buf
}

/// Advises huge pages for the 2 MiB-aligned part of `buf`; best effort (a kernel without THP,
/// or with it set to `never`, refuses and nothing changes).
pub fn advise_huge_pages(buf: &mut [u8]) {
    if buf.len() < 2 * HUGE_PAGE {
        return;
    }
    let skew = buf.as_ptr().align_offset(HUGE_PAGE);
    let usable = (buf.len() - skew) / HUGE_PAGE * HUGE_PAGE;
    if usable == 0 {
        return;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: madvise(MADV_HUGEPAGE) is advice about our own mapping: `skew..skew + usable` lies
    // inside `buf`, which we borrow mutably, and the advice changes no byte of it.
    unsafe {
        let start = buf.as_mut_ptr().add(skew) as *mut libc::c_void;
        if libc::madvise(start, usable, libc::MADV_HUGEPAGE) != 0 {
            log::debug!(
                "madvise(MADV_HUGEPAGE) refused: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_zeroed_and_of_the_asked_length() {
        for len in [0, 1, 4095, (4 << 20) + 17] {
            let b = zeroed_weight_buffer(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
        }
    }

    /// Where the kernel has transparent huge pages, the buffer's mapping carries the advice
    /// (`hg` in its `VmFlags` in /proc/self/smaps).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_buffer_is_advised_to_use_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            return;
        }
        let buf = zeroed_weight_buffer(16 << 20);
        let mid = buf.as_ptr() as usize + (8 << 20);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            let range = line.split(' ').next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a <= mid && mid < b;
                    continue;
                }
            }
            if inside && line.starts_with("VmFlags:") {
                flags = Some(line.to_string());
            }
        }
        let flags = flags.expect("the buffer's mapping is listed in /proc/self/smaps");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
    }
}
