#!/usr/bin/env python3
"""Merge the training record (run.json from train.py), the data statistics, the evaluation and
verification results and the GGUF's size/sha256 into models/<name>.json."""
import argparse
import hashlib
import json
import os


def load(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="/work/train-work/run/run.json")
    ap.add_argument("--stats", default="/work/train-work/data/train-stats.json")
    ap.add_argument("--eval", default=None)
    ap.add_argument("--verify", default=None)
    ap.add_argument("--tokcheck", default=None)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--command", action="append", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rec = load(args.run)
    rec["data"] = {
        "source": "rustc sysroot share/doc/rust/html (MIT OR Apache-2.0), extracted by tools/train/extract_text.py",
        "per_book_chars": load(args.stats),
    }
    with open(args.gguf, "rb") as f:
        blob = f.read()
    rec["gguf"] = {"file": os.path.basename(args.gguf), "bytes": len(blob),
                   "sha256": hashlib.sha256(blob).hexdigest()}
    if args.eval:
        rec["heldout_eval"] = load(args.eval)
    if args.verify:
        rec["llama_cpp_verification"] = load(args.verify)
    if args.tokcheck:
        rec["tokenizer_check"] = load(args.tokcheck)
    rec["notes"] = args.note
    rec["commands"] = args.command
    with open(args.out, "w") as f:
        json.dump(rec, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
