#!/usr/bin/env python3
"""Write small random-weight GGUF models and llama.cpp's logits for them (parity fixtures).

For every fixture in FIXTURES this script
  1. draws random weights (seeded) for a 2-layer, narrow model of the given architecture, with the
     tensor names, shapes and metadata keys that llama.cpp's loader expects;
  2. copies the tokenizer metadata of a real vocabulary (optionally cut to its first N ranks, see
     `cut_vocab`) into the model;
  3. writes it as an F32 GGUF and quantizes it with llama.cpp (`llama_model_quantize`);
  4. tokenizes a sentence with llama.cpp, runs one sequence (positions 0..n-1) with an f32 KV cache,
     flash attention off, 2 threads, and stores the logits of every position at a subset of columns;
  5. checks that the model is not degenerate (finite logits, top-1 varies over positions) and that
     every MoE router decision has a clear margin between the k-th and the (k+1)-th expert logit
     (read back from llama.cpp itself through its graph callback); a router that is too close to a tie
     is redrawn (deterministically) and the fixture rebuilt.

Usage:
    python tools/make_fixtures.py --out-dir tests/fixtures/parity [--seed N] \
        [--vocab SLOT=PATH ...] [--vocab-limit N] [--only NAME ...] [--kv-type {f32,f16,q8_0}]

llama-cpp-python must be importable (see tools/README.md, "building the llama.cpp reference").
Output: <name>.gguf and <name>.json per fixture, and MANIFEST.md. Same seed and inputs give
byte-identical GGUFs.

With --kv-type f16 the logits are recorded with an f16 K and V cache instead (flash attention still
off). The GGUFs are not rewritten: each one is rebuilt in a temporary folder (router draws chosen
with the f32 KV cache, as always, so the weights do not depend on --kv-type) and must be
byte-identical to the existing <out-dir>/<name>.gguf (same --seed/--vocab/--vocab-limit as when it
was made), which is then run with the f16 KV cache; its router logits must pass the same check
(same top-k as the float64 forward, margin >= ROUTER_MIN_MARGIN) or the script fails. Output:
<name>.kv_f16.json (the fields of <name>.json plus "kv_type": "f16") and a regenerated section of
MANIFEST.md between kv_section_markers("f16"); the rest of MANIFEST.md is left alone.

--kv-type q8_0 does the same with a q8_0 K cache and an f16 V cache (flash attention still off:
llama.cpp needs it only for a quantized V cache). q8_0 blocks are 32 values, so it is refused for a
fixture whose head dimension is not a multiple of 32. Output: <name>.kv_q8_0.json ("kv_type": "q8_0")
and its own MANIFEST.md section between kv_section_markers("q8_0"); the f16 section is left alone.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import math
import os
import pathlib
import struct
import sys
import tempfile
import zlib

import numpy as np
import gguf

# ----------------------------------------------------------------------------------------------
# constants

# llama_ftype values (llama.h) and ggml_type values (ggml.h) used here
FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32}
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "q4_K": 12, "q5_K": 13, "q6_K": 14, "bf16": 30}
# --kv-type -> (type of the K cache, type of the V cache), keys of GGML_TYPES
KV_CACHE_TYPES = {"f32": ("f32", "f32"), "f16": ("f16", "f16"), "q8_0": ("q8_0", "f16")}
KV_TYPES = tuple(KV_CACHE_TYPES)


def kv_section_markers(kv_type: str) -> tuple[str, str]:
    """First and last line of the MANIFEST.md section of the --kv-type `kv_type` fixtures, rewritten by
    every run with that --kv-type (one section per type; the others are left alone)."""
    return (f"<!-- kv_{kv_type} fixtures: begin (written by tools/make_fixtures.py --kv-type {kv_type}) -->",
            f"<!-- kv_{kv_type} fixtures: end -->")


def kv_cache_desc(kv_type: str) -> str:
    """'f16 K and V cache' or 'q8_0 K cache, f16 V cache'."""
    k, v = KV_CACHE_TYPES[kv_type]
    return f"{k} K and V cache" if k == v else f"{k} K cache, {v} V cache"


def kv_head_dim_problem(spec: "Spec", kv_type: str) -> str | None:
    """Why `spec` cannot have this KV cache (quantized rows are whole blocks of a head), or None."""
    for what, t in zip("KV", KV_CACHE_TYPES[kv_type]):
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(GGML_TYPES[t])][0]
        if spec.head_dim % block:
            return (f"{spec.name}: head dim {spec.head_dim} is not a multiple of {block} (the {t} block size), "
                    f"so it cannot have a {t} {what} cache")
    return None

DEFAULT_VOCABS = {
    "spm": "ggml-vocab-llama-spm.gguf",
    "llama-bpe": "ggml-vocab-llama-bpe.gguf",
    "gpt-2": "ggml-vocab-gpt-2.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
}

SENTENCES = [
    "The quick brown fox jumps over the lazy dog while the farmer counts 1234 sheep in the valley.",
    "Mixture-of-experts models route every token to a few feed-forward networks chosen by a router.",
    "On small machines, memory bandwidth decides how fast a language model can write its next word.",
    "Ils ont mangé des crêpes à Paris, puis ils sont partis vers Lyon en train à grande vitesse.",
    "def add(a, b):\n    return a + b  # simple function, tested on 3 and 4\n",
    "In 1969, astronauts landed on the Moon; millions watched the grainy pictures on television.",
    "Please translate the following sentence into German: the weather is nice today.",
    "Quantization stores weights in 4 or 8 bits per value, with a scale for every block of 32.",
]

N_COLUMNS_RANDOM = 384
TOP_K_STORED = 16
MIN_TOKENS, MAX_TOKENS = 12, 24
ROUTER_MIN_MARGIN = 0.1  # minimum gap between the k-th and (k+1)-th router logit, every token/layer


# ----------------------------------------------------------------------------------------------
# fixture specifications


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    arch: str  # llama | qwen2 | qwen2moe | qwen3 | qwen3moe | olmoe
    ftype: str  # key of FTYPES
    vocab: str  # vocab slot (key of DEFAULT_VOCABS)
    vocab_limit: int | None  # keep the first N ranks of the vocabulary (None: all of it)
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int = 0  # dense FFN width (dense archs)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0  # expert FFN width
    n_ff_shexp: int = 0  # shared expert FFN width (qwen2moe)
    tied: bool = False  # no output.weight: the output head reuses token_embd
    tok_type: str | None = None  # llama-quantize --token-embedding-type
    out_type: str | None = None  # llama-quantize --output-tensor-type (also token_embd when tied)
    n_layer: int = 2


FIXTURES = [
    # Mixtral-style llama MoE, 256 wide so the K-quants really apply to the expert tensors.
    Spec("llama_moe_q4km", "llama", "Q4_K_M", "llama-bpe", 4096, n_embd=256, n_head=4, n_head_kv=2,
         head_dim=64, n_expert=4, n_expert_used=2, n_ff_exp=256, tied=True),
    # Mixtral-style, narrow, full SentencePiece vocab.
    Spec("llama_moe_q4_0", "llama", "Q4_0", "spm", None, n_embd=64, n_head=4, n_head_kv=2,
         head_dim=16, n_expert=4, n_expert_used=2, n_ff_exp=96, tied=True, out_type="q4_0"),
    # Dense llama, full SentencePiece vocab.
    Spec("llama_q8_0", "llama", "Q8_0", "spm", None, n_embd=64, n_head=4, n_head_kv=2,
         head_dim=16, n_ff=128, tied=True),
    # qwen2moe: q/k/v biases, shared expert gated by sigmoid(ffn_gate_inp_shexp).
    Spec("qwen2moe_q4_0", "qwen2moe", "Q4_0", "qwen2", 8192, n_embd=64, n_head=4, n_head_kv=2,
         head_dim=16, n_expert=4, n_expert_used=2, n_ff_exp=64, n_ff_shexp=128),
    # qwen3moe, 256 wide, K-quant experts; head_dim * n_head != n_embd like the real ones.
    Spec("qwen3moe_q6k", "qwen3moe", "Q6_K", "qwen2", 4096, n_embd=256, n_head=4, n_head_kv=2,
         head_dim=128, n_expert=6, n_expert_used=3, n_ff_exp=256, tied=True),
    # qwen3moe, narrow, bf16.
    Spec("qwen3moe_bf16", "qwen3moe", "BF16", "qwen2", 8192, n_embd=64, n_head=4, n_head_kv=2,
         head_dim=32, n_expert=8, n_expert_used=3, n_ff_exp=64, tied=True),
    # olmoe: q_norm/k_norm over the whole q and k projections, softmax top-k without renorm.
    Spec("olmoe_q8_0", "olmoe", "Q8_0", "gpt-2", 8192, n_embd=64, n_head=4, n_head_kv=4,
         head_dim=16, n_expert=8, n_expert_used=2, n_ff_exp=64),
    # dense qwen2 (q/k/v biases), all f32: the pure-math reference.
    Spec("qwen2_f32", "qwen2", "F32", "qwen2", 4096, n_embd=64, n_head=4, n_head_kv=2,
         head_dim=16, n_ff=128, tied=True),
    # dense qwen3 (per-head q/k norms), f16.
    Spec("qwen3_f16", "qwen3", "F16", "qwen2", 4096, n_embd=64, n_head=4, n_head_kv=2,
         head_dim=32, n_ff=128, tied=True),
]


# ----------------------------------------------------------------------------------------------
# vocabularies


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
          12: "<f8"}


def read_gguf_kv(path: pathlib.Path, prefix: str = "") -> dict[str, tuple[object, list]]:
    """Metadata of a GGUF file: key -> (value, [GGUFValueType, sub type for arrays]).

    A small direct parser: gguf.GGUFReader builds numpy views for every array element and takes
    minutes on a 150k-token vocabulary."""
    return _parse_gguf(path.read_bytes(), path, prefix)[0]


def read_gguf(path: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and all tensors of a GGUF file, dequantized to float64 (numpy shape = ggml ne reversed)."""
    data = path.read_bytes()
    kv, infos, data_start = _parse_gguf(data, path, "")
    tensors = {}
    for name, (dims, qtype, offset) in infos.items():
        qt = gguf.GGMLQuantizationType(qtype)
        bs, bb = gguf.GGML_QUANT_SIZES[qt]
        shape = tuple(reversed(dims))
        n_rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        row_bytes = shape[-1] // bs * bb
        raw = np.frombuffer(data, dtype=np.uint8, count=n_rows * row_bytes, offset=data_start + offset)
        if qt == gguf.GGMLQuantizationType.F32:
            arr = raw.view(np.float32)
        elif qt == gguf.GGMLQuantizationType.F16:
            arr = raw.view(np.float16)
        else:
            arr = gguf.quants.dequantize(raw.reshape(n_rows, row_bytes), qt)
        tensors[name] = np.asarray(arr, dtype=np.float64).reshape(shape)
    return kv, tensors


