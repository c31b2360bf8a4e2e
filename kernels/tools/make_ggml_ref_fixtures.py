#!/usr/bin/env python3
"""Writes kernels/tests/fixtures/ggml_ref.* : f32 input and the blocks ggml's C reference quantizers
make from it (Q8_0, Q8_1, Q8_K activations; Q2_K..Q6_K weights), for kernels/tests/formats.rs.

Usage: python make_ggml_ref_fixtures.py <path to built ggml_ref_harness> <fixtures dir>
(see ggml_ref_harness.c for how to build it).
"""
import os
import subprocess
import sys

import numpy as np

harness, out_dir = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(1)
n = 256 * 16
x = (rng.standard_normal(n) * np.repeat(rng.uniform(0.01, 3, n // 32), 32)).astype(np.float32)
x[:256] = 0; x[256:512] *= 1e-20; x[512:544] = np.abs(x[512:544])
x.tofile(os.path.join(out_dir, 'ggml_ref.input.f32'))
for t, name in [(8, 'q8_0'), (9, 'q8_1'), (10, 'q2_k'), (11, 'q3_k'), (12, 'q4_k'), (13, 'q5_k'), (14, 'q6_k'), (15, 'q8_k')]:
    out = subprocess.run([harness, str(t), str(n)], input=x.tobytes(), capture_output=True, check=True).stdout
    open(os.path.join(out_dir, f'ggml_ref.{name}.quant'), 'wb').write(out)
