//! Every kernel at every level this CPU supports against its scalar twin, at odd lengths with
//! random data. Levels the CPU lacks are skipped (the run prints which levels were tested).

mod common;

use common::*;
use moe_edge_kernels::*;

fn simd_levels() -> Vec<KernelLevel> {
    let levels: Vec<KernelLevel> = KernelLevel::under_test()
        .into_iter()
        .filter(|&l| l != KernelLevel::Scalar)
        .collect();
    println!("SIMD levels tested on this CPU: {levels:?}");
    levels
}

/// Awkward activation data: gaussian, plus zero blocks, exact rounding ties, huge and tiny values.
fn awkward(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = rng.normals(n).iter().map(|v| v * 4.0).collect();
    for (i, v) in x.iter_mut().enumerate() {
        match (i / 32) % 6 {
            1 => *v = 0.0,
            2 => *v = (i % 32) as f32 - 15.5, // many x·id land exactly on .5
            3 => *v *= 1e-30,
            4 if i % 32 == 7 => *v = -1e4,
            _ => {}
        }
    }
    x
}

#[test]
fn quantizers_are_byte_identical() {
    let mut rng = Rng::new(21);
    let levels = simd_levels();
    for nb in [1usize, 2, 3, 5, 7, 9] {
        let x = awkward(&mut rng, 256 * nb);
        for ty in ACTIVATION_TYPES {
            for len in [
                x.len(),
                x.len() - ty.block_size().max(32) + if ty.block_size() == 1 { 7 } else { 0 },
            ] {
                if len % ty.block_size() != 0 {
                    continue;
                }
                let want = quantize(ty, &x[..len]);
                for &level in &levels {
                    let mut got = vec![0u8; want.len()];
                    quantize_activation_at(level, ty, &x[..len], &mut got);
                    assert_eq!(got, want, "{ty} at {level}, {len} values");
                }
            }
        }
    }
}

#[test]
fn dequantize_is_identical() {
    let mut rng = Rng::new(22);
    let levels = simd_levels();
    for ty in GgmlType::ALL {
        let n = 256 * 3;
        let q = quantize(ty, &rng.normals(n));
        let want = dequantize(ty, &q, n);
        for &level in &levels {
            let mut got = vec![0f32; n];
            dequantize_row_at(level, ty, &q, &mut got);
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} at {level}"
            );
        }
    }
}

/// The size of the float terms a dot product accumulates: Σ (|w_i| + range of w over i's group of
/// 32)·|a_i|. For types with a per-group min (`x = d·q − m`) the scale part and the min part are
/// summed separately and cancel, so rounding errors scale with the group's range, not with |w_i|.
fn term_scale(w: &[f32], a: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for (wg, ag) in w.chunks(32).zip(a.chunks(32)) {
        let lo = wg.iter().fold(f32::MAX, |m, v| m.min(*v));
        let hi = wg.iter().fold(f32::MIN, |m, v| m.max(*v));
        let range = (hi - lo) as f64;
        s += wg
            .iter()
            .zip(ag)
            .map(|(x, y)| (x.abs() as f64 + range) * y.abs() as f64)
            .sum::<f64>();
    }
    s
}

/// Integer-dot kernels compute the same integer sums; only the float accumulation order differs,
/// so |simd − scalar| ≤ 1e-6·term_scale (a few dozen f32 roundings of the summed terms).
/// Float kernels (F32/F16/BF16) sum in f32 lanes where the scalar twin sums in f64: same bound.
#[test]
fn vec_dot_matches_scalar() {
    let mut rng = Rng::new(23);
    let levels = simd_levels();
    for ty in WEIGHT_TYPES {
        let bs = ty.block_size().max(32);
        for nb in [1usize, 2, 3, 5, 7, 11, 17, 33] {
            // F32/F16/BF16 also at lengths that are not multiples of their 32-wide loops.
            for extra in if ty.block_size() == 1 {
                vec![0usize, 1, 7, 13]
            } else {
                vec![0]
            } {
                let n = nb * bs + extra;
                let w = quantize(ty, &awkward(&mut rng, n));
                let a = quantize(ty.vec_dot_type(), &rng.normals(n));
                let want = vec_dot_at(KernelLevel::Scalar, ty, n, &w, &a) as f64;
                let wf = dequantize(ty, &w, n);
                let af = dequantize(ty.vec_dot_type(), &a, n);
                let scale = term_scale(&wf, &af);
                let tol = 1e-6 * scale + 1e-30;
                for &level in &levels {
                    let got = vec_dot_at(level, ty, n, &w, &a) as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{ty} n={n} at {level}: {got} vs scalar {want} (tol {tol})"
                    );
                }
            }
        }
    }
}