def _parse_gguf(data: bytes, path: pathlib.Path, prefix: str):
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} not supported")
    off = 24

    def read_str(o):
        (n,) = struct.unpack_from("<Q", data, o)
        return data[o + 8:o + 8 + n].decode("utf-8"), o + 8 + n

    def read_val(t, o):
        if t == 8:
            return read_str(o)
        fmt = _SCALAR[t]
        return struct.unpack_from(fmt, data, o)[0], o + struct.calcsize(fmt)

    out = {}
    for _ in range(n_kv):
        key, off = read_str(off)
        (vtype,) = struct.unpack_from("<I", data, off)
        off += 4
        if vtype == 9:
            sub, n = struct.unpack_from("<IQ", data, off)
            off += 12
            if sub == 8:
                vals = []
                for _ in range(n):
                    v, off = read_str(off)
                    vals.append(v)
            else:
                dt = np.dtype(_NUMPY[sub])
                vals = np.frombuffer(data, dtype=dt, count=n, offset=off).tolist()
                off += dt.itemsize * n
            value, types = vals, [gguf.GGUFValueType(9), gguf.GGUFValueType(sub)]
        else:
            value, off = read_val(vtype, off)
            types = [gguf.GGUFValueType(vtype)]
        if key.startswith(prefix):
            out[key] = (value, types)
    infos = {}
    for _ in range(n_tensors):
        name, off = read_str(off)
        (n_dims,) = struct.unpack_from("<I", data, off)
        dims = struct.unpack_from(f"<{n_dims}Q", data, off + 4)
        qtype, t_off = struct.unpack_from("<IQ", data, off + 4 + 8 * n_dims)
        off += 4 + 8 * n_dims + 12
        infos[name] = (dims, qtype, t_off)
    align = out.get("general.alignment", (32, None))[0]
    data_start = (off + align - 1) // align * align
    return out, infos, data_start


