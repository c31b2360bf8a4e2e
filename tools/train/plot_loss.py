#!/usr/bin/env python3
"""Draw the training loss curve (log.csv files from train.py, one per run segment) as a small PNG.

Several --log files are drawn as one history against tokens seen (the segments may use different
batch sizes); a dashed line marks where each continuation run starts.
"""
import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--log", action="append", default=None,
                    help="log.csv of a run segment, in order (repeatable; default: the first run)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    logs = args.log or ["/work/train-work/run/log.csv"]
    tok, loss, aux, vtok, vloss, starts = [], [], [], [], [], []
    for i, path in enumerate(logs):
        with open(path) as f:
            rows = list(csv.DictReader(f))
        if i > 0 and rows and tok:
            starts.append((tok[-1] * 1e6, last_step))
        for row in rows:
            t = int(row["tokens"]) / 1e6
            tok.append(t)
            loss.append(float(row["loss"]))
            aux.append(float(row["aux"]))
            if row["val_loss"]:
                vtok.append(t)
                vloss.append(float(row["val_loss"]))
            last_step = int(row["step"])
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=80)
    ax.plot(tok, loss, label="train (mean over logged steps)")
    ax.plot(vtok, vloss, "o-", ms=3, label="validation (held-out docs)")
    for t, step in starts:
        ax.axvline(t / 1e6, color="k", ls="--", lw=0.8)
        ax.text(t / 1e6, ax.get_ylim()[0] + 0.55 * (ax.get_ylim()[1] - ax.get_ylim()[0]),
                f" continued after\n step {step}", fontsize=7, va="top")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(tok, aux, color="gray", alpha=0.5, lw=1, label="load-balance aux (right)")
    ax2.set_ylabel("aux loss (1 = uniform)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
    ax.set_title("rustdoc-moe training loss", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
