//! Interleaved ("packed") weight layouts: groups of [`PACK_ROWS`] rows stored so that one SIMD
//! load reaches the same block column of every row in the group.
//!
//! The row-major ggml layout makes a matrix-vector product read `PACK_ROWS` separate streams and
//! finish each row with a horizontal sum; the packed layout gives one stream and leaves row `r`
//! of a group in lane `r` of the accumulator. A packed matrix has exactly as many bytes as the
//! row-major one, so it fits the same expert-cache slot and can be packed in place.
//!
//! Packed Q4_0 (`Q4_0x8`): for each group of 8 rows, for each block column `b`, 144 bytes:
//! - 8 block scales (f16), rows 0..8;
//! - 4 chunks of 32 bytes; chunk `c` holds, for rows 0..8 in turn, bytes `4c..4c+4` of that
//!   row's 16 nibble bytes (low nibbles are elements `4c..4c+4`, high nibbles `16+4c..16+4c+4`).
//!
//! Arithmetic (identical at every level, so every level gives bit-identical results): with the
//! activation quantized to Q8_0, for each row and block the exact integer dot
//! `Σ (q - 8) · y` is formed, and the row's f32 accumulator becomes
//! `fma(d_w · d_a, dot, acc)`, blocks in order.
//!
//! Packed Q4_K (`Q4_Kx8`): for each group of 8 rows, for each 256-element super-block column,
//! 1152 bytes:
//! - 8 `d` (f16), then 8 `dmin` (f16), rows 0..8;
//! - 64 bytes: for sub-block `s` (0..8), for row `r`, `(scale & 15) | (min & 15) << 4`;
//! - 32 bytes: for sub-block `s`, a little-endian u32 whose nibble `r` is
//!   `scale >> 4 | (min >> 4) << 2` (the 6-bit scales' and mins' top bits);
//! - 1024 bytes of nibbles: for chunk `j` (0..4, elements `64j..64j+64`), for piece `k` (0..8),
//!   rows 0..8 in turn, bytes `32j+4k..32j+4k+4` of that row's `qs` (low nibbles: sub-block
//!   `2j`, high nibbles: sub-block `2j+1`).
//!
//! With Q8_K activations, per row and super-block the exact integers
//! `isum = Σ_s scale_s · Σ_{i∈s} q_i y_i` and `msum = Σ_s min_s · Σ_{i∈s} y_i` are formed and the
//! accumulator becomes `fma(-(dmin · d_a), msum, fma(d · d_a, isum, acc))`.
//!
//! Packed Q8_0 (`Q8_0x8`): for each group of 8 rows, for each block column `b`, 272 bytes:
//! - 8 block scales (f16), rows 0..8;
//! - 8 chunks of 32 bytes; chunk `c` holds, for rows 0..8 in turn, quants `4c..4c+4` of that
//!   row's block.
//!
//! With Q8_0 activations, per row and block the exact integer dot `Σ q · y` is formed and the
//! row's accumulator becomes `fma(d_w · d_a, dot, acc)`, blocks in order.
//!
//! Packed Q5_K (`Q5_Kx8`): for each group of 8 rows, for each super-block column, 1408 bytes
//! (8 × 176): the first 128 bytes as in `Q4_Kx8` (`d`, `dmin`, the 6-bit scales and mins), then
//! for sub-block `s` (0..8, 32 elements), 160 bytes: four 32-byte vectors `A0..A3` and one `H`,
//! each holding 4 bytes per row (rows 0..8 in turn). With `q(j)` the 5-bit quant of element
//! `32s + j`, byte `i` of row `r` is: in `Ap`, `q(8p + i) & 15 | (q(8p + 4 + i) & 15) << 4`; in `H`,
//! bit `c` (0..8) is the top bit of `q(4c + i)`. The arithmetic is Q4_K's.
//!
//! Packed Q6_K (`Q6_Kx8`): for each group of 8 rows, for each 256-element super-block column,
//! 1680 bytes (8 × 210, like the row-major blocks):
//! - 8 `d` (f16), rows 0..8;
//! - 128 bytes of scales: for sub-block pair `p` (0..8), for row `r`, the i8 scales of
//!   sub-blocks `2p` and `2p + 1` (16 elements each);
//! - for sub-block `s` (0..16), 96 bytes: three 32-byte vectors `A`, `B`, `H`, each holding 4
//!   bytes per row (rows 0..8 in turn). With `q(j)` the 6-bit quant of element `16s + j`, byte `i`
//!   of row `r` is: in `A`, `q(i) & 15 | (q(4 + i) & 15) << 4`; in `B`, the same for `q(8 + i)` and
//!   `q(12 + i)`; in `H`, the top two bits of `q(i)`, `q(4 + i)`, `q(8 + i)`, `q(12 + i)` at bits
//!   0, 2, 4, 6.
//!
//! With Q8_K activations, per row and super-block the exact integer
//! `isum = Σ_s scale_s · Σ_{i∈s} q_i y_i − 32 · Σ_s scale_s · bsum_s` is formed (`bsum_s` the
//! activation's sum over sub-block `s`, from the Q8_K block) and the accumulator becomes
//! `fma(d · d_a, isum, acc)`.

