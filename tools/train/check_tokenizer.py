#!/usr/bin/env python3
"""Check that llama.cpp's tokenizer (reading the GGUF vocab: gpt2 model, gpt-2 pre-tokenizer)
gives the same ids as the `tokenizers` BPE the model was trained with.

Usage: check_tokenizer.py --gguf models/rustdoc-moe-q8_0.gguf [--tokenizer tokenizer.json]
Exit code 1 when any passage differs.
"""
import argparse
import json
import sys

PASSAGES_FILES = [
    "/work/train-work/data/nomicon.txt",
    "/work/train-work/data/train.txt",
]

FIXED = [
    "fn main() {\n    println!(\"Hello, world!\");\n}\n",
    "Hello   world\n\n\n  trailing spaces   \n\tTab\r\nWindows line",
    "It's the borrow checker's job; they'll see we're done. 12345 + 0.5e-3 = ???",
    "unicode: naïve café — “quotes” 日本語 emoji 🦀 and 𝔘𝔫𝔦",
    "<|endoftext|> is a special token in text",
    "    let x: Vec<u8> = vec![1, 2, 3];\n    x.iter().map(|b| *b as u32).sum::<u32>()",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokenizer", default="/work/train-work/data/tokenizer.json")
    ap.add_argument("--n-passages", type=int, default=20)
    ap.add_argument("--out-json", default=None)
    args = ap.parse_args()

    import llama_cpp
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    llm = llama_cpp.Llama(model_path=args.gguf, vocab_only=True, verbose=False)

    passages = list(FIXED)
    for path in PASSAGES_FILES:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        step = max(1, len(text) // args.n_passages)
        passages += [text[i : i + 1500] for i in range(0, len(text), step)][: args.n_passages]

    n_ok, n_tok, fails = 0, 0, []
    for p in passages:
        ref = tok.encode(p).ids
        got = llm.tokenize(p.encode("utf-8"), add_bos=False, special=True)
        n_tok += len(ref)
        if ref == list(got):
            n_ok += 1
        else:
            i = next((k for k, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
            fails.append({"passage": p[:80], "first_diff_at": i, "tokenizers": ref[i : i + 5], "llama": list(got[i : i + 5])})
    res = {"passages": len(passages), "identical": n_ok, "tokens_compared": n_tok, "failures": fails[:10]}
    print(json.dumps(res, indent=1, ensure_ascii=False))
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump(res, f, indent=1, ensure_ascii=False)
    sys.exit(0 if n_ok == len(passages) else 1)


if __name__ == "__main__":
    main()
