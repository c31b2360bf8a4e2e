//! Scalar twin of the packed (interleaved) kernels: the specification the SIMD versions match
//! bit for bit. See `crate::packed` for the layout and the arithmetic.

use crate::blocks::F16Bits;
use crate::packed::{PackedArgs, PACK_ROWS};

/// Packed Q4_0 (`Q4_0x8`) times Q8_0 activations.
///
/// # Safety
/// Safe to call with arguments checked by `crate::packed::matmul_packed_at`; `unsafe` only to
/// share the kernel table's function type.
pub(crate) unsafe fn matmul_q4_0x8(args: &PackedArgs<'_>, out: &mut [f32]) {
    let nb = args.n_cols / 32;
    let group_bytes = nb * 144;
    let n_groups = args.w.len() / group_bytes;
    let n_rows = n_groups * PACK_ROWS;
    let ab = nb * 34;
    for (g, wg) in args.w.chunks_exact(group_bytes).enumerate() {
        for t in 0..args.n_tokens {
            let act = &args.acts[t * ab..(t + 1) * ab];
            let mut acc = [0f32; PACK_ROWS];
            for b in 0..nb {
                let blk = &wg[b * 144..(b + 1) * 144];
                let y = &act[b * 34 + 2..(b + 1) * 34];
                let d_a = args.act_d[t * nb + b];
                let zero_point = args.act_s[t * nb + b];
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let mut dot = 0i32;
                    for c in 0..4 {
                        for k in 0..4 {
                            let q = blk[16 + 32 * c + 4 * r + k];
                            dot += (q & 0x0F) as i32 * y[4 * c + k] as i8 as i32;
                            dot += (q >> 4) as i32 * y[16 + 4 * c + k] as i8 as i32;
                        }
                    }
                    let d_w = F16Bits([blk[2 * r], blk[2 * r + 1]]).to_f32();
                    *acc_r = (d_w * d_a).mul_add((dot - zero_point) as f32, *acc_r);
                }
            }
            out[t * n_rows + g * PACK_ROWS..t * n_rows + (g + 1) * PACK_ROWS].copy_from_slice(&acc);
        }
    }
}
