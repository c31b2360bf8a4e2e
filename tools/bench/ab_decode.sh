#!/bin/bash
# Decode A/B of several moe-edge binaries in alternating rounds (tg32, 2 threads, 3 repetitions
# each), so minute-to-minute noise on a shared machine hits every binary alike.
#   tools/bench/ab_decode.sh ROUNDS MODEL.gguf BINARY_A BINARY_B [...]
ROUNDS=$1; MODEL=$2; shift 2
for r in $(seq 1 "$ROUNDS"); do
  for b in "$@"; do
    tg=$("$b" bench -m "$MODEL" -p 0 -n 32 -t 2 -r 3 2>&1 | grep -E "\| tg32 \|" | sed 's/.*| \([0-9.]*\) ±.*/\1/')
    echo -n "$(basename "$b")=$tg  "
  done
  echo
done