use std::cell::RefCell;

use crate::blocks::F16Bits;
use crate::level::KernelLevel;
use crate::types::GgmlType;

/// Rows interleaved per group.
pub const PACK_ROWS: usize = 8;

/// Weights, quantized activations and their per-block summaries, as a packed kernel sees them.
pub(crate) struct PackedArgs<'a> {
    pub n_cols: usize,
    /// Packed weight groups, back to back.
    pub w: &'a [u8],
    /// `n_tokens` activation rows in the weight type's `vec_dot_type`.
    pub acts: &'a [u8],
    /// Activation block scales as f32, `[token][block]`.
    pub act_d: &'a [f32],
    /// Q4_0: `8 · Σ y` of each activation block (the zero point times the block sum; computed
    /// but unused for Q8_0, and empty for Q6_K),
    /// `[token][block]`. Q4_K: the sub-block sums of each block in 16-bit pairs,
    /// `[token][block][pair]` (see `summarize_q8_k`).
    pub act_s: &'a [i32],
    pub n_tokens: usize,
}

/// `out[t * n_rows + r]` for all packed rows and tokens.
pub(crate) type PackedMatmulFn = unsafe fn(args: &PackedArgs<'_>, out: &mut [f32]);

/// Whether `ty` has a packed layout and a `rows`-row matrix can use it.
pub fn can_pack(ty: GgmlType, rows: usize) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K
    ) && rows > 0
        && rows.is_multiple_of(PACK_ROWS)
}

/// Whether packing `ty` pays off at the active level (a SIMD packed kernel exists). Callers pack
/// only when this holds, so scalar-only builds keep the zero-copy row layout.
pub fn packing_pays(ty: GgmlType) -> bool {
    can_pack(ty, PACK_ROWS) && packed_kernel(crate::active_level(), ty).is_some()
}

/// The scalar twin of each packed type.
fn scalar_kernel(ty: GgmlType) -> PackedMatmulFn {
    match ty {
        GgmlType::Q4_K => crate::scalar::packed::matmul_q4_kx8,
        GgmlType::Q6_K => crate::scalar::packed::matmul_q6_kx8,
        GgmlType::Q8_0 => crate::scalar::packed::matmul_q8_0x8,
        GgmlType::Q5_K => crate::scalar::packed::matmul_q5_kx8,
        _ => crate::scalar::packed::matmul_q4_0x8,
    }
}

/// The SIMD kernel of `level` for packed `ty`, if there is one.
fn packed_kernel(level: KernelLevel, ty: GgmlType) -> Option<PackedMatmulFn> {
    if !can_pack(ty, PACK_ROWS) {
        return None;
    }
    match (level, ty) {
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Avx512 | KernelLevel::Avx512Vnni, _) if avx512_kernels_verified(level) => {
            avx512_kernel(level, ty)
        }
        #[cfg(target_arch = "x86_64")]
        (KernelLevel::Avx2 | KernelLevel::Avx512 | KernelLevel::Avx512Vnni, _) => Some(match ty {
            GgmlType::Q4_K => crate::x86::packed_avx2::avx2::matmul_q4_kx8,
            GgmlType::Q6_K => crate::x86::packed_q6k_avx2::matmul_q6_kx8,
            GgmlType::Q8_0 => crate::x86::packed_q8_avx2::matmul_q8_0x8,
            GgmlType::Q5_K => crate::x86::packed_q5k_avx2::matmul_q5_kx8,
            _ => crate::x86::packed_avx2::avx2::matmul_q4_0x8,
        }),
        #[cfg(target_arch = "aarch64")]
        (KernelLevel::Neon, GgmlType::Q4_0) => Some(crate::arm::packed_neon::matmul_q4_0x8_neon),
        #[cfg(target_arch = "aarch64")]
        (KernelLevel::NeonDotprod, GgmlType::Q4_0) => {
            Some(crate::arm::packed_neon::matmul_q4_0x8_dotprod)
        }
        #[cfg(target_arch = "aarch64")]
        (KernelLevel::Neon, GgmlType::Q4_K) => {
            Some(crate::arm::packed_q4k_neon::matmul_q4_kx8_neon)
        }
        #[cfg(target_arch = "aarch64")]
        (KernelLevel::NeonDotprod, GgmlType::Q4_K) => {
            Some(crate::arm::packed_q4k_neon::matmul_q4_kx8_dotprod)
        }
        _ => None,
    }
}

