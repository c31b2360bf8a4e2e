#!/usr/bin/env python3
"""Export a trained checkpoint as a llama.cpp `qwen3moe` GGUF.

2-D/3-D weight matrices whose row length is a multiple of 32 are written as Q8_0
(ggml block: f16 scale d = absmax/127, then 32 int8 q = round(x/d)); norms and the
router (ffn_gate_inp, kept exact so routing decisions match) are F32.
The output head is tied to token_embd (no `output.weight`), which llama.cpp supports.

Usage: export_gguf.py --ckpt final.pt --tokenizer tokenizer.json --out model.gguf
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import MoeConfig, MoeModel  # noqa: E402

import gguf  # noqa: E402

ARCH = "qwen3moe"
EOT = "<|endoftext|>"
QK8_0 = 32


def quantize_q8_0(x):
    """Our own Q8_0 encoder. x: float32 [..., n] with n % 32 == 0 -> uint8 [..., n/32*34]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    shape = x.shape
    if shape[-1] % QK8_0:
        raise ValueError(f"row length {shape[-1]} is not a multiple of {QK8_0}")
    b = x.reshape(-1, QK8_0)
    amax = np.abs(b).max(axis=1, keepdims=True)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    v = b * inv
    q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)  # round half away from zero
    out = np.empty((b.shape[0], 2 + QK8_0), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.reshape(*shape[:-1], shape[-1] // QK8_0 * (2 + QK8_0))


def dequantize_q8_0(raw, n):
    b = raw.reshape(-1, 2 + QK8_0)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    q = b[:, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(*raw.shape[:-1], n)


def tokenizer_fields(tokenizer_json):
    with open(tokenizer_json, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    n = max(vocab.values()) + 1
    tokens = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    for at in tj["added_tokens"]:
        tokens[at["id"]] = at["content"]
    if any(t is None for t in tokens):
        raise ValueError("tokenizer vocab has holes")
    special = {at["id"] for at in tj["added_tokens"] if at.get("special")}
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(n)]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in tj["model"]["merges"]]
    return tokens, types, merges, tokens.index(EOT)


def gguf_tensors(model):
    """(name, numpy array, kind) with kind in {'q8', 'f32'} in llama.cpp's naming."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = [("token_embd.weight", sd["tok_embd.weight"], "q8")]
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}."
        g, u, d = (t.float().numpy() for t in blk.moe.stacked())
        out += [
            (f"blk.{i}.attn_norm.weight", sd[p + "attn_norm"], "f32"),
            (f"blk.{i}.attn_q.weight", sd[p + "attn.wq.weight"], "q8"),
            (f"blk.{i}.attn_k.weight", sd[p + "attn.wk.weight"], "q8"),
            (f"blk.{i}.attn_v.weight", sd[p + "attn.wv.weight"], "q8"),
            (f"blk.{i}.attn_output.weight", sd[p + "attn.wo.weight"], "q8"),
            (f"blk.{i}.attn_q_norm.weight", sd[p + "attn.q_norm"], "f32"),
            (f"blk.{i}.attn_k_norm.weight", sd[p + "attn.k_norm"], "f32"),
            (f"blk.{i}.ffn_norm.weight", sd[p + "ffn_norm"], "f32"),
            (f"blk.{i}.ffn_gate_inp.weight", sd[p + "moe.router.weight"], "f32"),
            (f"blk.{i}.ffn_gate_exps.weight", g, "q8"),
            (f"blk.{i}.ffn_up_exps.weight", u, "q8"),
            (f"blk.{i}.ffn_down_exps.weight", d, "q8"),
        ]
    out.append(("output_norm.weight", sd["output_norm"], "f32"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="/work/train-work/run/final.pt")
    ap.add_argument("--tokenizer", default="/work/train-work/data/tokenizer.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="rustdoc-moe")
    args = ap.parse_args()

    ck = torch.load(args.ckpt, weights_only=False)
    cfg = MoeConfig(**ck["cfg"])
    model = MoeModel(cfg)
    model.load_state_dict(ck["model"])
    tokens, types, merges, eot = tokenizer_fields(args.tokenizer)
    if len(tokens) != cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokens)} tokens, model {cfg.vocab_size}")

    w = gguf.GGUFWriter(args.out, ARCH)
    w.add_string("general.name", args.name)
    w.add_string("general.license", "MIT OR Apache-2.0")
    w.add_string("general.description",
                 "Tiny qwen3moe-layout text-completion model trained on the Rust toolchain docs "
                 "(Rustonomicon held out). No chat template.")
    w.add_uint32("general.file_type", 7)  # LLAMA_FTYPE_MOSTLY_Q8_0
    w.add_uint32(f"{ARCH}.block_count", cfg.n_layer)
    w.add_uint32(f"{ARCH}.context_length", cfg.n_ctx)
    w.add_uint32(f"{ARCH}.embedding_length", cfg.n_embd)
    w.add_uint32(f"{ARCH}.feed_forward_length", cfg.n_ff_exp)
    w.add_uint32(f"{ARCH}.expert_feed_forward_length", cfg.n_ff_exp)
    w.add_uint32(f"{ARCH}.expert_count", cfg.n_expert)
    w.add_uint32(f"{ARCH}.expert_used_count", cfg.n_expert_used)
    w.add_uint32(f"{ARCH}.attention.head_count", cfg.n_head)
    w.add_uint32(f"{ARCH}.attention.head_count_kv", cfg.n_head_kv)
    w.add_uint32(f"{ARCH}.attention.key_length", cfg.head_dim)
    w.add_uint32(f"{ARCH}.attention.value_length", cfg.head_dim)
    w.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", cfg.rms_eps)
    w.add_float32(f"{ARCH}.rope.freq_base", cfg.rope_base)

    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "gpt-2")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", [int(t) for t in types])
    w.add_array("tokenizer.ggml.merges", merges)
    w.add_uint32("tokenizer.ggml.bos_token_id", eot)
    w.add_uint32("tokenizer.ggml.eos_token_id", eot)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_bool("tokenizer.ggml.add_eos_token", False)

    for name, arr, kind in gguf_tensors(model):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if kind == "q8" and arr.shape[-1] % QK8_0 == 0:
            raw = quantize_q8_0(arr)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
