#!/bin/bash
# Generation at depth 2048 with an f16 and a q8_0 K cache, llama-bench and moe-edge bench in
# alternation (tg32, 2 threads, two rounds).
#   LLAMA_BIN=/path/to/llama.cpp/bin MOE_EDGE=target/release/moe-edge tools/bench/q8k_bench.sh
LLAMA_BIN=${LLAMA_BIN:-/work/llama-build/bin}
export LD_LIBRARY_PATH=$LLAMA_BIN
M=${MODEL:-/work/bench-models/olmoe-q4_0.gguf}
B=${MOE_EDGE:-target/release/moe-edge}
for r in 1 2; do
 D=2048
 lf=$($LLAMA_BIN/llama-bench -m $M -p 0 -n 32 -d $D -t 2 -r 2 2>&1 | grep tg32 | awk -F'|' '{print $(NF-1)}' | awk '{print $1}')
 of=$("$B" bench -m $M -p 0 -n 32 -d $D -t 2 -r 2 2>&1 | grep tg32 | sed 's/.*| \([0-9.]*\) ±.*/\1/')
 lq=$($LLAMA_BIN/llama-bench -m $M -p 0 -n 32 -d $D -t 2 -r 2 -ctk q8_0 2>&1 | grep tg32 | awk -F'|' '{print $(NF-1)}' | awk '{print $1}')
 oq=$("$B" bench -m $M -p 0 -n 32 -d $D -t 2 -r 2 -ctk q8_0 2>&1 | grep tg32 | sed 's/.*| \([0-9.]*\) ±.*/\1/')
 echo "round $r d$D llama_f16=$lf ours_f16=$of llama_q8k=$lq ours_q8k=$oq"
done