fn check_pack_shape(ty: GgmlType, n_cols: usize, len: usize) -> (usize, usize) {
    let rb = crate::row_bytes_of(ty, n_cols);
    assert!(
        len.is_multiple_of(rb) && can_pack(ty, len / rb),
        "{ty}: {len} bytes of {n_cols}-column rows cannot be packed in groups of {PACK_ROWS}"
    );
    (rb, len / rb)
}

/// Packs row-major rows `src` into `dst` (same length).
pub fn pack_rows(ty: GgmlType, n_cols: usize, src: &[u8], dst: &mut [u8]) {
    let (rb, _) = check_pack_shape(ty, n_cols, src.len());
    assert_eq!(src.len(), dst.len(), "pack_rows: destination length");
    for (g_src, g_dst) in src
        .chunks_exact(rb * PACK_ROWS)
        .zip(dst.chunks_exact_mut(rb * PACK_ROWS))
    {
        match ty {
            GgmlType::Q4_K => pack_group_q4_k(rb, g_src, g_dst),
            GgmlType::Q6_K => pack_group_q6_k(rb, g_src, g_dst),
            GgmlType::Q8_0 => pack_group_q8_0(rb, g_src, g_dst, true),
            GgmlType::Q5_K => pack_group_q5_k(rb, g_src, g_dst),
            _ => pack_group_q4_0(rb, g_src, g_dst),
        }
    }
}

fn pack_group_q4_0(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 18 {
        let out = &mut g_dst[b * 144..(b + 1) * 144];
        for r in 0..PACK_ROWS {
            let blk = &g_src[r * rb + b * 18..r * rb + (b + 1) * 18];
            out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
            for c in 0..4 {
                let at = 16 + 32 * c + 4 * r;
                out[at..at + 4].copy_from_slice(&blk[2 + 4 * c..2 + 4 * c + 4]);
            }
        }
    }
}

fn pack_group_q4_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 144 {
        let out = &mut g_dst[b * 1152..(b + 1) * 1152];
        out[96..128].fill(0);
        for r in 0..PACK_ROWS {
            let blk = &g_src[r * rb + b * 144..r * rb + (b + 1) * 144];
            pack_k_header(blk, r, out);
            let qs = &blk[16..144];
            for j in 0..4 {
                for k in 0..8 {
                    let at = 128 + 256 * j + 32 * k + 4 * r;
                    out[at..at + 4].copy_from_slice(&qs[32 * j + 4 * k..32 * j + 4 * k + 4]);
                }
            }
        }
    }
}

/// Packs `buf` in place; `scratch` is reused between calls.
pub fn pack_rows_in_place(ty: GgmlType, n_cols: usize, buf: &mut [u8], scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.extend_from_slice(buf);
    pack_rows(ty, n_cols, scratch, buf);
}

/// The inverse of [`pack_rows`] (for Q4_K, up to the encoding of the 12 scale bytes: the
/// unpacked block re-encodes the same 6-bit scales and mins, so it dequantizes identically).
pub fn unpack_rows(ty: GgmlType, n_cols: usize, src: &[u8], dst: &mut [u8]) {
    let (rb, _) = check_pack_shape(ty, n_cols, src.len());
    assert_eq!(src.len(), dst.len(), "unpack_rows: destination length");
    for (g_src, g_dst) in src
        .chunks_exact(rb * PACK_ROWS)
        .zip(dst.chunks_exact_mut(rb * PACK_ROWS))
    {
        match ty {
            GgmlType::Q4_K => unpack_group_q4_k(rb, g_src, g_dst),
            GgmlType::Q6_K => unpack_group_q6_k(rb, g_src, g_dst),
            GgmlType::Q8_0 => pack_group_q8_0(rb, g_src, g_dst, false),
            GgmlType::Q5_K => unpack_group_q5_k(rb, g_src, g_dst),
            _ => unpack_group_q4_0(rb, g_src, g_dst),
        }
    }
}

