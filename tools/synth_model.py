#!/usr/bin/env python3
"""Write real-shaped MoE GGUFs with random weights for speed and memory benchmarks.

Quantized blocks are written directly (random nibbles, f16 scales chosen so that a row's values have
a standard deviation near 1/sqrt(fan_in)); there is no quantize pass, and tensors are streamed to the
file one at a time, so memory use stays at about one expert tensor (~120 MB) whatever the model size.
Random routers route near-uniformly: the worst case for an expert cache (see BENCHMARKING.md).

Usage:
    python tools/synth_model.py --shape olmoe --type q4_0 --out /work/bench-models/olmoe-q4_0.gguf
    python tools/synth_model.py --shape qwen3-30b-a3b --type q4_k --out /work/bench-models/qwen3-30b-q4_k.gguf

Shapes: olmoe (OLMoE-1B-7B: 2048 wide, 16 layers, 64 experts top-8, expert FFN 1024, 16 heads,
vocab 50304) and qwen3-30b-a3b (2048 wide, 48 layers, 128 experts top-8, expert FFN 768, 32 q heads,
4 kv heads, head dim 128, vocab 151936). Types: q4_0 or q4_k for the body; token_embd takes the body
type, output.weight is q6_k (as llama.cpp's quantizer does), norms and routers f32.
The tokenizer metadata comes from a vocab GGUF (gpt-2 for olmoe, padded to 50304; qwen2 for qwen3).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np
import gguf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import read_gguf_kv  # noqa: E402

Q = gguf.GGMLQuantizationType

SHAPES = {
    "olmoe": dict(arch="olmoe", n_embd=2048, n_layer=16, n_expert=64, n_expert_used=8, n_ff_exp=1024,
                  n_head=16, n_head_kv=16, head_dim=128, n_vocab=50304, vocab="ggml-vocab-gpt-2.gguf",
                  rope_base=10000.0, eps=1e-5),
    "qwen3-30b-a3b": dict(arch="qwen3moe", n_embd=2048, n_layer=48, n_expert=128, n_expert_used=8,
                          n_ff_exp=768, n_head=32, n_head_kv=4, head_dim=128, n_vocab=151936,
                          vocab="ggml-vocab-qwen2.gguf", rope_base=1000000.0, eps=1e-6),
}

# values per block, bytes per block
BLOCK = {Q.Q4_0: (32, 18), Q.Q4_K: (256, 144), Q.Q6_K: (256, 210), Q.F32: (1, 4)}


def random_blocks(rng: np.random.Generator, qtype, n_rows: int, n_cols: int) -> np.ndarray:
    """Random quantized rows of `n_cols` values: uint8 array [n_rows, bytes per row]."""
    bs, bb = BLOCK[qtype]
    if n_cols % bs:
        raise ValueError(f"row width {n_cols} is not a multiple of {bs} for {qtype.name}")
    nb = n_rows * (n_cols // bs)
    sigma = 1.0 / math.sqrt(n_cols)
    n_bytes = nb * bb
    raw = rng.bit_generator.random_raw((n_bytes + 7) // 8)  # uint64: much faster than rng.bytes
    blocks = raw.view(np.uint8)[:n_bytes].reshape(nb, bb)
    jitter = rng.uniform(0.75, 1.25, nb)
    if qtype == Q.Q4_0:
        # value = (nibble - 8) * d; a uniform nibble has std ~4.6
        d = (sigma / 4.6 * jitter).astype(np.float16)
        blocks[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
    elif qtype == Q.Q4_K:
        # value = d * sc * q - dmin * m, sc and m 6-bit in 12 scale bytes, q a nibble
        # E|d*sc*q| with sc ~ U(0,63), q ~ U(0,15): set d so that the spread is ~sigma; dmin = 7.5 d
        # centres the values on average
        d = sigma / (31.5 * 4.6) * jitter
        blocks[:, 0:2] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
        blocks[:, 2:4] = (d * 7.5).astype(np.float16).view(np.uint8).reshape(nb, 2)
    elif qtype == Q.Q6_K:
        # value = d * scale * (q - 32), scale int8 in bytes 192..207, q 6-bit (std ~18.5)
        d = sigma / (64.0 * 18.5) * jitter
        blocks[:, 208:210] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
    else:
        raise ValueError(qtype)
    return blocks.reshape(n_rows, -1)


class Model:
    def __init__(self, shape: dict, body, vocab_dir: pathlib.Path, seed: int):
        self.s = shape
        self.body = body
        self.vocab_dir = vocab_dir
        self.seed = seed
        self.plan: list[tuple[str, tuple, object]] = []  # name, numpy shape (values), type
        self._plan()

    def _plan(self):
        s, body = self.s, self.body
        E, X, F = s["n_embd"], s["n_expert"], s["n_ff_exp"]
        qd, kvd = s["n_head"] * s["head_dim"], s["n_head_kv"] * s["head_dim"]
        add = self.plan.append
        add(("token_embd.weight", (s["n_vocab"], E), body))
        add(("output_norm.weight", (E,), Q.F32))
        add(("output.weight", (s["n_vocab"], E), Q.Q6_K))
        for i in range(s["n_layer"]):
            p = f"blk.{i}."
            add((p + "attn_norm.weight", (E,), Q.F32))
            add((p + "attn_q.weight", (qd, E), body))
            add((p + "attn_k.weight", (kvd, E), body))
            add((p + "attn_v.weight", (kvd, E), body))
            add((p + "attn_output.weight", (E, qd), body))
            if s["arch"] == "olmoe":
                add((p + "attn_q_norm.weight", (qd,), Q.F32))
                add((p + "attn_k_norm.weight", (kvd,), Q.F32))
            else:
                add((p + "attn_q_norm.weight", (s["head_dim"],), Q.F32))
                add((p + "attn_k_norm.weight", (s["head_dim"],), Q.F32))
            add((p + "ffn_norm.weight", (E,), Q.F32))
            add((p + "ffn_gate_inp.weight", (X, E), Q.F32))
            add((p + "ffn_gate_exps.weight", (X, F, E), body))
            add((p + "ffn_up_exps.weight", (X, F, E), body))
            add((p + "ffn_down_exps.weight", (X, E, F), body))

    def nbytes(self, shape, qtype) -> int:
        bs, bb = BLOCK[qtype]
        return int(np.prod(shape)) // bs * bb

    def data(self, rng, name, shape, qtype) -> np.ndarray:
        if qtype == Q.F32:
            if name.endswith("ffn_gate_inp.weight"):
                return (rng.standard_normal(shape) / math.sqrt(shape[-1])).astype(np.float32)
            return (1.0 + rng.uniform(-0.1, 0.1, shape)).astype(np.float32)
        rows = int(np.prod(shape[:-1]))
        return random_blocks(rng, qtype, rows, shape[-1]).reshape(*shape[:-1], -1)

    def vocab(self, writer: gguf.GGUFWriter):
        n = self.s["n_vocab"]
        kv = read_gguf_kv(self.vocab_dir / self.s["vocab"], "tokenizer.")
        for key, (val, types) in kv.items():
            if key == "tokenizer.chat_template":
                continue
            if types[0] == gguf.GGUFValueType.ARRAY:
                if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
                    pad = n - len(val)
                    if pad < 0:
                        raise ValueError(f"vocab has {len(val)} tokens, shape wants {n}")
                    start = len(val)
                    if key == "tokenizer.ggml.tokens":
                        val = val + [f"[PAD{start + i}]" for i in range(pad)]
                    elif key == "tokenizer.ggml.token_type":
                        val = val + [4] * pad  # user-defined, as in the released padded vocabularies
                    else:
                        val = val + [0.0] * pad
                writer.add_key_value(key, val, types[0], sub_type=types[-1])
            else:
                writer.add_key_value(key, val, types[0])

    def write(self, out: pathlib.Path):
        s = self.s
        w = gguf.GGUFWriter(str(out), s["arch"])
        w.add_name(f"moe-edge synthetic {s['arch']} {self.body.name}")
        w.add_file_type({Q.Q4_0: 2, Q.Q4_K: 15}[self.body])  # Q4_0 / Q4_K_M (mostly Q4_K)
        w.add_context_length(4096)
        w.add_embedding_length(s["n_embd"])
        w.add_block_count(s["n_layer"])
        w.add_head_count(s["n_head"])
        w.add_head_count_kv(s["n_head_kv"])
        w.add_key_length(s["head_dim"])
        w.add_value_length(s["head_dim"])
        w.add_rope_dimension_count(s["head_dim"])
        w.add_rope_freq_base(s["rope_base"])
        w.add_layer_norm_rms_eps(s["eps"])
        w.add_expert_count(s["n_expert"])
        w.add_expert_used_count(s["n_expert_used"])
        if s["arch"] == "olmoe":
            w.add_feed_forward_length(s["n_ff_exp"])
        else:
            w.add_feed_forward_length(6144)
            w.add_expert_feed_forward_length(s["n_ff_exp"])
        w.add_quantization_version(2)
        self.vocab(w)
        total = 0
        for name, shape, qtype in self.plan:
            nb = self.nbytes(shape, qtype)
            total += nb
            if qtype == Q.F32:
                w.add_tensor_info(name, shape, np.dtype(np.float32), nb)
            else:
                byte_shape = (*shape[:-1], shape[-1] // BLOCK[qtype][0] * BLOCK[qtype][1])
                w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nb, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        rng = np.random.default_rng(self.seed)
        t0, done = time.time(), 0
        for name, shape, qtype in self.plan:
            arr = self.data(rng, name, shape, qtype)
            w.write_tensor_data(arr)
            done += arr.nbytes
            if name.endswith("ffn_down_exps.weight"):
                print(f"\r{name}: {done / 2**30:.2f} / {total / 2**30:.2f} GiB, "
                      f"{done / 2**20 / max(time.time() - t0, 1e-3):.0f} MiB/s", end="", flush=True)
        w.close()
        print()
        return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--type", choices=["q4_0", "q4_k"], required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-layer", type=int, default=None, help="override the layer count (quick tests)")
    ap.add_argument("--vocab-dir", type=pathlib.Path, default=pathlib.Path("/work/shared/vocab"))
    args = ap.parse_args(argv)
    body = {"q4_0": Q.Q4_0, "q4_k": Q.Q4_K}[args.type]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shape = dict(SHAPES[args.shape])
    if args.n_layer:
        shape["n_layer"] = args.n_layer
    m = Model(shape, body, args.vocab_dir, args.seed)
    total = m.write(args.out)
    print(f"wrote {args.out}: {args.out.stat().st_size / 2**30:.2f} GiB ({total / 2**30:.2f} GiB of tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
