#!/bin/bash
# Each moe-edge kernel level beside the llama.cpp build for the same instruction sets, in
# alternating rounds: per round, `alt_bench.sh` (pp128, tg32, 2 threads, both models) once per
# pair, so every pair sees the same minutes. PAIRS lists level=llama-bench-directory; the
# default pairs the best detected level with an AVX-512 VNNI build, avx2 with an AVX2 build and
# avxvnni with an AVX2 + AVX-VNNI build (tools/README.md has the recipes).
#   ROUNDS=5 tools/bench/builds_bench.sh
ROUNDS=${ROUNDS:-5}
PAIRS=${PAIRS:-best=/work/llama-avx512-bin avx2=/work/llama-avx2-bin avxvnni=/work/llama-avxvnni-bin}
here=$(dirname "$0")
for r in $(seq 1 "$ROUNDS"); do
  for pair in $PAIRS; do
    level=${pair%%=*}
    echo "# round $r $level"
    if [ "$level" = best ]; then
      LLAMA_BIN=${pair#*=} ROUNDS=1 bash "$here/alt_bench.sh"
    else
      MOE_EDGE_KERNELS=$level LLAMA_BIN=${pair#*=} ROUNDS=1 bash "$here/alt_bench.sh"
    fi
  done
done