fn unpack_group_q4_0(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 18 {
        let inp = &g_src[b * 144..(b + 1) * 144];
        for r in 0..PACK_ROWS {
            let blk = &mut g_dst[r * rb + b * 18..r * rb + (b + 1) * 18];
            blk[..2].copy_from_slice(&inp[2 * r..2 * r + 2]);
            for c in 0..4 {
                let at = 16 + 32 * c + 4 * r;
                blk[2 + 4 * c..2 + 4 * c + 4].copy_from_slice(&inp[at..at + 4]);
            }
        }
    }
}

/// Scale and min of sub-block `sb` of row `r` in a packed Q4_K super-block column.
pub(crate) fn q4_kx8_scale_min(col: &[u8], sb: usize, r: usize) -> (u8, u8) {
    let lo = col[32 + 8 * sb + r];
    let word = u32::from_le_bytes(col[96 + 4 * sb..100 + 4 * sb].try_into().expect("4 bytes"));
    let top = ((word >> (4 * r)) & 15) as u8;
    ((lo & 15) | ((top & 3) << 4), (lo >> 4) | ((top >> 2) << 4))
}

fn unpack_group_q4_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 144 {
        let inp = &g_src[b * 1152..(b + 1) * 1152];
        for r in 0..PACK_ROWS {
            let blk = &mut g_dst[r * rb + b * 144..r * rb + (b + 1) * 144];
            unpack_k_header(inp, r, blk);
            for j in 0..4 {
                for k in 0..8 {
                    let at = 128 + 256 * j + 32 * k + 4 * r;
                    blk[16 + 32 * j + 4 * k..16 + 32 * j + 4 * k + 4]
                        .copy_from_slice(&inp[at..at + 4]);
                }
            }
        }
    }
}

