#!/bin/bash
# Prompt-speed A/B of two moe-edge binaries run at the same time, one thread each, one on each
# of CPUs 0 and 1 (then swapped), so both see the same minute's noise: on a shared VM a change
# of 5-15 % in pp is hidden by the spread between consecutive runs, not between simultaneous
# ones. pp128, `-t 1 -r 3`; prints one line per run: binary=pp binary=pp. Needs 2 CPUs and
# taskset.
#   tools/bench/paired_pp.sh MODEL.gguf ROUNDS BINARY_A BINARY_B
set -u
MODEL=$1; ROUNDS=$2; A=$3; B=$4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pp() {
  taskset -c "$1" "$2" bench -m "$MODEL" -p 128 -n 0 -r 3 -t 1 --no-roofline 2>&1 |
    grep pp128 | sed 's/.*| \([0-9.]*\) ± [0-9.]* |.*/\1/' > "$out/$1"
}
for r in $(seq 1 "$ROUNDS"); do
  for order in "$A $B" "$B $A"; do
    set -- $order
    pp 0 "$1" & pp 1 "$2"; wait
    echo "$(basename "$1")=$(cat "$out/0") $(basename "$2")=$(cat "$out/1")"
  done
done