_VOCAB_CACHE: dict[str, dict] = {}


def read_tokenizer_kv(path: pathlib.Path) -> dict:
    key = str(path.resolve())
    if key not in _VOCAB_CACHE:
        _VOCAB_CACHE[key] = read_gguf_kv(path, "tokenizer.")
    return _VOCAB_CACHE[key]


def load_vocab(path: pathlib.Path, limit: int | None) -> tuple[list[tuple[str, object, list]], int, str]:
    """Read the tokenizer.* metadata of a vocab GGUF.

    Returns (list of (key, value, types)), n_vocab, description). With `limit`, the vocabulary is
    cut to its first `limit` ids (`cut_vocab`)."""
    kv = read_tokenizer_kv(path)
    n_full = len(kv["tokenizer.ggml.tokens"][0])
    desc = f"{path.name} ({n_full} tokens)"
    if limit is not None and limit < n_full:
        kv = cut_vocab(kv, limit)
        desc = f"{path.name} cut to {len(kv['tokenizer.ggml.tokens'][0])} tokens"
    out = [(k, v, t) for k, (v, t) in kv.items()]
    return out, len(kv["tokenizer.ggml.tokens"][0]), desc


def cut_vocab(kv: dict, limit: int) -> dict:
    """Keep ids < limit, plus the control tokens above it (renumbered right after).

    For BPE vocabularies the merges are filtered to those whose two parts and result survive: for
    GPT-2-style vocabularies (token 256+i is the result of merge i) this is exactly the tokenizer of
    the first `limit` ranks. For SentencePiece vocabularies the kept pieces keep their scores."""
    tokens = kv["tokenizer.ggml.tokens"][0]
    ttypes = kv["tokenizer.ggml.token_type"][0]
    keep = list(range(limit)) + [i for i in range(limit, len(tokens)) if ttypes[i] == 3]
    remap = {old: new for new, old in enumerate(keep)}
    out = dict(kv)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        if key in kv:
            vals, types = kv[key]
            out[key] = ([vals[i] for i in keep], types)
    if "tokenizer.ggml.merges" in kv:
        kept = {tokens[i] for i in keep}
        merges, types = kv["tokenizer.ggml.merges"]
        new_merges = []
        for m in merges:
            a, _, b = m.partition(" ")
            if a in kept and b in kept and (a + b) in kept:
                new_merges.append(m)
        out["tokenizer.ggml.merges"] = (new_merges, types)
        # byte-level BPE needs all 256 byte symbols
        missing = [c for c in _byte_symbols() if c not in kept]
        if missing:
            raise ValueError(f"cutting the vocabulary to {limit} ids drops byte symbols {missing[:8]}")
    for key, (val, types) in kv.items():
        if key.endswith("_token_id"):
            if val in remap:
                out[key] = (remap[val], types)
            else:
                del out[key]
    return out


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2 style) uses for the bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def add_vocab(writer: gguf.GGUFWriter, vocab_kv):
    for key, val, types in vocab_kv:
        if types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, val, gguf.GGUFValueType.ARRAY, sub_type=types[-1])
        else:
            writer.add_key_value(key, val, types[0])


# ----------------------------------------------------------------------------------------------
# random weights


def stable_seed(seed: int, *parts) -> int:
    h = zlib.crc32(("/".join(str(p) for p in parts)).encode())
    return (seed * 1_000_003 + h) % (2**63)


