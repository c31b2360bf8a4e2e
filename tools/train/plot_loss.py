#!/usr/bin/env python3
"""Draw the training loss curve (log.csv from train.py) as a small PNG."""
import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--log", default="/work/train-work/run/log.csv")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    steps, loss, aux, vsteps, vloss = [], [], [], [], []
    with open(args.log) as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            loss.append(float(row["loss"]))
            aux.append(float(row["aux"]))
            if row["val_loss"]:
                vsteps.append(int(row["step"]))
                vloss.append(float(row["val_loss"]))
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=80)
    ax.plot(steps, loss, label="train (mean over logged steps)")
    ax.plot(vsteps, vloss, "o-", label="validation (held-out docs)")
    ax.set_xlabel("step (2,048 tokens each)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(steps, aux, color="gray", alpha=0.5, lw=1, label="load-balance aux (right)")
    ax2.set_ylabel("aux loss (1 = uniform)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8)
    ax.set_title("rustdoc-moe training loss", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
