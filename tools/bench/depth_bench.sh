#!/bin/bash
# Generation at depth: alternating rounds of llama-bench and moe-edge bench (f16 KV cache, the
# default of both, then moe-edge with an f32 cache) with tests starting from a context of 0, 512
# and 2048 tokens. Optionally OLD (another moe-edge binary) at depth 0.
#   ROUNDS=3 MOE_EDGE=target/release/moe-edge tools/bench/depth_bench.sh
LLAMA_BIN=${LLAMA_BIN:-/work/llama-build/bin}
MOE_EDGE=${MOE_EDGE:-target/release/moe-edge}
M=${MODEL:-/work/bench-models/olmoe-q4_0.gguf}
export LD_LIBRARY_PATH=$LLAMA_BIN
for r in $(seq 1 ${ROUNDS:-3}); do
 for D in 0 512 2048; do
  l=$($LLAMA_BIN/llama-bench -m $M -p 0 -n 32 -d $D -t 2 -r 2 2>&1 | grep tg32 | awk -F'|' '{print $(NF-1)}' | awk '{print $1}')
  o16=$("$MOE_EDGE" bench -m $M -p 0 -n 32 -d $D -t 2 -r 2 2>&1 | grep -E "tg32|reached" | sed 's/.*| \([0-9.]*\) ±.*/\1/; s/.*reached \([0-9]*\) %.*/roof=\1%/' | tr '\n' ' ')
  o32=$("$MOE_EDGE" bench -m $M -p 0 -n 32 -d $D -t 2 -r 2 -ctk f32 -ctv f32 2>&1 | grep -E "tg32|reached" | sed 's/.*| \([0-9.]*\) ±.*/\1/; s/.*reached \([0-9]*\) %.*/roof=\1%/' | tr '\n' ' ')
  old=""
  if [ $D = 0 ] && [ -n "$OLD" ]; then old=$("$OLD" bench -m $M -p 0 -n 32 -t 2 -r 2 2>&1 | grep -E "tg32" | sed 's/.*| \([0-9.]*\) ±.*/\1/'); fi
  echo "round $r d$D llama=$l ours_f16=$o16 ours_f32=$o32 old=$old"
 done
done