class Weights:
    """Draws tensors from a generator; numpy shape is the reverse of ggml's ne."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.tensors: list[tuple[str, np.ndarray]] = []

    def add(self, name: str, arr: np.ndarray):
        self.tensors.append((name, np.ascontiguousarray(arr, dtype=np.float32)))

    def linear(self, name: str, n_in: int, n_out: int, gain: float = 1.0, n_expert: int = 0):
        shape = (n_expert, n_out, n_in) if n_expert else (n_out, n_in)
        self.add(name, self.rng.standard_normal(shape) * (gain / math.sqrt(n_in)))

    def norm(self, name: str, n: int):
        self.add(name, 1.0 + self.rng.uniform(-0.25, 0.25, n))

    def bias(self, name: str, n: int, scale: float = 0.2):
        self.add(name, self.rng.standard_normal(n) * scale)


def build_weights(spec: Spec, n_vocab: int, seed: int, router_tries: list[int]) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(stable_seed(seed, spec.name, "weights"))
    w = Weights(rng)
    E = spec.n_embd
    q_dim = spec.n_head * spec.head_dim
    kv_dim = spec.n_head_kv * spec.head_dim
    # logits = <h, e_t> with |h| ~ sqrt(E): embedding scale 4/sqrt(E) gives logit std ~4
    w.add("token_embd.weight", rng.standard_normal((n_vocab, E)) * (4.0 / math.sqrt(E)))
    w.norm("output_norm.weight", E)
    if not spec.tied:
        w.linear("output.weight", E, n_vocab, gain=4.0)
    has_qkv_bias = spec.arch in ("qwen2", "qwen2moe")
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        w.norm(p + "attn_norm.weight", E)
        w.linear(p + "attn_q.weight", E, q_dim)
        w.linear(p + "attn_k.weight", E, kv_dim)
        w.linear(p + "attn_v.weight", E, kv_dim)
        if has_qkv_bias:
            w.bias(p + "attn_q.bias", q_dim)
            w.bias(p + "attn_k.bias", kv_dim)
            w.bias(p + "attn_v.bias", kv_dim)
        if spec.arch in ("qwen3", "qwen3moe"):
            w.norm(p + "attn_q_norm.weight", spec.head_dim)
            w.norm(p + "attn_k_norm.weight", spec.head_dim)
        if spec.arch == "olmoe":
            w.norm(p + "attn_q_norm.weight", q_dim)
            w.norm(p + "attn_k_norm.weight", kv_dim)
        w.linear(p + "attn_output.weight", q_dim, E)
        w.norm(p + "ffn_norm.weight", E)
        if spec.n_expert == 0:
            w.linear(p + "ffn_gate.weight", E, spec.n_ff)
            w.linear(p + "ffn_up.weight", E, spec.n_ff)
            w.linear(p + "ffn_down.weight", spec.n_ff, E)
        else:
            X, F = spec.n_expert, spec.n_ff_exp
            # router logits: std ~4 so that top-k decisions are clear-cut; every layer's router has its
            # own stream so that redrawing it changes nothing else
            rrng = np.random.default_rng(stable_seed(seed, spec.name, "router", i, router_tries[i]))
            w.add(p + "ffn_gate_inp.weight", rrng.standard_normal((X, E)) * (4.0 / math.sqrt(E)))
            w.linear(p + "ffn_gate_exps.weight", E, F, n_expert=X)
            w.linear(p + "ffn_up_exps.weight", E, F, n_expert=X)
            w.linear(p + "ffn_down_exps.weight", F, E, n_expert=X)
            if spec.arch == "qwen2moe":
                S = spec.n_ff_shexp
                # a 1-D tensor {n_embd}: one sigmoid gate per token
                w.add(p + "ffn_gate_inp_shexp.weight", rng.standard_normal(E) * (1.5 / math.sqrt(E)))
                w.linear(p + "ffn_gate_shexp.weight", E, S)
                w.linear(p + "ffn_up_shexp.weight", E, S)
                w.linear(p + "ffn_down_shexp.weight", S, E)
    return w.tensors


def write_f32_gguf(path: pathlib.Path, spec: Spec, vocab_kv, n_vocab: int, seed: int, router_tries: list[int]):
    a = spec.arch
    writer = gguf.GGUFWriter(str(path), a)
    writer.add_name(f"moe-edge parity fixture {spec.name}")
    writer.add_file_type(FTYPES["F32"])
    writer.add_context_length(4096)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5 if a == "llama" else 1e-6)
    writer.add_rope_freq_base(10000.0 if a == "llama" else 1000000.0)
    writer.add_rope_dimension_count(spec.head_dim)
    if a in ("qwen3", "qwen3moe") or spec.head_dim * spec.n_head != spec.n_embd:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
    if spec.n_expert:
        writer.add_expert_count(spec.n_expert)
        writer.add_expert_used_count(spec.n_expert_used)
        if a in ("llama", "olmoe"):
            writer.add_feed_forward_length(spec.n_ff_exp)
        else:
            # like the released qwen MoE files: feed_forward_length is not the expert width
            writer.add_feed_forward_length(spec.n_ff_exp * 4)
            writer.add_expert_feed_forward_length(spec.n_ff_exp)
        if a == "qwen2moe":
            writer.add_expert_shared_feed_forward_length(spec.n_ff_shexp)
    else:
        writer.add_feed_forward_length(spec.n_ff)
    if a == "llama":
        writer.add_vocab_size(n_vocab)
    add_vocab(writer, vocab_kv)
    for name, arr in build_weights(spec, n_vocab, seed, router_tries):
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ----------------------------------------------------------------------------------------------
# llama.cpp


class LlamaCpp:
    def __init__(self):
        import llama_cpp as L

        self.L = L
        L.llama_log_set(self._log_cb_keep(), ctypes.c_void_p(0))
        L.llama_backend_init()
        libdir = pathlib.Path(L.__file__).parent / "lib"
        override = os.environ.get("LLAMA_CPP_LIB_PATH")
        if override:
            libdir = pathlib.Path(override)
        self.ggml = ctypes.CDLL(str(libdir / "libggml-base.so"))
        self.ggml.ggml_get_name.restype = ctypes.c_char_p
        self.ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
        self.ggml.ggml_nelements.restype = ctypes.c_int64
        self.ggml.ggml_nelements.argtypes = [ctypes.c_void_p]
        self.ggml.ggml_get_data_f32.restype = ctypes.POINTER(ctypes.c_float)
        self.ggml.ggml_get_data_f32.argtypes = [ctypes.c_void_p]

    def _log_cb_keep(self):
        L = self.L

        def log(level, text, user_data):
            if level <= 2 and text:  # errors and warnings
                msg = text.decode(errors="replace")
                if "falling back" in msg or "error" in msg.lower():
                    sys.stderr.write(msg)

        self._log_cb = L.llama_log_callback(log)
        return self._log_cb

    def quantize(self, src: pathlib.Path, dst: pathlib.Path, spec: Spec):
        L = self.L
        params = L.llama_model_quantize_default_params()
        params.nthread = 2
        params.ftype = FTYPES[spec.ftype]
        if spec.tok_type:
            params.token_embedding_type = GGML_TYPES[spec.tok_type]
        if spec.out_type:
            params.output_tensor_type = GGML_TYPES[spec.out_type]
        rc = L.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize failed for {spec.name}: {rc}")

    def run(self, path: pathlib.Path, text: str, want_router: bool, kv_type: str = "f32"):
        """Tokenize `text` (with BOS), decode it as one sequence with a `kv_type` KV cache; returns
        tokens, logits [n_tokens, n_vocab] and, if asked, the router logits per layer [n_tokens, n_expert]."""
        L = self.L
        mparams = L.llama_model_default_params()
        model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise RuntimeError(f"llama.cpp failed to load {path}")
        try:
            vocab = L.llama_model_get_vocab(model)
            n_vocab = L.llama_vocab_n_tokens(vocab)
            raw = text.encode()
            buf = (L.llama_token * 512)()
            n = L.llama_tokenize(vocab, raw, len(raw), buf, 512, True, False)
            if n < 0:
                raise RuntimeError("tokenize failed")
            tokens = list(buf[:n])
            bos = L.llama_vocab_bos(vocab)
            if bos >= 0 and (not tokens or tokens[0] != bos):
                tokens = [bos] + tokens
            tokens = tokens[:MAX_TOKENS]
            if len(tokens) < MIN_TOKENS:
                raise RuntimeError(f"only {len(tokens)} tokens")
            logits = self._decode(model, tokens, n_vocab, None, kv_type)
            router = None
            if want_router:
                router = {}

                def cb(t, ask, _ud):
                    name = self.ggml.ggml_get_name(t).decode()
                    if not name.startswith("ffn_moe_logits-"):
                        return False if ask else True
                    if ask:
                        return True
                    ne = self.ggml.ggml_nelements(t)
                    data = np.ctypeslib.as_array(self.ggml.ggml_get_data_f32(t), shape=(ne,)).copy()
                    router[int(name.rsplit("-", 1)[1])] = data.reshape(len(tokens), -1)
                    return True

                self._decode(model, tokens, n_vocab, cb, kv_type)
            return tokens, logits, router
        finally:
            L.llama_model_free(model)

    def _decode(self, model, tokens, n_vocab, cb, kv_type: str = "f32"):
        L = self.L
        cparams = L.llama_context_default_params()
        cparams.n_ctx = 64
        cparams.n_batch = 64
        cparams.n_ubatch = 64
        cparams.n_seq_max = 1
        cparams.n_threads = 2
        cparams.n_threads_batch = 2
        type_k, type_v = KV_CACHE_TYPES[kv_type]  # f32/f32 (default), f16/f16 or q8_0/f16 (--kv-type)
        cparams.type_k = GGML_TYPES[type_k]
        cparams.type_v = GGML_TYPES[type_v]
        cparams.flash_attn_type = 0  # disabled: plain softmax(QK^T)V in f32
        keep = None
        if cb is not None:
            keep = L.ggml_backend_sched_eval_callback(cb)
            cparams.cb_eval = keep
            cparams.cb_eval_user_data = None
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            raise RuntimeError("llama_init_from_model failed")
        batch = L.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, t in enumerate(tokens):
                batch.token[i] = t
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            batch.n_tokens = len(tokens)
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed: {rc}")
            ptr = L.llama_get_logits(ctx)
            out = np.ctypeslib.as_array(ptr, shape=(len(tokens) * n_vocab,)).copy()
        finally:
            L.llama_batch_free(batch)
            L.llama_free(ctx)
        del keep
        return out.reshape(len(tokens), n_vocab)


# ----------------------------------------------------------------------------------------------
# an independent float64 forward pass (numpy), to cross-check the fixtures against llama.cpp


def _rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, base, neox):
    """x: [n_tok, n_heads, head_dim]; llama's NORM rope rotates pairs (2i, 2i+1), NEOX (i, i+d/2)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None] * inv[None, :]  # [n_tok, d/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def _silu(x):
    return x / (1.0 + np.exp(-x))


