//! `vpdpbusd` (AVX-512 VNNI, and AVX-VNNI's 256-bit form) computed exactly with AVX2 or AVX-512
//! BW instructions, for tests only. CI's machines may lack VNNI and the emulator that boots here
//! does not model it, so the VNNI kernels are also stamped out with these functions in place of
//! the instruction (`vnni_emulated` modules): everything of a VNNI kernel but the instruction
//! itself then runs in the property tests wherever AVX-512 BW (or, for the 256-bit kernels,
//! AVX2) runs (natively, or under `tools/avx512-emu`).
//!
//! `vpdpbusd acc, a, b`: each 32-bit lane of `acc` plus the four products of `a`'s unsigned
//! bytes and `b`'s signed bytes in that lane, wrapping, no saturation (Intel SDM, VPDPBUSD).
//! Here the even and the odd bytes are widened to 16 bits (zero- and sign-extended) and
//! `vpmaddwd` sums each pair of products: exact, since |a · b| ≤ 255 · 128 and two of them fit
//! 32 bits.

use std::arch::x86_64::*;

/// `_mm512_dpbusd_epi32(acc, a, b)` with AVX-512 BW.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn dpbusd_512(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let a_even = _mm512_and_si512(a, _mm512_set1_epi16(0x00FF));
    let a_odd = _mm512_srli_epi16::<8>(a);
    let b_even = _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(b));
    let b_odd = _mm512_srai_epi16::<8>(b);
    let even = _mm512_madd_epi16(a_even, b_even);
    let odd = _mm512_madd_epi16(a_odd, b_odd);
    _mm512_add_epi32(acc, _mm512_add_epi32(even, odd))
}

/// `_mm256_dpbusd_avx_epi32(acc, a, b)` (AVX-VNNI) with AVX2, for the `avxvnni` kernels' twins.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dpbusd_256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let a_even = _mm256_and_si256(a, _mm256_set1_epi16(0x00FF));
    let a_odd = _mm256_srli_epi16::<8>(a);
    let b_even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b));
    let b_odd = _mm256_srai_epi16::<8>(b);
    let even = _mm256_madd_epi16(a_even, b_even);
    let odd = _mm256_madd_epi16(a_odd, b_odd);
    _mm256_add_epi32(acc, _mm256_add_epi32(even, odd))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, lane by lane.
    fn dpbusd_reference(acc: &[i32], a: &[u8], b: &[i8]) -> Vec<i32> {
        acc.iter()
            .enumerate()
            .map(|(l, &s)| {
                (0..4).fold(s, |s, k| {
                    s.wrapping_add(a[4 * l + k] as i32 * b[4 * l + k] as i32)
                })
            })
            .collect()
    }

    /// Every byte pair's extremes (0 and 255 against -128 and 127) and random bytes, with
    /// accumulators near both ends of i32 so the wrap is exercised.
    fn cases(n: usize) -> Vec<(Vec<i32>, Vec<u8>, Vec<i8>)> {
        let mut x = 0x243F_6A88_85A3_08D3u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for case in 0..64 {
            let a: Vec<u8> = (0..4 * n)
                .map(|i| match case {
                    0 => 255,
                    1 => [0, 255][i % 2],
                    _ => next() as u8,
                })
                .collect();
            let b: Vec<i8> = (0..4 * n)
                .map(|i| match case {
                    0 => -128,
                    1 => [127, -128][i / 2 % 2],
                    _ => next() as i8,
                })
                .collect();
            let acc: Vec<i32> = (0..n)
                .map(|l| match l % 3 {
                    0 => i32::MAX - (next() % 1000) as i32,
                    1 => i32::MIN + (next() % 1000) as i32,
                    _ => next() as i32,
                })
                .collect();
            out.push((acc, a, b));
        }
        out
    }

    #[test]
    fn dpbusd_512_matches_the_definition() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return;
        }
        for (acc, a, b) in cases(16) {
            // SAFETY: AVX-512 F and BW are present; every load is 64 bytes of a 64-byte buffer.
            let got: [i32; 16] = unsafe {
                let r = dpbusd_512(
                    _mm512_loadu_si512(acc.as_ptr() as *const _),
                    _mm512_loadu_si512(a.as_ptr() as *const _),
                    _mm512_loadu_si512(b.as_ptr() as *const _),
                );
                std::mem::transmute::<__m512i, [i32; 16]>(r)
            };
            assert_eq!(got.to_vec(), dpbusd_reference(&acc, &a, &b));
        }
    }

    /// Where the CPU has VNNI, the instruction itself agrees with the definition the emulation
    /// is checked against (so the emulated twins stand for the real kernels).
    #[test]
    fn the_vnni_instruction_matches_the_definition() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            return;
        }
        #[target_feature(enable = "avx512f,avx512vnni")]
        fn dpbusd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
            _mm512_dpbusd_epi32(acc, a, b)
        }
        for (acc, a, b) in cases(16) {
            // SAFETY: AVX-512 F and VNNI are present; every load is 64 bytes of a 64-byte
            // buffer.
            let got: [i32; 16] = unsafe {
                let r = dpbusd(
                    _mm512_loadu_si512(acc.as_ptr() as *const _),
                    _mm512_loadu_si512(a.as_ptr() as *const _),
                    _mm512_loadu_si512(b.as_ptr() as *const _),
                );
                std::mem::transmute::<__m512i, [i32; 16]>(r)
            };
            assert_eq!(got.to_vec(), dpbusd_reference(&acc, &a, &b));
        }
    }

    #[test]
    fn dpbusd_256_matches_the_definition() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        for (acc, a, b) in cases(8) {
            // SAFETY: AVX2 is present; every load is 32 bytes of a 32-byte buffer.
            let got: [i32; 8] = unsafe {
                let r = dpbusd_256(
                    _mm256_loadu_si256(acc.as_ptr() as *const _),
                    _mm256_loadu_si256(a.as_ptr() as *const _),
                    _mm256_loadu_si256(b.as_ptr() as *const _),
                );
                std::mem::transmute::<__m256i, [i32; 8]>(r)
            };
            assert_eq!(got.to_vec(), dpbusd_reference(&acc, &a, &b));
        }
    }

    /// The same for AVX-VNNI's 256-bit `vpdpbusd`, where the CPU has it.
    #[test]
    fn the_avx_vnni_instruction_matches_the_definition() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni")) {
            return;
        }
        #[target_feature(enable = "avx2,avxvnni")]
        fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
            _mm256_dpbusd_avx_epi32(acc, a, b)
        }
        for (acc, a, b) in cases(8) {
            // SAFETY: AVX2 and AVX-VNNI are present; every load is 32 bytes of a 32-byte buffer.
            let got: [i32; 8] = unsafe {
                let r = dpbusd(
                    _mm256_loadu_si256(acc.as_ptr() as *const _),
                    _mm256_loadu_si256(a.as_ptr() as *const _),
                    _mm256_loadu_si256(b.as_ptr() as *const _),
                );
                std::mem::transmute::<__m256i, [i32; 8]>(r)
            };
            assert_eq!(got.to_vec(), dpbusd_reference(&acc, &a, &b));
        }
    }
}