/// Writes row `r`'s `d`, `dmin` and 6-bit scales and mins (bytes 0..16 of its Q4_K or Q5_K
/// block `blk`) into the first 128 bytes of a packed column `out` (bytes 96..128 zeroed first).
fn pack_k_header(blk: &[u8], r: usize, out: &mut [u8]) {
    out[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
    out[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&blk[2..4]);
    let scales: &[u8; 12] = blk[4..16].try_into().expect("12 bytes");
    for sb in 0..8 {
        let (sc, m) = crate::blocks::scale_min_k4(sb, scales);
        out[32 + 8 * sb + r] = (sc & 15) | ((m & 15) << 4);
        let top = ((sc >> 4) | ((m >> 4) << 2)) as u32;
        let word = 96 + 4 * sb;
        let mut v = u32::from_le_bytes(out[word..word + 4].try_into().expect("4 bytes"));
        v |= top << (4 * r);
        out[word..word + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// The inverse of [`pack_k_header`]: bytes 0..16 of row `r`'s block from a packed column.
fn unpack_k_header(inp: &[u8], r: usize, blk: &mut [u8]) {
    blk[0..2].copy_from_slice(&inp[2 * r..2 * r + 2]);
    blk[2..4].copy_from_slice(&inp[16 + 2 * r..16 + 2 * r + 2]);
    let mut q = [0u8; 12];
    for sb in 0..8 {
        let (sc, m) = q4_kx8_scale_min(inp, sb, r);
        if sb < 4 {
            q[sb] |= sc;
            q[sb + 4] |= m;
        } else {
            q[sb + 4] = (sc & 15) | ((m & 15) << 4);
            q[sb - 4] |= (sc >> 4) << 6;
            q[sb] |= (m >> 4) << 6;
        }
    }
    blk[4..16].copy_from_slice(&q);
}

/// The 5-bit quant of element `j` of a row-major Q5_K block: low 4 bits in `qs` (32-byte runs,
/// sub-block pairs sharing bytes, low nibble for the even sub-block), top bit in `qh[j % 32]` at
/// bit `j / 32`.
pub(crate) fn q5_k_quant(blk: &[u8], j: usize) -> u8 {
    let (s, l) = (j / 32, j % 32);
    let byte = blk[48 + 32 * (s / 2) + l];
    let lo = if s % 2 == 0 { byte & 15 } else { byte >> 4 };
    lo | ((blk[16 + l] >> s) & 1) << 4
}

/// Where element `i` of quad `c` of sub-block `s`, row `r`, sits in a packed Q5_K column: the
/// `A` byte and its nibble shift, the `H` byte and its bit.
pub(crate) fn q5_kx8_place(s: usize, c: usize, r: usize, i: usize) -> (usize, u32, usize, u32) {
    let base = 128 + 160 * s + 4 * r + i;
    (
        base + 32 * (c / 2),
        4 * (c % 2) as u32,
        base + 128,
        c as u32,
    )
}

fn pack_group_q5_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 176 {
        let out = &mut g_dst[b * 1408..(b + 1) * 1408];
        out[96..].fill(0);
        for r in 0..PACK_ROWS {
            let blk = &g_src[r * rb + b * 176..r * rb + (b + 1) * 176];
            pack_k_header(blk, r, out);
            for s in 0..8 {
                for c in 0..8 {
                    for i in 0..4 {
                        let q = q5_k_quant(blk, 32 * s + 4 * c + i);
                        let (lo_at, lo_shift, hi_at, bit) = q5_kx8_place(s, c, r, i);
                        out[lo_at] |= (q & 15) << lo_shift;
                        out[hi_at] |= (q >> 4) << bit;
                    }
                }
            }
        }
    }
}

fn unpack_group_q5_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 176 {
        let inp = &g_src[b * 1408..(b + 1) * 1408];
        for r in 0..PACK_ROWS {
            let blk = &mut g_dst[r * rb + b * 176..r * rb + (b + 1) * 176];
            blk[16..].fill(0);
            unpack_k_header(inp, r, blk);
            for s in 0..8 {
                for c in 0..8 {
                    for i in 0..4 {
                        let (lo_at, lo_shift, hi_at, bit) = q5_kx8_place(s, c, r, i);
                        let q = (inp[lo_at] >> lo_shift) & 15 | ((inp[hi_at] >> bit) & 1) << 4;
                        let (j, l) = (32 * s + 4 * c + i, 4 * c + i);
                        blk[48 + 32 * (s / 2) + l] |=
                            if s % 2 == 0 { q & 15 } else { (q & 15) << 4 };
                        blk[16 + l] |= (q >> 4) << (j / 32);
                    }
                }
            }
        }
    }
}

/// Packs (`pack`) or unpacks one group of Q8_0 rows: scale `r` and chunk `c` of row `r` of
/// block column `b` sit at `272b + 2r` and `272b + 16 + 32c + 4r`.
fn pack_group_q8_0(rb: usize, g_src: &[u8], g_dst: &mut [u8], pack: bool) {
    for b in 0..rb / 34 {
        for r in 0..PACK_ROWS {
            let row = r * rb + b * 34;
            let col = b * 272;
            let mut pairs = [(row, col + 2 * r, 2)]
                .into_iter()
                .chain((0..8).map(|c| (row + 2 + 4 * c, col + 16 + 32 * c + 4 * r, 4)));
            for (at_row, at_packed, len) in &mut pairs {
                let (from, to) = if pack {
                    (at_row, at_packed)
                } else {
                    (at_packed, at_row)
                };
                g_dst[to..to + len].copy_from_slice(&g_src[from..from + len]);
            }
        }
    }
}

/// Where element `j` (0..256) of a row-major Q6_K block keeps its low 4 bits (byte of `ql`,
/// high nibble or not) and its top 2 bits (byte of `qh`, shift), as ggml lays them out: the
/// block is two halves of 128; in a half, element `32k + l` has its low bits in `ql[l + 32(k % 2)]`
/// (high nibble for k ≥ 2) and its top bits at bits `2k..2k + 2` of `qh[l]`.
fn q6_k_place(j: usize) -> (usize, bool, usize, u32) {
    let (half, m) = (j / 128, j % 128);
    let (k, l) = (m / 32, m % 32);
    (
        64 * half + l + 32 * (k % 2),
        k >= 2,
        128 + 32 * half + l,
        2 * k as u32,
    )
}

/// The 6-bit quant (0..64) of element `j` of a row-major Q6_K block.
pub(crate) fn q6_k_quant(blk: &[u8], j: usize) -> u8 {
    let (lo_at, high_nibble, hi_at, shift) = q6_k_place(j);
    let lo = if high_nibble {
        blk[lo_at] >> 4
    } else {
        blk[lo_at] & 15
    };
    lo | ((blk[hi_at] >> shift) & 3) << 4
}

/// Where element `4c + i` of sub-block `s` of row `r` sits in a packed Q6_K super-block column:
/// the `A` or `B` byte and the shift of its nibble, the `H` byte and the shift of its top bits.
fn q6_kx8_place(s: usize, c: usize, r: usize, i: usize) -> (usize, u32, usize, u32) {
    let base = 144 + 96 * s + 4 * r + i;
    (
        base + 32 * (c / 2),
        4 * (c % 2) as u32,
        base + 64,
        2 * c as u32,
    )
}

fn pack_group_q6_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 210 {
        let out = &mut g_dst[b * 1680..(b + 1) * 1680];
        out[144..].fill(0);
        for r in 0..PACK_ROWS {
            let blk = &g_src[r * rb + b * 210..r * rb + (b + 1) * 210];
            out[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
            for s in 0..16 {
                out[16 + 16 * (s / 2) + 2 * r + s % 2] = blk[192 + s];
                for c in 0..4 {
                    for i in 0..4 {
                        let q = q6_k_quant(blk, 16 * s + 4 * c + i);
                        let (lo_at, lo_shift, hi_at, hi_shift) = q6_kx8_place(s, c, r, i);
                        out[lo_at] |= (q & 15) << lo_shift;
                        out[hi_at] |= (q >> 4) << hi_shift;
                    }
                }
            }
        }
    }
}

fn unpack_group_q6_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 210 {
        let inp = &g_src[b * 1680..(b + 1) * 1680];
        for r in 0..PACK_ROWS {
            let blk = &mut g_dst[r * rb + b * 210..r * rb + (b + 1) * 210];
            blk[..192].fill(0);
            blk[208..210].copy_from_slice(&inp[2 * r..2 * r + 2]);
            for s in 0..16 {
                blk[192 + s] = inp[16 + 16 * (s / 2) + 2 * r + s % 2];
                for c in 0..4 {
                    for i in 0..4 {
                        let (lo_at, lo_shift, hi_at, hi_shift) = q6_kx8_place(s, c, r, i);
                        let q = (inp[lo_at] >> lo_shift) & 15 | ((inp[hi_at] >> hi_shift) & 3) << 4;
                        let (ql_at, high_nibble, qh_at, shift) = q6_k_place(16 * s + 4 * c + i);
                        blk[ql_at] |= if high_nibble { q << 4 } else { q & 15 };
                        blk[qh_at] |= (q >> 4) << shift;
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread activation summaries (grown once, reused: no allocation per call).
    static SUMMARY: RefCell<(Vec<f32>, Vec<i32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Sizes this thread's activation summaries for products of up to `n_blocks` activation blocks
/// (tokens × columns / 32), so later calls of that size allocate nothing. Run it on every worker
/// (`rayon::broadcast`) before a loop that must not allocate.
pub fn reserve_thread_scratch(n_blocks: usize) {
    SUMMARY.with(|s| {
        let mut s = s.borrow_mut();
        let (d, sums) = &mut *s;
        d.reserve(n_blocks.saturating_sub(d.len()));
        sums.reserve(n_blocks.saturating_sub(sums.len()));
    });
}

/// Packed weights times `n_tokens` activation rows (quantized to `ty.vec_dot_type()`):
/// `out[t * n_rows + r]`, like [`crate::matmul`] on the unpacked rows. Single-threaded; split
/// rows over threads at group boundaries (multiples of [`PACK_ROWS`] rows).
pub fn matmul_packed(
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    matmul_packed_at(crate::active_level(), ty, n_cols, w, acts, n_tokens, out)
}

/// [`matmul_packed`] at an explicit level (which this CPU must support). Levels without a
/// packed kernel of their own use the scalar twin.
pub fn matmul_packed_at(
    level: KernelLevel,
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported"
    );
    let (_, n_rows) = check_pack_shape(ty, n_cols, w.len());
    let vdt = ty.vec_dot_type();
    let ab = crate::row_bytes_of(vdt, n_cols);
    assert_eq!(
        Some(acts.len()),
        ab.checked_mul(n_tokens),
        "matmul_packed: {vdt} activations length"
    );
    assert_eq!(
        Some(out.len()),
        n_rows.checked_mul(n_tokens),
        "matmul_packed: output length"
    );
    if out.is_empty() {
        return;
    }
    let f = packed_kernel(level, ty).unwrap_or(scalar_kernel(ty));
    call_kernel(f, ty, n_cols, w, acts, n_tokens, out);
}

/// Runs packed kernel `f` (for `ty`, on a CPU that has its features) on checked arguments,
/// building the Q4_0 activation summaries it needs.
fn call_kernel(
    f: PackedMatmulFn,
    ty: GgmlType,
    n_cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    let mut run = |act_d: &[f32], act_s: &[i32]| {
        let args = PackedArgs {
            n_cols,
            w,
            acts,
            act_d,
            act_s,
            n_tokens,
        };
        // SAFETY: the kernel is for a level this CPU supports; `w` is whole packed groups of
        // `n_cols` columns, `acts` (and for Q4_0 the summaries) hold `n_tokens` rows, and `out`
        // has `n_rows * n_tokens` entries (all checked by the callers).
        unsafe { f(&args, out) }
    };
    SUMMARY.with(|s| {
        let mut s = s.borrow_mut();
        let (act_d, act_s) = &mut *s;
        match ty {
            GgmlType::Q4_0 | GgmlType::Q8_0 => summarize_q8_0(acts, act_d, act_s),
            // The Q6_K kernels read the Q8_K blocks' own 16-element sums.
            GgmlType::Q6_K => act_s.clear(),
            _ => summarize_q8_k(acts, act_s),
        }
        run(act_d, act_s)
    });
}

/// The Q4_K kernels' activation summaries of Q8_K blocks: for each block, 4 words, word `i`
/// holding the quant sums of sub-blocks `2i` (low 16 bits) and `2i + 1` (high 16 bits), each
/// the sum of two of the block's 16-element `bsums` (|sum| ≤ 32 × 128, so it fits in 16 bits).
/// A kernel multiplies a word by a pair of 6-bit mins with one `vpmaddwd`.
fn summarize_q8_k(acts: &[u8], act_s: &mut Vec<i32>) {
    act_s.clear();
    for blk in acts.chunks_exact(292) {
        let bsum = |i: usize| i16::from_le_bytes([blk[260 + 2 * i], blk[261 + 2 * i]]) as i32;
        for i in 0..4 {
            let lo = bsum(4 * i) + bsum(4 * i + 1);
            let hi = bsum(4 * i + 2) + bsum(4 * i + 3);
            act_s.push((lo as u16 as u32 | (hi as u16 as u32) << 16) as i32);
        }
    }
}

/// The Q4_0 kernels' activation summaries of Q8_0 blocks: each block's scale as f32 and 8 × the
/// sum of its quants (exact integer and exact f16 → f32 arithmetic, so every form agrees).
fn summarize_q8_0(acts: &[u8], act_d: &mut Vec<f32>, act_s: &mut Vec<i32>) {
    act_d.clear();
    act_s.clear();
    #[cfg(target_arch = "x86_64")]
    if KernelLevel::Avx2.is_supported() {
        // SAFETY: the CPU has AVX2 and F16C (both part of the AVX2 level).
        return unsafe { crate::x86::packed_avx2::summarize_q8_0(acts, act_d, act_s) };
    }
    summarize_q8_0_scalar(acts, act_d, act_s);
}

/// Scalar twin of [`summarize_q8_0`].
fn summarize_q8_0_scalar(acts: &[u8], act_d: &mut Vec<f32>, act_s: &mut Vec<i32>) {
    for blk in acts.chunks_exact(34) {
        act_d.push(F16Bits([blk[0], blk[1]]).to_f32());
        let sum: i32 = blk[2..].iter().map(|&v| v as i8 as i32).sum();
        act_s.push(8 * sum);
    }
}

/// The AVX-512 packed kernel of `level` (`Avx512` or `Avx512Vnni`) for `ty`, before the
/// start-up check: 512-bit Q4_0 kernels (`packed_avx512`, two groups per vector), and for Q4_K
/// the 256-bit `vpdpbusd` kernel with VNNI or the AVX2 one without.
#[cfg(target_arch = "x86_64")]
fn avx512_kernel(level: KernelLevel, ty: GgmlType) -> Option<PackedMatmulFn> {
    use crate::x86::{packed_avx2, packed_avx512};
    Some(match (level, ty) {
        (KernelLevel::Avx512Vnni, GgmlType::Q4_0) => packed_avx512::vnni::matmul_q4_0x8,
        (KernelLevel::Avx512Vnni, GgmlType::Q4_K) => packed_avx2::vnni::matmul_q4_kx8,
        (KernelLevel::Avx512, GgmlType::Q4_0) => packed_avx512::bw::matmul_q4_0x8,
        (KernelLevel::Avx512, GgmlType::Q4_K) => packed_avx2::avx2::matmul_q4_kx8,
        (_, GgmlType::Q6_K) => crate::x86::packed_q6k_avx2::matmul_q6_kx8,
        (_, GgmlType::Q8_0) => crate::x86::packed_q8_avx2::matmul_q8_0x8,
        (_, GgmlType::Q5_K) => crate::x86::packed_q5k_avx2::matmul_q5_kx8,
        _ => return None,
    })
}

/// Whether `level`'s AVX-512 packed kernels give the scalar twins' exact bits on this CPU,
/// checked once per level on small known problems of each type (odd and even group counts,
/// tiles of 1 to 4 tokens). They were written on a machine without AVX-512: the property tests
/// check them under emulation (`tools/avx512-emu`) and wherever the CPU has AVX-512, and this
/// check keeps a CPU from ever running them unverified — on a mismatch the AVX2 kernels serve
/// instead, with a warning.
#[cfg(target_arch = "x86_64")]
fn avx512_kernels_verified(level: KernelLevel) -> bool {
    use std::sync::OnceLock;
    static VERIFIED: [OnceLock<bool>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = match level {
        KernelLevel::Avx512 => &VERIFIED[0],
        KernelLevel::Avx512Vnni => &VERIFIED[1],
        _ => return false,
    };
    *slot.get_or_init(|| {
        if !level.is_supported() {
            return false;
        }
        let cols = 512;
        let tokens = 5;
        let value = |i: usize| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * (1.0 + (i % 13) as f32);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let Some(f) = avx512_kernel(level, ty) else {
                continue;
            };
            for rows in [16, 24] {
                let rb = crate::row_bytes_of(ty, cols);
                let mut w = vec![0u8; rb * rows];
                for (r, dst) in w.chunks_exact_mut(rb).enumerate() {
                    let x: Vec<f32> = (0..cols).map(|c| value(r * cols + c)).collect();
                    crate::quantize_row_ref(ty, &x, dst);
                }
                let mut packed = vec![0u8; w.len()];
                pack_rows(ty, cols, &w, &mut packed);
                let vdt = ty.vec_dot_type();
                let ab = crate::row_bytes_of(vdt, cols);
                let mut acts = vec![0u8; ab * tokens];
                for (t, dst) in acts.chunks_exact_mut(ab).enumerate() {
                    let x: Vec<f32> = (0..cols).map(|c| value(31 + t * cols + 3 * c)).collect();
                    crate::quantize_activation_at(KernelLevel::Scalar, vdt, &x, dst);
                }
                for n in 1..=tokens {
                    let a = &acts[..ab * n];
                    let mut want = vec![0f32; rows * n];
                    let mut got = vec![0f32; rows * n];
                    call_kernel(scalar_kernel(ty), ty, cols, &packed, a, n, &mut want);
                    call_kernel(f, ty, cols, &packed, a, n, &mut got);
                    if want.iter().zip(&got).any(|(a, b)| a.to_bits() != b.to_bits()) {
                        log::warn!(
                            "the {level} packed {ty} kernel differs from its scalar twin on this CPU; using the AVX2 kernels"
                        );
                        return false;
                    }
                }
            }
        }
        log::debug!("{level} packed kernels verified against their scalar twins");
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU with AVX-512 the AVX-512 packed kernels must pass their start-up check, so that
    /// the packed property tests at those levels run them rather than the AVX2 fallback.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernels_serve_where_the_cpu_has_avx512() {
        for level in [KernelLevel::Avx512, KernelLevel::Avx512Vnni] {
            let has = level.is_supported();
            assert_eq!(avx512_kernels_verified(level), has, "{level}");
            for ty in [
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
            ] {
                if has {
                    let used = packed_kernel(level, ty).map(|f| f as usize);
                    assert_eq!(
                        used,
                        avx512_kernel(level, ty).map(|f| f as usize),
                        "{level} {ty}"
                    );
                }
            }
            println!("{level} on this CPU: {has}");
        }
    }

    #[test]
    fn activation_summaries_match_the_scalar_twin() {
        // Blocks of every byte value, in both scale and quants (NaN scales compared by bits).
        let mut acts = vec![0u8; 34 * 300];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for (i, b) in acts.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = if i < 34 * 4 {
                (i * 37 % 256) as u8
            } else {
                x as u8
            };
        }
        acts[2..34].fill(0x80);
        acts[36..68].fill(0x7F);
        let (mut d, mut s) = (Vec::new(), Vec::new());
        summarize_q8_0(&acts, &mut d, &mut s);
        let (mut d_ref, mut s_ref) = (Vec::new(), Vec::new());
        summarize_q8_0_scalar(&acts, &mut d_ref, &mut s_ref);
        assert_eq!(s, s_ref);
        assert_eq!(s[0], 8 * 32 * -128);
        assert_eq!(s[1], 8 * 32 * 127);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&d), bits(&d_ref));
    }
}
