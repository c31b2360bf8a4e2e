#!/usr/bin/env python3
"""Run the exported GGUF through llama.cpp (llama-cpp-python) and compare its logits with the
PyTorch model on a held-out Rustonomicon passage: cosine similarity per position, top-1
agreement, max |diff|. The PyTorch reference is run twice: with f32 weights and with weights
round-tripped through Q8_0 (what the GGUF holds). llama.cpp runs with an F32 KV cache.
Also prints short completions from llama.cpp: greedy (compared with the PyTorch greedy
continuation) for --prompt and each --extra-prompt, and one sampled completion per prompt
(temperature --temp, seed --sample-seed, llama.cpp's default top-k 40 / top-p 0.95 / min-p 0.05,
no repeat penalty).

Usage: verify_llama.py --gguf models/rustdoc-moe-q8_0.gguf [--ckpt final.pt] [--out-json x.json]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate import load_model  # noqa: E402


def compare(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
        "mean_abs_diff": float(np.abs(a - b).mean()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ckpt", default="/work/train-work/run/final.pt")
    ap.add_argument("--tokenizer", default="/work/train-work/data/tokenizer.json")
    ap.add_argument("--passage", default="/work/train-work/data/nomicon.txt")
    ap.add_argument("--offset", type=int, default=20000, help="character offset of the passage")
    ap.add_argument("--n-tokens", type=int, default=256)
    ap.add_argument("--prompt", default="The borrow checker")
    ap.add_argument("--gen-tokens", type=int, default=60)
    ap.add_argument("--extra-prompt", action="append", default=[], help="more prompts (repeatable)")
    ap.add_argument("--temp", type=float, default=0.8)
    ap.add_argument("--sample-seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import llama_cpp
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    with open(args.passage, encoding="utf-8") as f:
        text = f.read()[args.offset : args.offset + 8 * args.n_tokens]
    ids = tok.encode(text).ids[: args.n_tokens]

    llm = llama_cpp.Llama(
        model_path=args.gguf, n_ctx=512, n_batch=512, n_ubatch=512, logits_all=True,
        type_k=0, type_v=0, n_threads=args.threads, n_threads_batch=args.threads, verbose=False, seed=0,
    )
    llama_ids = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))[: args.n_tokens]
    llm.reset()
    llm.eval(ids)
    ll = np.array(llm.scores[: len(ids)], dtype=np.float32)

    res = {"gguf": os.path.basename(args.gguf), "n_positions": len(ids),
           "passage_offset_chars": args.offset, "tokenizer_ids_equal": llama_ids == ids}
    for label, q8 in (("vs_pytorch_q8_weights", True), ("vs_pytorch_f32_weights", False)):
        _, model = load_model(args.ckpt, q8=q8)
        with torch.no_grad():
            pt = model(torch.tensor([ids]))[0][0].numpy()
        res[label] = compare(ll, pt)

    # Greedy sample from llama.cpp, and the PyTorch (Q8_0 weights) greedy continuation for comparison.
    out = llm.create_completion(args.prompt, max_tokens=args.gen_tokens, temperature=0.0, top_k=1,
                                repeat_penalty=1.0)
    res["greedy_prompt"] = args.prompt
    res["greedy_llama_cpp"] = out["choices"][0]["text"]
    _, model = load_model(args.ckpt, q8=True)
    cur = tok.encode(args.prompt).ids
    with torch.no_grad():
        for _ in range(args.gen_tokens):
            nxt = int(model(torch.tensor([cur[-512:]]))[0][0, -1].argmax())
            if nxt == tok.token_to_id("<|endoftext|>"):
                break
            cur.append(nxt)
    res["greedy_pytorch_q8"] = tok.decode(cur[len(tok.encode(args.prompt).ids):])
    res["greedy_texts_equal"] = res["greedy_pytorch_q8"] == res["greedy_llama_cpp"]
    res["greedy_extra"] = {}
    for p in args.extra_prompt:
        out = llm.create_completion(p, max_tokens=args.gen_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0)
        res["greedy_extra"][p] = out["choices"][0]["text"]
    res["sampled"] = {"temperature": args.temp, "seed": args.sample_seed, "top_k": 40, "top_p": 0.95,
                      "min_p": 0.05, "repeat_penalty": 1.0, "max_tokens": args.gen_tokens, "texts": {}}
    for p in [args.prompt] + args.extra_prompt:
        llm.reset()
        out = llm.create_completion(p, max_tokens=args.gen_tokens, temperature=args.temp, top_k=40, top_p=0.95,
                                    min_p=0.05, repeat_penalty=1.0, seed=args.sample_seed)
        res["sampled"]["texts"][p] = out["choices"][0]["text"]
    print(json.dumps(res, indent=1, ensure_ascii=False))
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump(res, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
