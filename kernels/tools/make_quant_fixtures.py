#!/usr/bin/env python3
"""Writes the quantization fixtures under kernels/tests/fixtures/ with the `gguf` package's numpy
quantizers (an implementation independent of ours), for kernels/tests/formats.rs.

For each type NAME:
  NAME.input.f32    f32 little-endian source values (types gguf can quantize: Q4_0..Q8_0, BF16)
  NAME.quant        the quantized row as gguf writes it
  NAME.dequant.f32  gguf's dequantization of NAME.quant
K-quants (gguf only dequantizes them) get random blocks with sane f16 scales instead of an input.

Run:  . /work/venv/bin/activate && python kernels/tools/make_quant_fixtures.py
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
rng = np.random.default_rng(20240607)


def source(n):
    """n values: gaussian blocks, one all-zero block, one block whose largest |x| is negative,
    one tiny-valued block, and exact ties for the rounding rules."""
    x = rng.standard_normal(n).astype(np.float32)
    x[32:64] = 0.0
    x[64:96] *= 0.01
    x[96:128] = np.abs(x[96:128])
    x[100] = -5.0
    x[128:160] = np.linspace(-1.0, 1.0, 32, dtype=np.float32)
    return x


def write(name, **arrays):
    for suffix, arr in arrays.items():
        path = os.path.join(OUT, f"{name}.{suffix}")
        with open(path, "wb") as f:
            f.write(np.ascontiguousarray(arr).tobytes())


def main():
    os.makedirs(OUT, exist_ok=True)
    n = 256
    for name, t in [("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q5_0", T.Q5_0), ("q5_1", T.Q5_1),
                    ("q8_0", T.Q8_0), ("bf16", T.BF16)]:
        x = source(n)
        q = quants.quantize(x.reshape(1, n), t).reshape(-1)
        d = quants.dequantize(q.reshape(1, -1), t).reshape(-1).astype(np.float32)
        write(name, **{"input.f32": x, "quant": q, "dequant.f32": d})

    n_blocks = 4
    for name, t in [("q2_k", T.Q2_K), ("q3_k", T.Q3_K), ("q4_k", T.Q4_K), ("q5_k", T.Q5_K),
                    ("q6_k", T.Q6_K)]:
        _, type_size = quants.GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        # f16 super-block scales at their ggml offsets: small positive normals.
        scale_offsets = {"q2_k": [80, 82], "q3_k": [108], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}[name]
        for off in scale_offsets:
            vals = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16)
            raw[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
        d = quants.dequantize(raw.reshape(1, -1), t).reshape(-1).astype(np.float32)
        write(name, **{"quant": raw.reshape(-1), "dequant.f32": d})
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote fixtures to {OUT}: {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
