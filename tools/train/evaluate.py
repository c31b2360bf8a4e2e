#!/usr/bin/env python3
"""Held-out evaluation of the trained MoE on the Rustonomicon (never seen in training).

* Perplexity with the PyTorch model over non-overlapping 512-token windows, scored two ways:
  - "second half": only predictions from positions n_ctx/2 .. n_ctx-2 (as llama-perplexity does),
  - "all": every prediction in the window (positions 0 .. n_ctx-2).
* The same token sets scored by a unigram model fit on the training tokens (add-one smoothing).
* Perplexity split by token kind (code block vs prose), from the spans written by extract_text.py.
* Expert utilisation: per layer, the share of routing slots (top-k picks) each expert receives,
  separately for prose and code tokens; written to JSON and drawn as a heatmap.
* --q8: evaluate with weights round-tripped through Q8_0 (what the GGUF holds).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import MoeConfig, MoeModel  # noqa: E402


def load_model(ckpt_path, q8=False):
    ck = torch.load(ckpt_path, weights_only=False)
    cfg = MoeConfig(**ck["cfg"])
    model = MoeModel(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    if q8:
        from export_gguf import dequantize_q8_0, quantize_q8_0

        with torch.no_grad():
            for name, p in model.named_parameters():
                # Same choice as export_gguf.py: matrices Q8_0 except the router.
                if p.dim() >= 2 and "router" not in name and p.shape[-1] % 32 == 0:
                    a = p.detach().numpy()
                    p.copy_(torch.from_numpy(dequantize_q8_0(quantize_q8_0(a), a.shape[-1])))
    return cfg, model


def tokenize_with_kinds(tokenizer_json, text, spans):
    """Token ids and a per-token kind (1 = code, 0 = prose) from the character spans."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    enc = tok.encode(text)
    ids = np.array(enc.ids, dtype=np.int64)
    starts = np.array([o[0] for o in enc.offsets])
    code_mask = np.zeros(len(text) + 1, dtype=np.int8)
    for s, e, k in spans:
        if k == "code":
            code_mask[s:e] = 1
    return ids, code_mask[starts]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="/work/train-work/run/final.pt")
    ap.add_argument("--data", default="/work/train-work/data")
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-png", default=None)
    ap.add_argument("--max-windows", type=int, default=0, help="0 = all windows")
    ap.add_argument("--q8", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg, model = load_model(args.ckpt, args.q8)
    T = cfg.n_ctx
    with open(os.path.join(args.data, "nomicon.txt"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(args.data, "nomicon-spans.json")) as f:
        spans = json.load(f)
    ids, kinds = tokenize_with_kinds(os.path.join(args.data, "tokenizer.json"), text, spans)
    n_win = len(ids) // T
    if args.max_windows:
        n_win = min(n_win, args.max_windows)

    # Unigram baseline fit on the training tokens, add-one smoothing.
    train = np.load(os.path.join(args.data, "tokens.npz"))["train"]
    counts = np.bincount(train, minlength=cfg.vocab_size).astype(np.float64) + 1.0
    uni_logp = np.log(counts / counts.sum())

    nll_all, nll_half, uni_all, uni_half = [], [], [], []
    kind_all = []
    route = np.zeros((2, cfg.n_layer, cfg.n_expert), dtype=np.int64)  # [prose/code, layer, expert]
    top1 = np.zeros((2, cfg.n_layer, cfg.n_expert), dtype=np.int64)
    with torch.no_grad():
        for w0 in range(0, n_win, 4):
            wins = list(range(w0, min(n_win, w0 + 4)))
            x = torch.from_numpy(np.stack([ids[w * T : (w + 1) * T] for w in wins]))
            logits, auxes = model(x)
            logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
            tgt = x[:, 1:]
            nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).numpy()  # [B, T-1]
            k_tgt = np.stack([kinds[w * T + 1 : (w + 1) * T] for w in wins])
            u = -uni_logp[tgt.numpy()]
            nll_all.append(nll.reshape(-1))
            uni_all.append(u.reshape(-1))
            kind_all.append(k_tgt.reshape(-1))
            nll_half.append(nll[:, T // 2 :].reshape(-1))
            uni_half.append(u[:, T // 2 :].reshape(-1))
            k_in = np.stack([kinds[w * T : (w + 1) * T] for w in wins]).reshape(-1)
            for li, aux in enumerate(auxes):
                topk = aux["topk"].numpy()  # [B*T, k]
                for kind in (0, 1):
                    sel = topk[k_in == kind]
                    route[kind, li] += np.bincount(sel.reshape(-1), minlength=cfg.n_expert)
                    top1[kind, li] += np.bincount(sel[:, 0], minlength=cfg.n_expert)
            print(f"windows {wins[-1] + 1}/{n_win}", flush=True)

    nll_all, uni_all, kind_all = map(np.concatenate, (nll_all, uni_all, kind_all))
    nll_half, uni_half = np.concatenate(nll_half), np.concatenate(uni_half)
    share = route / route.sum(axis=2, keepdims=True)
    # Total-variation distance between prose and code routing distributions, per layer.
    tv = 0.5 * np.abs(share[0] - share[1]).sum(axis=1)
    res = {
        "heldout": "Rustonomicon (nomicon/), extracted by extract_text.py",
        "weights": "Q8_0 round-trip (as in the GGUF)" if args.q8 else "f32 (PyTorch checkpoint)",
        "n_tokens": int(len(ids)),
        "n_windows": int(n_win),
        "window": T,
        "model": {
            "ppl_second_half": math.exp(nll_half.mean()),
            "ppl_all": math.exp(nll_all.mean()),
            "ppl_all_prose": math.exp(nll_all[kind_all == 0].mean()),
            "ppl_all_code": math.exp(nll_all[kind_all == 1].mean()),
            "scored_second_half": int(len(nll_half)),
            "scored_all": int(len(nll_all)),
        },
        "unigram_add_one": {
            "ppl_second_half": math.exp(uni_half.mean()),
            "ppl_all": math.exp(uni_all.mean()),
            "ppl_all_prose": math.exp(uni_all[kind_all == 0].mean()),
            "ppl_all_code": math.exp(uni_all[kind_all == 1].mean()),
        },
        "token_counts": {"prose": int((kind_all == 0).sum()), "code": int((kind_all == 1).sum())},
        "expert_share": {
            "prose": share[0].round(4).tolist(),
            "code": share[1].round(4).tolist(),
            "note": "per layer, share of top-k routing slots per expert (rows sum to 1)",
        },
        "top1_counts": {"prose": top1[0].tolist(), "code": top1[1].tolist()},
        "prose_vs_code_total_variation_per_layer": tv.round(4).tolist(),
    }
    with open(args.out_json, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res[k] for k in ("model", "unigram_add_one", "prose_vs_code_total_variation_per_layer")},
                     indent=1))

    if args.out_png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axs = plt.subplots(1, 3, figsize=(10, 2.9), dpi=80)
        diff = share[1] - share[0]
        panels = [(share[0], "prose", "viridis", 0, share.max()), (share[1], "code", "viridis", 0, share.max()),
                  (diff, "code − prose", "coolwarm", -np.abs(diff).max(), np.abs(diff).max())]
        for ax, (m, title, cmap, lo, hi) in zip(axs, panels):
            im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("expert")
            ax.set_xticks(range(cfg.n_expert))
            ax.set_yticks(range(cfg.n_layer))
            ax.set_ylabel("layer")
            for (i, j), v in np.ndenumerate(m):
                ax.text(j, i, f"{v * 100:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if cmap == "viridis" and v < 0.6 * hi else "black")
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.suptitle("Share of routing slots per expert (%), held-out Rustonomicon", fontsize=10)
        fig.tight_layout()
        fig.savefig(args.out_png)
        print(f"wrote {args.out_png} ({os.path.getsize(args.out_png)} bytes)")


if __name__ == "__main__":
    main()