def numpy_logits(path: pathlib.Path, tokens: list[int], router_out: dict | None = None) -> np.ndarray:
    """Logits [n_tok, n_vocab] of a fixture, computed from its GGUF in float64 without llama.cpp.
    With `router_out`, the router logits of every layer are stored there ([n_tok, n_expert])."""
    kv, t = read_gguf(path)
    arch = kv["general.architecture"][0]

    def hp(name, default=None):
        v = kv.get(f"{arch}.{name}")
        if v is None:
            if default is None:
                raise KeyError(f"{arch}.{name}")
            return default
        return v[0]

    n_layer, n_head, n_head_kv = hp("block_count"), hp("attention.head_count"), hp("attention.head_count_kv")
    eps = hp("attention.layer_norm_rms_epsilon")
    base = hp("rope.freq_base", 10000.0)
    n_embd = hp("embedding_length")
    head_dim = hp("attention.key_length", n_embd // n_head)
    n_used = hp("expert_used_count", 0)
    neox = arch != "llama"
    norm_topk = arch in ("llama", "qwen3moe")  # build_moe_ffn(norm_w=...) per architecture
    pos = np.arange(len(tokens), dtype=np.float64)
    n = len(tokens)
    x = t["token_embd.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = _rms_norm(x, t[p + "attn_norm.weight"], eps)
        q = h @ t[p + "attn_q.weight"].T
        k = h @ t[p + "attn_k.weight"].T
        v = h @ t[p + "attn_v.weight"].T
        if p + "attn_q.bias" in t:
            q, k, v = q + t[p + "attn_q.bias"], k + t[p + "attn_k.bias"], v + t[p + "attn_v.bias"]
        if arch == "olmoe":  # norms over the whole projections
            q = _rms_norm(q, t[p + "attn_q_norm.weight"], eps)
            k = _rms_norm(k, t[p + "attn_k_norm.weight"], eps)
        q = q.reshape(n, n_head, head_dim)
        k = k.reshape(n, n_head_kv, head_dim)
        v = v.reshape(n, n_head_kv, head_dim)
        if arch in ("qwen3", "qwen3moe"):  # per-head norms
            q = _rms_norm(q, t[p + "attn_q_norm.weight"], eps)
            k = _rms_norm(k, t[p + "attn_k_norm.weight"], eps)
        q, k = _rope(q, pos, base, neox), _rope(k, pos, base, neox)
        group = n_head // n_head_kv
        att = np.empty((n, n_head, head_dim))
        for hd in range(n_head):
            kh, vh = k[:, hd // group], v[:, hd // group]
            s = q[:, hd] @ kh.T / math.sqrt(head_dim) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hd] = (s / s.sum(axis=1, keepdims=True)) @ vh
        x = x + att.reshape(n, -1) @ t[p + "attn_output.weight"].T
        h = _rms_norm(x, t[p + "ffn_norm.weight"], eps)
        if p + "ffn_gate_inp.weight" not in t:
            ff = (_silu(h @ t[p + "ffn_gate.weight"].T) * (h @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
        else:
            logits = h @ t[p + "ffn_gate_inp.weight"].T
            if router_out is not None:
                router_out[i] = logits
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            ff = np.zeros_like(x)
            gate, up, down = t[p + "ffn_gate_exps.weight"], t[p + "ffn_up_exps.weight"], t[p + "ffn_down_exps.weight"]
            for j in range(n):
                sel = np.argsort(-probs[j], kind="stable")[:n_used]
                w = probs[j, sel]
                if norm_topk:
                    w = w / w.sum()
                for e, we in zip(sel, w):
                    ff[j] += we * ((_silu(gate[e] @ h[j]) * (up[e] @ h[j])) @ down[e].T)
            if p + "ffn_gate_inp_shexp.weight" in t:
                g = 1.0 / (1.0 + np.exp(-(h @ t[p + "ffn_gate_inp_shexp.weight"])))
                sh = (_silu(h @ t[p + "ffn_gate_shexp.weight"].T) * (h @ t[p + "ffn_up_shexp.weight"].T))
                ff = ff + g[:, None] * (sh @ t[p + "ffn_down_shexp.weight"].T)
        x = x + ff
    x = _rms_norm(x, t["output_norm.weight"], eps)
    out = t.get("output.weight", t["token_embd.weight"])
    return x @ out.T


# ----------------------------------------------------------------------------------------------
# fixture assembly


def tensor_types(path: pathlib.Path) -> dict[str, list[str]]:
    """tensor kind (name without blk.N.) -> sorted list of ggml types found."""
    reader = gguf.GGUFReader(str(path))
    kinds: dict[str, set] = {}
    for t in reader.tensors:
        name = t.name
        if name.startswith("blk."):
            name = name.split(".", 2)[2]
        kinds.setdefault(name, set()).add(t.tensor_type.name)
    return {k: sorted(v) for k, v in kinds.items()}


def router_ok(got: np.ndarray, ref: np.ndarray, k: int) -> tuple[bool, float]:
    """Same top-k expert sets in llama.cpp's and the reference router logits, and the smallest gap
    between the k-th and (k+1)-th logit (over both) at least ROUTER_MIN_MARGIN."""
    margin = math.inf
    for a in (got, ref):
        srt = -np.sort(-a, axis=1)
        margin = min(margin, float(np.min(srt[:, k - 1] - srt[:, k])))
    same = all(set(np.argsort(-g)[:k]) == set(np.argsort(-r)[:k]) for g, r in zip(got, ref))
    return same and margin >= ROUTER_MIN_MARGIN, margin


def fmt(x: float) -> float:
    return float(f"{x:.7g}")


def make_fixture(spec: Spec, out_dir: pathlib.Path, vocab_paths: dict, vocab_limit_override, seed: int,
                 lc: LlamaCpp, tmp: pathlib.Path, kv_type: str = "f32") -> dict:
    limit = spec.vocab_limit if vocab_limit_override is None else (vocab_limit_override or None)
    vocab_kv, n_vocab, vocab_desc = load_vocab(vocab_paths[spec.vocab], limit)
    rng = np.random.default_rng(stable_seed(seed, spec.name, "text"))
    text = SENTENCES[int(rng.integers(len(SENTENCES)))]
    f32_path = tmp / f"{spec.name}.f32.gguf"
    out_path = out_dir / f"{spec.name}.gguf"
    existing = None
    if kv_type != "f32":
        problem = kv_head_dim_problem(spec, kv_type)
        if problem:
            raise RuntimeError(f"--kv-type {kv_type}: {problem}")
        # the GGUF is only rebuilt as a check: into tmp, then compared with the existing one. The router
        # draws below (part of the weights) are chosen with the f32 KV cache as when it was made.
        existing, out_path = out_path, tmp / f"{spec.name}.gguf"
        if not existing.exists():
            raise RuntimeError(f"{spec.name}: --kv-type {kv_type} needs the existing {existing}")
    margin = None
    tries = [0] * spec.n_layer

    def build():
        write_f32_gguf(f32_path, spec, vocab_kv, n_vocab, seed, tries)
        if spec.ftype == "F32" and not spec.tok_type and not spec.out_type:
            os.replace(f32_path, out_path)
        else:
            lc.quantize(f32_path, out_path, spec)
        return lc.run(out_path, text, want_router=spec.n_expert > 0)

    tokens, logits, router = build()
    if spec.n_expert:
        # fix the routers layer by layer (a layer's router does not change the layers before it):
        # llama.cpp's and the float64 forward's choices must agree, with a clear margin in both
        for layer in range(spec.n_layer):
            while True:
                ref_router: dict = {}
                numpy_logits(out_path, tokens, ref_router)
                ok, m = router_ok(router[layer], ref_router[layer], spec.n_expert_used)
                if ok:
                    break
                tries[layer] += 1
                if tries[layer] >= 200:
                    raise RuntimeError(f"{spec.name}: no decisive router found for layer {layer}")
                tokens, logits, router = build()
            print(f"  layer {layer}: router draw {tries[layer]}, margin {m:.3f}", flush=True)
        margin = min(router_ok(router[i], ref_router[i], spec.n_expert_used)[1] for i in range(spec.n_layer))
    if f32_path.exists():
        f32_path.unlink()
    if existing is not None:
        if out_path.read_bytes() != existing.read_bytes():
            raise RuntimeError(
                f"{spec.name}: the rebuilt GGUF differs from {existing} (another --seed, --vocab or "
                f"--vocab-limit than when it was written?); not writing {spec.name}.kv_{kv_type}.json")
        out_path.unlink()
        out_path = existing
        tokens, logits, router = lc.run(out_path, text, want_router=spec.n_expert > 0, kv_type=kv_type)
        if spec.n_expert:
            # the router check again, on the router logits llama.cpp computed with this KV cache
            ref_router = {}
            numpy_logits(out_path, tokens, ref_router)
            checks = [router_ok(router[i], ref_router[i], spec.n_expert_used) for i in range(spec.n_layer)]
            for layer, (ok, m) in enumerate(checks):
                print(f"  layer {layer} with the {kv_type} KV cache: margin {m:.3f}", flush=True)
                if not ok:
                    raise RuntimeError(f"{spec.name}: with the {kv_type} KV cache, layer {layer}'s router "
                                       f"disagrees with the float64 forward or has margin {m:.3f} < "
                                       f"{ROUTER_MIN_MARGIN}; not writing {spec.name}.kv_{kv_type}.json")
            margin = min(m for _, m in checks)
    json_path = out_dir / (f"{spec.name}.json" if existing is None else f"{spec.name}.kv_{kv_type}.json")

    if not np.all(np.isfinite(logits)):
        raise RuntimeError(f"{spec.name}: non-finite logits")
    top = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K_STORED]
    if len(set(top[:, 0].tolist())) < 2:
        raise RuntimeError(f"{spec.name}: top-1 is constant over positions (degenerate weights)")
    # independent cross-check: float64 numpy forward of the same file
    ref = numpy_logits(out_path, tokens)
    np_max_diff = float(np.max(np.abs(ref - logits)))
    np_top1 = int(np.sum(np.argmax(ref, axis=1) == top[:, 0]))
    crng = np.random.default_rng(stable_seed(seed, spec.name, "columns"))
    cols = set(crng.choice(n_vocab, size=min(N_COLUMNS_RANDOM, n_vocab), replace=False).tolist())
    cols |= set(top.flatten().tolist())
    columns = sorted(int(c) for c in cols)
    record = {
        "model": out_path.name,
        "arch": spec.arch,
        "ftype": spec.ftype,
        **({} if existing is None else {"kv_type": kv_type}),
        "tokens": [int(t) for t in tokens],
        "n_vocab": int(n_vocab),
        "columns": columns,
        "logits": [[fmt(v) for v in row[columns]] for row in logits],
        "top": [[int(t) for t in row] for row in top],
    }
    json_path.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    return {
        "spec": spec,
        "vocab": vocab_desc,
        "n_tokens": len(tokens),
        "types": tensor_types(out_path),
        "margin": margin,
        "gguf_size": out_path.stat().st_size,
        "json_size": json_path.stat().st_size,
        "json_path": json_path,
        "top1_distinct": len(set(top[:, 0].tolist())),
        "logit_std": float(np.std(logits)),
        "np_max_diff": np_max_diff,
        "np_top1": np_top1,
        "logits": logits,
        "tokens": tokens,
    }


def write_manifest(out_dir: pathlib.Path, infos: list[dict], seed: int):
    lines = [
        "# Parity fixtures",
        "",
        f"Written by `tools/make_fixtures.py --seed {seed}` (random weights, 2 layers, real vocabularies),",
        "logits recorded with llama.cpp (llama-cpp-python 0.3.36): f32 KV cache, flash attention off,",
        "2 threads, one sequence at positions 0..n-1, logits for every position. Per fixture:",
        "`<name>.gguf` and `<name>.json` (`tokens`, `columns`, `logits[pos][col]`, `top[pos]` = top-16 ids).",
        "`margin` is the smallest gap between the k-th and (k+1)-th router logit that llama.cpp computed",
        "(all tokens, all layers). `numpy f64 forward` is the script's own float64 forward pass over the",
        "dequantized weights: llama.cpp rounds activations to the matmul's vec_dot type (q8_0/q8_K for",
        "quantized weights, f16/bf16 for those) and so differs from it by more than rounding.",
        "",
    ]
    for info in infos:
        s: Spec = info["spec"]
        shape = f"n_embd {s.n_embd}, heads {s.n_head}/{s.n_head_kv} x {s.head_dim}"
        if s.n_expert:
            shape += f", experts {s.n_expert} top-{s.n_expert_used} ff {s.n_ff_exp}"
            if s.n_ff_shexp:
                shape += f", shared ff {s.n_ff_shexp}"
        else:
            shape += f", ff {s.n_ff}"
        types = "; ".join(f"{k}: {'/'.join(v)}" for k, v in sorted(info["types"].items()))
        margin = f", margin {info['margin']:.3f}" if info["margin"] is not None else ""
        lines.append(
            f"- `{s.name}` — arch {s.arch}, ftype {s.ftype}, {shape}, "
            f"{'tied output' if s.tied else 'output.weight'}; vocab {info['vocab']}; "
            f"{info['n_tokens']} tokens, {info['top1_distinct']} distinct top-1{margin}; "
            f"logit std {info['logit_std']:.2f}, numpy f64 forward: max |diff| {info['np_max_diff']:.2g}, "
            f"same top-1 at {info['np_top1']}/{info['n_tokens']}; "
            f"gguf {info['gguf_size'] / 1e6:.2f} MB, json {info['json_size'] / 1e3:.0f} kB. "
            f"Types: {types}"
        )
    lines.append("")
    text = "\n".join(lines)
    path = out_dir / "MANIFEST.md"
    old = path.read_text() if path.exists() else ""
    # keep the sections of earlier --kv-type f16 / q8_0 runs, in the order they are in
    kept = []
    for kv_type in KV_TYPES[1:]:
        b = old.find(kv_section_markers(kv_type)[0])
        section = _split_kv_section(old, kv_type)[1]
        if section is not None:
            kept.append((b, section))
    for _, section in sorted(kept):
        text += "\n" + section + "\n"
    path.write_text(text)


def _split_kv_section(text: str, kv_type: str) -> tuple[str, str | None, str]:
    """MANIFEST.md text -> (before, kv_type's section including its marker lines or None, after)."""
    begin, end = kv_section_markers(kv_type)
    b = text.find(begin)
    e = text.find(end, b + 1) if b >= 0 else -1
    if b < 0 or e < 0:
        return text, None, ""
    e += len(end)
    return text[:b], text[b:e], text[e:]


def compare_with_kv(out_dir: pathlib.Path, info: dict, ref_kv_type: str = "f32") -> str:
    """The recorded logits against those of <name>.json (f32 KV cache) or <name>.kv_<ref_kv_type>.json,
    at the columns that file holds."""
    name = info["spec"].name
    path = out_dir / (f"{name}.json" if ref_kv_type == "f32" else f"{name}.kv_{ref_kv_type}.json")
    if not path.exists():
        return f"no {path.name} to compare with"
    ref = json.loads(path.read_text())
    if ref["tokens"] != [int(t) for t in info["tokens"]]:
        return f"tokens differ from {path.name}"
    cols = np.array(ref["columns"])
    a = np.array(ref["logits"], dtype=np.float64)
    b = np.asarray(info["logits"], dtype=np.float64)[:, cols]
    cos = float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))
    same = sum(r[0] == int(t) for r, t in zip(ref["top"], np.argmax(info["logits"], axis=1)))
    return (f"vs `{path.name}` ({ref_kv_type} KV) at its {len(cols)} columns: max |diff| {np.max(np.abs(a - b)):.2g}, "
            f"cosine {cos:.8f}, same top-1 at {same}/{len(ref['tokens'])}")


def write_kv_manifest_section(out_dir: pathlib.Path, infos: list[dict], kv_type: str):
    """Rewrite the `kv_type` section of MANIFEST.md (between kv_section_markers(kv_type)) and leave the
    rest of the file alone. Lines of fixtures not built in this run (--only) are kept."""
    path = out_dir / "MANIFEST.md"
    text = path.read_text() if path.exists() else ""
    before, old, after = _split_kv_section(text, kv_type)
    begin, end = kv_section_markers(kv_type)
    type_k, type_v = KV_CACHE_TYPES[kv_type]
    entries: dict[str, str] = {}
    for line in (old or "").splitlines():
        if line.startswith("- `"):
            entries[line[3:].split("`", 1)[0]] = line
    for info in infos:
        s: Spec = info["spec"]
        margin = f", margin {info['margin']:.3f}" if info["margin"] is not None else ""
        vs_f16 = ""
        if type_k != type_v and (out_dir / f"{s.name}.kv_f16.json").exists():
            vs_f16 = f"; {compare_with_kv(out_dir, info, 'f16')}"
        entries[s.name] = (
            f"- `{s.name}` — `{info['json_path'].name}` for `{s.name}.gguf` (unchanged): {kv_cache_desc(kv_type)}, "
            f"flash attention off; {info['n_tokens']} tokens, {info['top1_distinct']} distinct top-1{margin}; "
            f"{compare_with_kv(out_dir, info)}{vs_f16}; json {info['json_size'] / 1e3:.0f} kB."
        )
    order = [f.name for f in FIXTURES]
    names = sorted(entries, key=lambda n: (order.index(n) if n in order else len(order), n))
    if type_k == type_v:
        header = [
            f"## {kv_type.upper()} KV cache",
            "",
            f"Written by `tools/make_fixtures.py --kv-type {kv_type}`: the same models (`<name>.gguf`, rebuilt and",
            f"checked byte-identical) and tokens, logits recorded by llama.cpp with an {kv_type} K and V cache",
            f"(ggml type {GGML_TYPES[kv_type]}), flash attention off, otherwise as above. `<name>.kv_{kv_type}.json` "
            f"has the fields",
            f"of `<name>.json` plus `\"kv_type\": \"{kv_type}\"`. `margin` is that of the router logits "
            f"computed with the",
            f"{kv_type} cache (same experts as the float64 forward). `max |diff|`, `cosine` and top-1 compare with "
            f"`<name>.json`.",
        ]
    else:
        header = [
            f"## {type_k.upper()} K cache, {type_v.upper()} V cache",
            "",
            f"Written by `tools/make_fixtures.py --kv-type {kv_type}`: the same models (`<name>.gguf`, rebuilt and",
            f"checked byte-identical) and tokens, logits recorded by llama.cpp with a {type_k} K cache (ggml type "
            f"{GGML_TYPES[type_k]}),",
            f"an {type_v} V cache (ggml type {GGML_TYPES[type_v]}) and flash attention off (llama.cpp needs it only "
            f"for a quantized V",
            f"cache), otherwise as above; only for fixtures whose head dim is a multiple of 32 (a {type_k} block).",
            f"`<name>.kv_{kv_type}.json` has the fields of `<name>.json` plus `\"kv_type\": \"{kv_type}\"`. "
            f"`margin` is",
            f"that of the router logits computed with this cache (same experts as the float64 forward). `max |diff|`,",
            f"`cosine` and top-1 compare with `<name>.json` and, where it exists, `<name>.kv_f16.json`.",
        ]
    section = "\n".join([
        begin,
        "",
        *header,
        "",
        *[entries[n] for n in names],
        "",
        end,
    ])
    if old is None:
        before = before.rstrip("\n") + "\n\n" if before.strip() else ""
        after = "\n"
    path.write_text(before + section + after)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", required=True, type=pathlib.Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab-dir", type=pathlib.Path, default=pathlib.Path("/work/shared/vocab"),
                    help="folder holding the default vocab GGUFs (llama.cpp's ggml-vocab-*.gguf)")
    ap.add_argument("--vocab", action="append", default=[], metavar="SLOT=PATH",
                    help=f"replace a vocabulary slot ({', '.join(DEFAULT_VOCABS)}) by another vocab GGUF")
    ap.add_argument("--vocab-limit", type=int, default=None,
                    help="cut every vocabulary to its first N ids (0: never cut; default: per fixture)")
    ap.add_argument("--only", action="append", default=[], help="build only these fixtures")
    ap.add_argument("--kv-type", choices=KV_TYPES, default="f32",
                    help="type of llama.cpp's K and V cache (flash attention stays off). f32 (default): "
                         "write <name>.gguf and <name>.json. f16: keep the existing <name>.gguf (rebuilt "
                         "into a temporary folder and checked byte-identical, so pass the --seed/--vocab/"
                         "--vocab-limit it was made with), write <name>.kv_f16.json and the f16-KV "
                         "section of MANIFEST.md. q8_0: the same with a q8_0 K cache and an f16 V cache "
                         "(<name>.kv_q8_0.json, its own MANIFEST.md section); only for fixtures whose "
                         "head dim is a multiple of 32")
    args = ap.parse_args(argv)

    vocab_paths = {k: args.vocab_dir / v for k, v in DEFAULT_VOCABS.items()}
    for item in args.vocab:
        slot, _, path = item.partition("=")
        if slot not in vocab_paths or not path:
            ap.error(f"--vocab expects SLOT=PATH with SLOT in {list(vocab_paths)}")
        vocab_paths[slot] = pathlib.Path(path)
    specs = [s for s in FIXTURES if not args.only or s.name in args.only]
    if args.only and len(specs) != len(args.only):
        ap.error(f"unknown fixture in {args.only}; known: {[s.name for s in FIXTURES]}")
    if args.kv_type != "f32":
        problems = [p for p in (kv_head_dim_problem(s, args.kv_type) for s in specs) if p]
        if problems:
            ap.error(f"--kv-type {args.kv_type}: " + "; ".join(problems) + " (leave it out with --only)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lc = LlamaCpp()
    infos = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            print(f"{spec.name} ...", flush=True)
            info = make_fixture(spec, args.out_dir, vocab_paths, args.vocab_limit, args.seed, lc,
                                pathlib.Path(tmp), args.kv_type)
            print(f"  {info['gguf_size'] / 1e6:.2f} MB, {info['n_tokens']} tokens, "
                  f"top-1 distinct {info['top1_distinct']}, logit std {info['logit_std']:.2f}, "
                  f"margin {info['margin']}, numpy max diff {info['np_max_diff']:.3g}, "
                  f"numpy top-1 {info['np_top1']}/{info['n_tokens']}", flush=True)
            infos.append(info)
    if args.kv_type != "f32":
        write_kv_manifest_section(args.out_dir, infos, args.kv_type)
    elif not args.only:
        write_manifest(args.out_dir, infos, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
