#!/bin/bash
# Alternating rounds of llama-bench and moe-edge bench on the same models and flags, so that
# minute-to-minute noise on a shared machine hits both. Each round runs both models, so the
# Q4_0 and Q4_K figures of a round come from the same minutes too. Set LLAMA_BIN (llama-bench's directory),
# MOE_EDGE (binary), MODELS (directory with olmoe-TYPE.gguf) and TYPES (default "q4_0 q4_k").
LLAMA_BIN=${LLAMA_BIN:-/work/llama-build/bin}
MOE_EDGE=${MOE_EDGE:-target/release/moe-edge}
MODELS=${MODELS:-/work/bench-models}
ROUNDS=${ROUNDS:-4}
TYPES=${TYPES:-q4_0 q4_k}
export LD_LIBRARY_PATH=$LLAMA_BIN
for r in $(seq 1 "$ROUNDS"); do
  for m in $TYPES; do
    l=$("$LLAMA_BIN/llama-bench" -m "$MODELS/olmoe-$m.gguf" -p 128 -n 32 -t 2 -r 2 2>&1 | grep olmoe | awk -F'|' '{print $8}' | awk '{print $1}' | tr '\n' ' ')
    o=$("$MOE_EDGE" bench -m "$MODELS/olmoe-$m.gguf" -p 128 -n 32 -t 2 -r 2 2>&1 | grep -E "olmoe|roofline" | sed 's/.*| \([0-9.]*\) ±.*/\1/; s/.*reached \([0-9]*\) %.*/roof=\1%/' | tr '\n' ' ')
    echo "$m round $r llama(pp tg): $l  ours(pp tg roof): $o"
  done
done
