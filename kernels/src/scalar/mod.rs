//! Portable scalar kernels: the specification every SIMD kernel is tested against, and the
//! fallback on CPUs without a supported SIMD level.

pub mod dequant;
pub mod dot;
pub mod k_quantize;
pub(crate) mod packed;
pub mod quantize;

use crate::dispatch::{KernelTable, TypeKernels};
use crate::types::GgmlType;
use bytemuck::{cast_slice, cast_slice_mut};

/// One table row from a weight block type `$w`, its activation block type `$a`, and the
/// dequantize, dot and activation-quantize functions that take typed slices.
macro_rules! row {
    ($w:ty, $a:ty, $deq:path, $dot:path, $quant:path) => {
        TypeKernels {
            dequantize: |src, dst| $deq(cast_slice::<u8, $w>(src), dst),
            vec_dot: |_n, w, a| $dot(cast_slice::<u8, $w>(w), cast_slice::<u8, $a>(a)),
            quantize: |src, dst| $quant(src, cast_slice_mut::<u8, $w>(dst)),
            matvec: None,
            matmul: None,
        }
    };
}

use crate::blocks::*;

/// The scalar table: every type, every operation.
pub(crate) fn table() -> KernelTable {
    let row_for = |ty: GgmlType| -> TypeKernels {
        match ty {
            GgmlType::F32 => row!([u8; 4], [u8; 4], dequant::f32, dot::f32, quantize::f32),
            GgmlType::F16 => row!(F16Bits, F16Bits, dequant::f16, dot::f16, quantize::f16),
            GgmlType::BF16 => row!([u8; 2], [u8; 2], dequant::bf16, dot::bf16, quantize::bf16),
            GgmlType::Q4_0 => row!(
                BlockQ4_0,
                BlockQ8_0,
                dequant::q4_0,
                dot::q4_0,
                quantize::q4_0
            ),
            GgmlType::Q4_1 => row!(
                BlockQ4_1,
                BlockQ8_1,
                dequant::q4_1,
                dot::q4_1,
                quantize::q4_1
            ),
            GgmlType::Q5_0 => row!(
                BlockQ5_0,
                BlockQ8_0,
                dequant::q5_0,
                dot::q5_0,
                quantize::q5_0
            ),
            GgmlType::Q5_1 => row!(
                BlockQ5_1,
                BlockQ8_1,
                dequant::q5_1,
                dot::q5_1,
                quantize::q5_1
            ),
            GgmlType::Q8_0 => row!(
                BlockQ8_0,
                BlockQ8_0,
                dequant::q8_0,
                dot::q8_0,
                quantize::q8_0
            ),
            GgmlType::Q8_1 => row!(
                BlockQ8_1,
                BlockQ8_1,
                dequant::q8_1,
                dot::q8_1,
                quantize::q8_1
            ),
            GgmlType::Q2_K => row!(
                BlockQ2K,
                BlockQ8K,
                dequant::q2_k,
                dot::q2_k,
                k_quantize::q2_k
            ),
            GgmlType::Q3_K => row!(
                BlockQ3K,
                BlockQ8K,
                dequant::q3_k,
                dot::q3_k,
                k_quantize::q3_k
            ),
            GgmlType::Q4_K => row!(
                BlockQ4K,
                BlockQ8K,
                dequant::q4_k,
                dot::q4_k,
                k_quantize::q4_k
            ),
            GgmlType::Q5_K => row!(
                BlockQ5K,
                BlockQ8K,
                dequant::q5_k,
                dot::q5_k,
                k_quantize::q5_k
            ),
            GgmlType::Q6_K => row!(
                BlockQ6K,
                BlockQ8K,
                dequant::q6_k,
                dot::q6_k,
                k_quantize::q6_k
            ),
            GgmlType::Q8_K => row!(BlockQ8K, BlockQ8K, dequant::q8_k, dot::q8_k, quantize::q8_k),
        }
    };
    KernelTable {
        types: GgmlType::ALL.map(row_for),
    }
}
