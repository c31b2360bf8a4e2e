//! The kernel table: for each tensor type, the functions one level provides. Built once per
//! level; a level starts from the table of the level below it and replaces the entries it has
//! faster kernels for.

use crate::level::KernelLevel;
use crate::types::GgmlType;
use std::sync::OnceLock;

/// `dst.len()` elements from `src` (exactly their row bytes).
pub(crate) type DequantFn = unsafe fn(src: &[u8], dst: &mut [f32]);
/// Quantizes `src` into `dst` (exactly the row bytes of `src.len()` elements).
pub(crate) type QuantizeFn = unsafe fn(src: &[f32], dst: &mut [u8]);
/// Dot product of one `n`-element weight row with one activation row (each exactly one row).
pub(crate) type DotFn = unsafe fn(n: usize, w: &[u8], a: &[u8]) -> f32;
/// `out[r] = dot(row r, a)` for `out.len()` rows of `n` elements back to back in `w`.
pub(crate) type MatvecFn = unsafe fn(n: usize, w: &[u8], a: &[u8], out: &mut [f32]);
/// `out[t * n_rows + r] = dot(row r, activation row t)`, `n_rows = out.len() / n_tokens`.
pub(crate) type MatmulFn =
    unsafe fn(n: usize, w: &[u8], acts: &[u8], n_tokens: usize, out: &mut [f32]);

/// Kernels for one weight type. The `unsafe` in the pointer types only means "needs the CPU
/// features of the table's level": a table is built only for a level the CPU supports, so
/// calling through it is sound once slice lengths are checked as documented above.
#[derive(Clone, Copy)]
pub(crate) struct TypeKernels {
    pub dequantize: DequantFn,
    pub vec_dot: DotFn,
    /// Quantize f32 to this type (activation quantizer for activation types, reference weight
    /// quantizer for the others).
    pub quantize: QuantizeFn,
    /// Several rows per call; `None` means one `vec_dot` per row.
    pub matvec: Option<MatvecFn>,
    /// Rows × tokens tiles; `None` means each row against every token with `vec_dot`.
    pub matmul: Option<MatmulFn>,
}

pub(crate) struct KernelTable {
    /// Indexed by `GgmlType as usize` (the order of `GgmlType::ALL`).
    pub types: [TypeKernels; 15],
}

impl KernelTable {
    #[inline(always)]
    pub fn get(&self, ty: GgmlType) -> &TypeKernels {
        &self.types[ty as usize]
    }

    /// Used by the SIMD modules' `fill` (none on targets without one, such as armv7).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub fn get_mut(&mut self, ty: GgmlType) -> &mut TypeKernels {
        &mut self.types[ty as usize]
    }
}

const _: () = {
    let mut i = 0;
    while i < GgmlType::ALL.len() {
        assert!(GgmlType::ALL[i] as usize == i);
        i += 1;
    }
};

// `table` indexes its per-level tables by `level as usize`.
const _: () = {
    let mut i = 0;
    while i < KernelLevel::ALL.len() {
        assert!(KernelLevel::ALL[i] as usize == i);
        i += 1;
    }
};

fn build(level: KernelLevel) -> KernelTable {
    #[allow(unused_mut)]
    let mut t = crate::scalar::table();
    match level {
        // SSSE3 has packed kernels only (`crate::packed`); its table is the scalar one.
        KernelLevel::Scalar | KernelLevel::Ssse3 => {}
        #[cfg(target_arch = "x86_64")]
        KernelLevel::Avx2
        | KernelLevel::AvxVnni
        | KernelLevel::Avx512
        | KernelLevel::Avx512Vnni => {
            crate::x86::fill(level, &mut t);
        }
        #[cfg(target_arch = "aarch64")]
        KernelLevel::Neon | KernelLevel::NeonDotprod => {
            crate::arm::fill(level, &mut t);
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("kernel level {level} is not supported on this architecture"),
    }
    t
}

/// The table for `level`.
///
/// # Panics
/// If this CPU does not support `level` (use `KernelLevel::is_supported` first).
pub(crate) fn table(level: KernelLevel) -> &'static KernelTable {
    static TABLES: [OnceLock<KernelTable>; KernelLevel::ALL.len()] =
        [const { OnceLock::new() }; KernelLevel::ALL.len()];
    assert!(
        level.is_supported(),
        "kernel level {level} is not supported by this CPU"
    );
    TABLES[level as usize].get_or_init(|| build(level))
}
