#!/bin/bash
# Prompt speed of llama-bench and moe-edge bench run at the same time, one thread each, one on
# each of CPUs 0 and 1 (then swapped), so both see the same minute's noise. Prompt processing
# is bound by arithmetic, not by memory, so two single-thread runs side by side barely slow
# each other, while consecutive runs on a shared VM differ by 15 % or more. pp128, `-t 1`; the
# repetitions (LLAMA_REPS, default 8, and OURS_REPS, default 16) make each side's timed part
# about half a minute, so it overlaps the other's although their loading times differ. Prints
# one line per run: llama=pp moe-edge=pp ratio. Needs 2 CPUs and taskset.
#   LLAMA_BIN=DIR [MOE_EDGE=BIN] tools/bench/simultaneous_pp.sh MODEL.gguf ROUNDS
set -u
MODEL=$1; ROUNDS=$2
LLAMA_BIN=${LLAMA_BIN:-/work/llama-build/bin}
MOE_EDGE=${MOE_EDGE:-target/release/moe-edge}
LLAMA_REPS=${LLAMA_REPS:-8}
OURS_REPS=${OURS_REPS:-16}
export LD_LIBRARY_PATH=$LLAMA_BIN
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
llama() {
  taskset -c "$1" "$LLAMA_BIN/llama-bench" -m "$MODEL" -p 128 -n 0 -t 1 -r "$LLAMA_REPS" 2>&1 |
    grep pp128 | awk -F'|' '{print $8}' | awk '{print $1}' > "$out/llama"
}
ours() {
  taskset -c "$1" "$MOE_EDGE" bench -m "$MODEL" -p 128 -n 0 -t 1 -r "$OURS_REPS" --no-roofline 2>&1 |
    grep pp128 | sed 's/.*| \([0-9.]*\) ± [0-9.]* |.*/\1/' > "$out/ours"
}
for r in $(seq 1 "$ROUNDS"); do
  for cpus in "0 1" "1 0"; do
    set -- $cpus
    llama "$1" & ours "$2"; wait
    l=$(cat "$out/llama"); o=$(cat "$out/ours")
    echo "llama=$l moe-edge=$o ratio=$(awk -v o="$o" -v l="$l" 'BEGIN {printf "%.2f", o / l}')"
  done
done
