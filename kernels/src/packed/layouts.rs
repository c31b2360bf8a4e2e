//! The packed layouts, byte by byte, and the arithmetic every level's kernels perform on them
//! (every level gives bit-identical results); packing and unpacking.
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

use super::{can_pack, PACK_ROWS};
use crate::types::GgmlType;

pub(super) fn check_pack_shape(ty: GgmlType, n_cols: usize, len: usize) -> (usize, usize) {
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

/// The little-endian u32 at `at`.
fn word(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Writes `w` little-endian at `at`.
fn put_word(buf: &mut [u8], at: usize, w: u32) {
    buf[at..at + 4].copy_from_slice(&w.to_le_bytes());
}

/// Low nibbles of each byte.
const NIBBLES: u32 = 0x0F0F_0F0F;

/// Packs one group of Q5_K rows four bytes (one row's four elements of a quad) at a time: the
/// layout of [`q5_kx8_place`], whose byte-by-byte inverse is [`unpack_group_q5_k`].
fn pack_group_q5_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 176 {
        let out = &mut g_dst[b * 1408..(b + 1) * 1408];
        out[96..128].fill(0);
        for r in 0..PACK_ROWS {
            let blk = &g_src[r * rb + b * 176..r * rb + (b + 1) * 176];
            pack_k_header(blk, r, out);
            // Quad c's 4 elements of sub-block s: low bits in the nibbles (low for even s) of
            // qs bytes 4c.. of the sub-block pair's run, top bits at bit s of qh bytes 4c...
            let nibbles = |s: usize, c: usize| {
                let w = word(blk, 48 + 32 * (s / 2) + 4 * c);
                (if s.is_multiple_of(2) { w } else { w >> 4 }) & NIBBLES
            };
            for s in 0..8 {
                let at = 128 + 160 * s + 4 * r;
                for p in 0..4 {
                    let a = nibbles(s, 2 * p) | nibbles(s, 2 * p + 1) << 4;
                    put_word(out, at + 32 * p, a);
                }
                let h = (0..8).fold(0, |h, c| {
                    h | ((word(blk, 16 + 4 * c) >> s) & 0x0101_0101) << c
                });
                put_word(out, at + 128, h);
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
        let col = b * 272;
        for r in 0..PACK_ROWS {
            let row = r * rb + b * 34;
            let mut copy = |at_row: usize, at_packed: usize, len: usize| {
                let (from, to) = if pack {
                    (at_row, at_packed)
                } else {
                    (at_packed, at_row)
                };
                g_dst[to..to + len].copy_from_slice(&g_src[from..from + len]);
            };
            copy(row, col + 2 * r, 2);
            for c in 0..8 {
                copy(row + 2 + 4 * c, col + 16 + 32 * c + 4 * r, 4);
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

/// Packs one group of Q6_K rows four bytes (one row's four elements of a quad) at a time: the
/// layout of [`q6_kx8_place`], whose byte-by-byte inverse is [`unpack_group_q6_k`].
fn pack_group_q6_k(rb: usize, g_src: &[u8], g_dst: &mut [u8]) {
    for b in 0..rb / 210 {
        let out = &mut g_dst[b * 1680..(b + 1) * 1680];
        for r in 0..PACK_ROWS {
            let blk = &g_src[r * rb + b * 210..r * rb + (b + 1) * 210];
            out[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
            for s in 0..16 {
                out[16 + 16 * (s / 2) + 2 * r + s % 2] = blk[192 + s];
                // Quad c (elements 16s + 4c..) keeps its 4 elements' low bits in 4 adjacent
                // `ql` bytes (one nibble half) and their top bits at one shift of 4 adjacent
                // `qh` bytes (`q6_k_place`: half s / 8, k = (s % 8) / 2, l = 16 (s % 2) + 4c).
                let (half, k) = (s / 8, (s % 8) / 2);
                let mut q = [(0u32, 0u32); 4];
                for (c, q) in q.iter_mut().enumerate() {
                    let l = 16 * (s % 2) + 4 * c;
                    let lo = word(blk, 64 * half + l + 32 * (k % 2));
                    let lo = (if k >= 2 { lo >> 4 } else { lo }) & NIBBLES;
                    *q = (
                        lo,
                        (word(blk, 128 + 32 * half + l) >> (2 * k)) & 0x0303_0303,
                    );
                }
                let at = 144 + 96 * s + 4 * r;
                put_word(out, at, q[0].0 | q[1].0 << 4);
                put_word(out, at + 32, q[2].0 | q[3].0 << 4);
                let h = q[0].1 | q[1].1 << 2 | q[2].1 << 4 | q[3].1 << 6;
                put_word(out, at + 64, h);
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
