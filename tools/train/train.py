#!/usr/bin/env python3
"""Train the rustdoc MoE (qwen3moe layout) on the extracted Rust documentation text.

Seeded and reproducible for a given machine/torch version (same seed -> same data order
and init). AdamW, linear warmup + cosine decay, Switch-style load-balancing loss.
Writes (under --work, outside the repo): tokens.npz, log.csv, ckpt.pt (periodic, resumable),
final.pt, run.json (all settings and results).

Continuation (--init-ckpt): start from a previous run's ckpt.pt (weights and AdamW moments),
number steps, tokens and wall time on from it, and take the data windows that continue the same
seeded stream (the previous run drew --prev-batch windows per step). With --stop-at-unix the run
stops itself before that wall-clock time and the cosine decay follows elapsed time instead of
steps: lr = peak * min(1, (s+1)/warmup) * (min_ratio + (1-min_ratio) * (1+cos(pi*t))/2), t = the
fraction of the time budget used. Every step's LR is written to lr.csv so the run can be replayed.
"""
import argparse
import csv
import json
import math
import os
import platform
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import MoeConfig, MoeModel, count_params, load_balance_loss  # noqa: E402

EOT = "<|endoftext|>"


def prepare_tokens(train_txt, tokenizer_json, out_npz, val_frac, seed):
    """Tokenize documents; hold out val_frac of the documents (seeded choice) for validation."""
    if os.path.exists(out_npz):
        z = np.load(out_npz)
        return z["train"], z["val"]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    eot = tok.token_to_id(EOT)
    with open(train_txt, encoding="utf-8") as f:
        docs = [d.strip("\n") for d in f.read().split(f"\n{EOT}\n")]
    docs = [d for d in docs if d]
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    n_val = max(1, int(round(len(docs) * val_frac)))
    val_set = set(order[:n_val])
    enc = tok.encode_batch(docs)
    train, val = [], []
    for i, e in enumerate(enc):
        (val if i in val_set else train).extend(e.ids + [eot])
    train = np.array(train, dtype=np.uint16)
    val = np.array(val, dtype=np.uint16)
    np.savez(out_npz, train=train, val=val)
    return train, val


def lr_at(step, total, warmup, peak, min_ratio):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def batch_from(data, starts, T):
    idx = torch.from_numpy(np.stack([data[s : s + T + 1].astype(np.int64) for s in starts]))
    return idx[:, :-1], idx[:, 1:]


