#!/bin/bash
# Alternating rounds of llama-bench and `moe-edge bench` at forced kernel levels, on one model
# and one set of flags, so minute-to-minute noise on a shared machine hits every program alike.
# For CPUs without AVX2: point LLAMA_BIN at a llama.cpp built with AVX, AVX2, FMA and F16C off
# (tools/README.md) and set LEVELS="ssse3 scalar".
#   MODEL=models/rustdoc-moe-q8_0.gguf ARGS="-p 64 -n 16 -t 2 -r 3" ROUNDS=3 tools/bench/level_bench.sh
LLAMA_BIN=${LLAMA_BIN:-/work/llama-sse-bin}
MOE_EDGE=${MOE_EDGE:-target/release/moe-edge}
MODEL=${MODEL:-models/rustdoc-moe-q8_0.gguf}
ARGS=${ARGS:--p 64 -n 16 -t 2 -r 3}
LEVELS=${LEVELS:-ssse3 scalar}
ROUNDS=${ROUNDS:-3}
export LD_LIBRARY_PATH=$LLAMA_BIN
for r in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2086
  l=$("$LLAMA_BIN/llama-bench" -m "$MODEL" $ARGS 2>&1 | grep -E "\| +(pp|tg)[0-9]+ " | awk -F'|' '{print $(NF-1)}' | awk '{print $1}' | tr '\n' ' ')
  line="round $r llama.cpp(pp tg): $l"
  for lv in $LEVELS; do
    # shellcheck disable=SC2086
    o=$(MOE_EDGE_KERNELS=$lv "$MOE_EDGE" bench -m "$MODEL" $ARGS 2>&1 | grep -E "\| +(pp|tg)[0-9]+ " | sed 's/.*| \([0-9.]*\) ±.*/\1/' | tr '\n' ' ')
    line="$line | $lv(pp tg): $o"
  done
  echo "$line"
done
