#!/bin/bash
# Prompt and decode A/B of several moe-edge binaries in alternating rounds (pp128 and tg32,
# 2 threads, 2 repetitions each, no bandwidth probe), so minute-to-minute noise on a shared
# machine hits every binary alike. Prints one line per round: binary=pp/tg ...
#   tools/bench/ab_bench.sh ROUNDS MODEL.gguf BINARY_A BINARY_B [...]
ROUNDS=$1; MODEL=$2; shift 2
for r in $(seq 1 "$ROUNDS"); do
  for b in "$@"; do
    out=$("$b" bench -m "$MODEL" -p 128 -n 32 -t 2 -r 2 --no-roofline 2>&1)
    pp=$(echo "$out" | grep -E "\| pp128 \|" | sed 's/.*| \([0-9.]*\) ±.*/\1/')
    tg=$(echo "$out" | grep -E "\| tg32 \|" | sed 's/.*| \([0-9.]*\) ±.*/\1/')
    echo -n "$(basename "$b")=$pp/$tg  "
  done
  echo
done