@torch.no_grad()
def evaluate_loss(model, data, T, n_windows):
    """Mean next-token loss over n_windows evenly spaced, non-overlapping windows."""
    model.eval()
    n_avail = (len(data) - 1) // T
    picks = np.linspace(0, n_avail - 1, num=min(n_windows, n_avail)).astype(int)
    tot, cnt = 0.0, 0
    for i in range(0, len(picks), 4):
        x, y = batch_from(data, [p * T for p in picks[i : i + 4]], T)
        logits, _ = model(x)
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        cnt += y.numel()
    model.train()
    return tot / cnt


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="/work/train-work/data")
    ap.add_argument("--work", default="/work/train-work/run")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--aux-coef", type=float, default=0.01)
    ap.add_argument("--val-frac", type=float, default=0.03)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--ckpt-every-s", type=float, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ff-exp", type=int, default=512)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--bench", type=int, default=0, help="only time this many steps")
    ap.add_argument("--init-ckpt", default=None, help="continue from this ckpt.pt of an earlier run")
    ap.add_argument("--prev-batch", type=int, default=4, help="windows per step in the --init-ckpt run")
    ap.add_argument("--stop-at-unix", type=float, default=0.0, help="stop before this time (seconds since epoch)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    os.makedirs(args.work, exist_ok=True)

    train, val = prepare_tokens(
        os.path.join(args.data, "train.txt"),
        os.path.join(args.data, "tokenizer.json"),
        os.path.join(args.data, "tokens.npz"),
        args.val_frac,
        args.seed,
    )
    print(f"train tokens {len(train)}  val tokens {len(val)}", flush=True)

    cfg = MoeConfig(n_ctx=args.ctx, n_ff_exp=args.n_ff_exp, n_layer=args.n_layer)
    model = MoeModel(cfg)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    params = count_params(cfg)
    n_real = sum(p.numel() for p in model.parameters())
    assert n_real == params["total"], (n_real, params)
    print(f"params total {params['total']}  active/token {params['active_per_token']}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "tok_embd" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "tok_embd" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    # Data order: one seeded generator draws all window starts.
    T = args.ctx
    data_rng = np.random.default_rng(args.seed)
    # Continuation: global step offset, tokens and wall time carried over from the earlier run.
    offset, prev_wall, prev = 0, 0.0, None
    if args.init_ckpt:
        prev = torch.load(args.init_ckpt, weights_only=False)
        offset, prev_wall = prev["step"], prev["wall"]
    skip = offset * args.prev_batch
    # One draw of the whole stream; its first `skip` windows are the ones the earlier run used.
    flat = data_rng.integers(0, len(train) - T - 1, size=skip + args.steps * args.batch)
    all_starts = flat[skip:].reshape(args.steps, args.batch)
    prev_tokens = skip * T

    step0, wall_before = 0, 0.0
    sched_t0 = time.time()
    log_path = os.path.join(args.work, "log.csv")
    lr_path = os.path.join(args.work, "lr.csv")
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step0, wall_before = ck["step"], ck["wall"]
        sched_t0 = ck.get("sched_t0", sched_t0)
        print(f"resumed at step {step0}", flush=True)
    elif not args.bench:
        if prev is not None:
            model.load_state_dict(prev["model"])
            opt.load_state_dict(prev["opt"])
            print(f"continuing from {args.init_ckpt} (step {offset}, wall {prev_wall:.0f}s)", flush=True)
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(["step", "lr", "loss", "aux", "val_loss", "tokens", "wall_s"])
        with open(lr_path, "w") as f:
            f.write("step,lr\n")
    del prev

    t_start = time.time()
    last_ckpt = t_start
    tokens_per_step = args.batch * T
    model.train()
    acc_loss, acc_aux, acc_n = 0.0, 0.0, 0
    val_loss = float("nan")
    steps_total = args.bench if args.bench else args.steps
    stopped_by_time = False
    step_times = []
    for step in range(step0, steps_total):
        t_step = time.time()
        if args.stop_at_unix:
            est = max(step_times[-5:]) if step_times else 0.0
            if t_step + 1.2 * est > args.stop_at_unix:
                stopped_by_time = True
                break
            frac = min(1.0, (t_step - sched_t0) / max(1.0, args.stop_at_unix - sched_t0))
            warm = min(1.0, (step + 1) / args.warmup)
            lr = args.lr * warm * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        else:
            lr = lr_at(step, args.steps, args.warmup, args.lr, args.min_lr_ratio)
        if not args.bench:
            with open(lr_path, "a") as f:
                f.write(f"{offset + step + 1},{lr:.8g}\n")
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch_from(train, all_starts[step], T)
        logits, auxes = model(x)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1))
        aux = load_balance_loss(auxes, cfg.n_expert, cfg.n_expert_used)
        opt.zero_grad(set_to_none=True)
        (loss + args.aux_coef * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        acc_loss += loss.item()
        acc_aux += aux.item()
        acc_n += 1
        wall = wall_before + time.time() - t_start
        step_times.append(time.time() - t_step)
        if args.bench:
            print(f"step {step} loss {loss.item():.4f} aux {aux.item():.4f} {wall:.1f}s", flush=True)
            continue
        done = step + 1
        gdone = offset + done
        is_eval = gdone % args.eval_every == 0 or done == args.steps
        if done % args.log_every == 0 or is_eval:
            if is_eval:
                val_loss = evaluate_loss(model, val, T, args.eval_windows)
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow(
                    [gdone, f"{lr:.6g}", f"{acc_loss / acc_n:.5f}", f"{acc_aux / acc_n:.5f}",
                     f"{val_loss:.5f}" if is_eval else "", prev_tokens + done * tokens_per_step,
                     f"{prev_wall + wall:.1f}"]
                )
            print(f"step {gdone} ({done}/{args.steps}) lr {lr:.2e} loss {acc_loss / acc_n:.4f} aux {acc_aux / acc_n:.4f}"
                  + (f" val {val_loss:.4f}" if is_eval else "") + f" {wall:.0f}s", flush=True)
            acc_loss, acc_aux, acc_n = 0.0, 0.0, 0
        if time.time() - last_ckpt > args.ckpt_every_s or done == args.steps:
            wall = wall_before + time.time() - t_start
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done, "wall": wall,
                        "cfg": cfg.to_dict(), "sched_t0": sched_t0}, ckpt_path + ".tmp")
            os.replace(ckpt_path + ".tmp", ckpt_path)
            last_ckpt = time.time()
    if args.bench:
        return

    wall = wall_before + time.time() - t_start
    done = step if stopped_by_time else steps_total
    if stopped_by_time:
        print(f"stopped by --stop-at-unix after {done} steps", flush=True)
    torch.save({"model": model.state_dict(), "cfg": cfg.to_dict()}, os.path.join(args.work, "final.pt"))
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done, "wall": wall,
                "cfg": cfg.to_dict(), "sched_t0": sched_t0}, ckpt_path)
    # Final losses: train loss on a fixed sample of training windows, val on all val windows.
    final_val = evaluate_loss(model, val, T, 64)
    final_train = evaluate_loss(model, train, T, 32)
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    run = {
        "model_config": cfg.to_dict(),
        "params": params,
        "seed": args.seed,
        "steps": done,
        "batch_size": args.batch,
        "context": T,
        "tokens_per_step": tokens_per_step,
        "tokens_seen": done * tokens_per_step,
        "train_tokens": int(len(train)),
        "val_tokens": int(len(val)),
        "epochs": done * tokens_per_step / len(train),
        "optimizer": {"name": "AdamW", "lr_peak": args.lr, "betas": [0.9, 0.95], "eps": 1e-8,
                      "weight_decay": args.weight_decay, "weight_decay_on": "2-D matrices except tok_embd",
                      "grad_clip": args.clip},
        "schedule": {"warmup_steps": args.warmup, "decay": "cosine", "min_lr_ratio": args.min_lr_ratio},
        "aux_loss": {"kind": "Switch-Transformer load balancing, mean over layers", "coef": args.aux_coef},
        "val_frac_documents": args.val_frac,
        "final_train_loss": final_train,
        "final_val_loss": final_val,
        "wall_time_s": wall,
        "continuation": {
            "init_ckpt": args.init_ckpt,
            "step_offset": offset,
            "prev_tokens": prev_tokens,
            "prev_wall_s": prev_wall,
            "total_steps": offset + done,
            "total_tokens": prev_tokens + done * tokens_per_step,
            "total_wall_s": prev_wall + wall,
            "stop_at_unix": args.stop_at_unix,
            "stopped_by_time": stopped_by_time,
            "schedule_by_time": bool(args.stop_at_unix),
            "max_steps": args.steps,
        },
        "hardware": {"cpu": cpu, "threads": args.threads, "note": "2-core VM shared with compile jobs"},
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }
    with open(os.path.join(args.work, "run.json"), "w") as f:
        json.dump(run, f, indent=1)
    print(json.dumps({"final_train_loss": final_train, "final_val_loss": final_val, "wall_s": wall}), flush=True)


if __name__ == "__main__":
    main()
