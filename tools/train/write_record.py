#!/usr/bin/env python3
"""Merge the training record (run.json from train.py; with --prev-run, the run segments in order),
the data statistics, the evaluation and verification results and the GGUF's size/sha256 into
models/<name>.json."""
import argparse
import hashlib
import json
import os
import re

SHARED = ("model_config", "params", "seed", "context", "train_tokens", "val_tokens", "val_frac_documents",
          "aux_loss", "torch_version", "python_version")
PER_RUN = ("steps", "batch_size", "tokens_per_step", "tokens_seen", "optimizer", "schedule", "final_train_loss",
           "final_val_loss", "wall_time_s", "hardware", "continuation")


def load(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def llama_ppl(path):
    """Final estimate and chunk count from a llama-perplexity log."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
    if not m:
        raise ValueError(f"no final estimate in {path}")
    chunks = re.search(r"calculating perplexity over (\d+) chunks", text)
    return {"ppl": float(m.group(1)), "ppl_err": float(m.group(2)),
            "chunks": int(chunks.group(1)) if chunks else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="/work/train-work/run/run.json")
    ap.add_argument("--prev-run", action="append", default=[], help="run.json of earlier segments, in order")
    ap.add_argument("--stats", default="/work/train-work/data/train-stats.json")
    ap.add_argument("--eval", default=None)
    ap.add_argument("--eval-q8", default=None)
    ap.add_argument("--llama-ppl-log", default=None, help="output of llama-perplexity on the held-out text")
    ap.add_argument("--llama-ppl-command", default=None)
    ap.add_argument("--verify", default=None)
    ap.add_argument("--tokcheck", default=None)
    ap.add_argument("--extra", action="append", default=[], help="KEY=path.json merged in as rec[KEY]")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--command", action="append", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    last = load(args.run)
    if args.prev_run:
        runs = [load(p) for p in args.prev_run] + [last]
        rec = {k: last[k] for k in SHARED if k in last}
        rec["total_steps"] = sum(r["steps"] for r in runs)
        rec["tokens_seen"] = sum(r["tokens_seen"] for r in runs)
        rec["epochs"] = rec["tokens_seen"] / last["train_tokens"]
        rec["wall_time_s"] = sum(r["wall_time_s"] for r in runs)
        rec["final_train_loss"] = last["final_train_loss"]
        rec["final_val_loss"] = last["final_val_loss"]
        rec["runs"] = [{k: r[k] for k in PER_RUN if k in r} for r in runs]
    else:
        rec = last
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
    if args.eval_q8:
        q8 = load(args.eval_q8)
        rec["heldout_eval_q8_weights"] = {"weights": q8["weights"], "model": q8["model"]}
    if args.llama_ppl_log:
        rec["llama_perplexity"] = {"command": args.llama_ppl_command, **llama_ppl(args.llama_ppl_log)}
    if args.verify:
        rec["llama_cpp_verification"] = load(args.verify)
    if args.tokcheck:
        rec["tokenizer_check"] = load(args.tokcheck)
    for kv in args.extra:
        key, path = kv.split("=", 1)
        rec[key] = load(path)
    rec["notes"] = args.note
    rec["commands"] = args.command
    with open(args.out, "w") as f:
        json.dump(rec, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
