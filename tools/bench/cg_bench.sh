#!/bin/bash
# Runs a command inside a fresh cgroup-v1 memory cgroup with a cold page cache, then prints the
# cgroup's peak usage and OOM kills. Needs root.
#   tools/bench/cg_bench.sh 2G label moe-edge bench -m olmoe-q4_0.gguf ... --ram-budget 1700M
LIMIT=$1; shift; LABEL=$1; shift
CG=/sys/fs/cgroup/memory$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)/box$LIMIT
mkdir -p "$CG" && echo "$LIMIT" > "$CG/memory.limit_in_bytes"
echo 0 > "$CG/memory.max_usage_in_bytes"; sync; echo 1 > /proc/sys/vm/drop_caches
OOM0=$(awk '/oom_kill /{print $2}' "$CG/memory.oom_control")
sh -c "echo \$\$ > $CG/cgroup.procs; exec \"\$@\"" sh "$@" 2>&1 | grep -E "olmoe|qwen|tg|hit|error|Error"
echo "[$LABEL] max usage $(( $(cat "$CG/memory.max_usage_in_bytes") / 1048576 )) MiB, oom kills $(( $(awk '/oom_kill /{print $2}' "$CG/memory.oom_control") - OOM0 ))"