#[test]
fn matvec_and_matmul_match_scalar() {
    let mut rng = Rng::new(24);
    let levels = simd_levels();
    for ty in WEIGHT_TYPES {
        // Float types also at a length with a tail shorter than one 8-wide vector.
        let tail = if ty.block_size() == 1 { 5 } else { 0 };
        let n = 3 * ty.block_size().max(32) + tail;
        for (rows, tokens) in [(1usize, 1usize), (4, 2), (7, 5), (9, 3), (3, 2)] {
            let rb = ty.row_bytes(n).unwrap();
            let ab = ty.vec_dot_type().row_bytes(n).unwrap();
            let (w, acts) = random_product(ty, &mut rng, n, rows, tokens);
            let mut want = vec![0f32; rows * tokens];
            matmul_at(KernelLevel::Scalar, ty, n, &w, &acts, tokens, &mut want);
            assert_eq!(w.len(), rows * rb);
            for &level in &levels {
                let mut got = vec![0f32; rows * tokens];
                matmul_at(level, ty, n, &w, &acts, tokens, &mut got);
                for t in 0..tokens {
                    let mut mv = vec![0f32; rows];
                    matvec_at(level, ty, n, &w, &acts[t * ab..(t + 1) * ab], &mut mv);
                    for r in 0..rows {
                        let e = want[t * rows + r];
                        // Unit-gaussian data: Σ|w·a| ≈ 0.64·n, so this is ~1.5e-6·Σ|w·a|.
                        let tol = 1e-6 * n as f32 + 1e-6;
                        assert!(
                            (got[t * rows + r] - e).abs() <= tol,
                            "{ty} {level} matmul r{r} t{t}"
                        );
                        assert!((mv[r] - e).abs() <= tol, "{ty} {level} matvec r{r} t{t}");
                    }
                }
            }
        }
    }
}

/// Float products long enough that their tokens come in several cache blocks (the AVX2 kernel
/// blocks activations by bytes): every (row, token) still matches the scalar twin.
#[test]
fn long_float_matmuls_match_scalar() {
    let mut rng = Rng::new(25);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        // Rows of 16387 values: 64 KiB (F32) or 32 KiB (F16, BF16), so blocks of 4 tokens.
        let (n, rows, tokens) = (16_387, 3, 9);
        let (w, acts) = random_product(ty, &mut rng, n, rows, tokens);
        let mut want = vec![0f32; rows * tokens];
        matmul_at(KernelLevel::Scalar, ty, n, &w, &acts, tokens, &mut want);
        for level in simd_levels() {
            let mut got = vec![f32::NAN; rows * tokens];
            matmul_at(level, ty, n, &w, &acts, tokens, &mut got);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                let tol = 1e-6 * n as f32;
                assert!((g - e).abs() <= tol, "{ty} {level} output {i}: {g} vs {e}");
            }
        }
    }
}

/// The SSSE3 axpy multiplies, then adds, as the scalar twin does: the same bits, at lengths
/// with and without a tail of fewer than four values.
#[test]
fn ssse3_axpy_equals_the_scalar_twin() {
    if !KernelLevel::Ssse3.is_supported() {
        println!("skipped: no SSSE3");
        return;
    }
    let mut rng = Rng::new(59);
    for n in [0usize, 1, 3, 4, 7, 64, 131] {
        let x = rng.normals(n);
        let y = rng.normals(n);
        let mut want = y.clone();
        let mut got = y.clone();
        axpy_at(KernelLevel::Scalar, -1.7, &x, &mut want);
        axpy_at(KernelLevel::Ssse3, -1.7, &x, &mut got);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&got), bits(&want), "n={n}");
    }
}

/// The bandwidth probe reads every byte: at every level, changing any one byte changes the
/// checksum, at lengths around its 512-byte steps. The x86 SIMD levels share one layout, so
/// they return the same checksum.
#[test]
fn stream_read_sees_every_byte() {
    let mut rng = Rng::new(61);
    for len in [0usize, 1, 100, 511, 512, 513, 1100, 2048 + 77] {
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let mut simd_sum = None;
        for level in KernelLevel::under_test() {
            let sum = stream_read_at(level, &buf);
            for i in 0..len {
                buf[i] ^= 0x5a;
                assert_ne!(
                    stream_read_at(level, &buf),
                    sum,
                    "{level} len={len} byte {i}"
                );
                buf[i] ^= 0x5a;
            }
            if cfg!(target_arch = "x86_64") && level != KernelLevel::Scalar {
                let first = *simd_sum.get_or_insert((level, sum));
                assert_eq!(sum, first.1, "len={len}: {level} vs {}", first.0);
            }
        }
    }
}

/// `MOE_EDGE_KERNELS=scalar` forces the scalar level: re-runs this test binary in a child process
/// with the variable set and checks `active_level()` there.
#[test]
fn env_forces_lower_level() {
    if let Ok(expect) = std::env::var("MOE_EDGE_KERNELS_EXPECT") {
        // "best": the best level of the CPU the child runs on (under qemu-user the parent may be
        // emulating an older CPU than the child sees).
        let expect = match expect.as_str() {
            "best" => KernelLevel::best_supported().to_string(),
            _ => expect,
        };
        assert_eq!(active_level().to_string(), expect);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Under qemu-user without binfmt the test binary cannot start itself; say so and skip.
    let probe = std::process::Command::new(&exe).args(["--list"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        println!("skipped: this test binary cannot re-run itself here (emulated target?)");
        return;
    }
    for (req, expect) in [("scalar", "scalar"), ("no-such-level", "best")] {
        let status = std::process::Command::new(&exe)
            .args(["env_forces_lower_level", "--exact", "--quiet"])
            .env("MOE_EDGE_KERNELS", req)
            .env("MOE_EDGE_KERNELS_EXPECT", expect)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "child with MOE_EDGE_KERNELS={req} expected {expect}"
        );
    }
}
