#!/usr/bin/env bash
# Training throughput of the default MLP, one process with 1 and T threads against
# T ranks of one thread each (synchronized and local batch norm), alternating
# runs, median of R. Prints samples/s of the training loop (bnorm's own
# figure) and the machine's load average before and after.
#   bench/dist_throughput.sh [build/bnorm] [repeats=5] [extra train flags...]
set -euo pipefail
BNORM=${1:-build/bnorm}
REPEATS=${2:-5}
shift $(($# > 2 ? 2 : $#))
T=2
MPI=(mpirun --allow-run-as-root --oversubscribe -np "$T")
FLAGS=(--epochs 1 --seed 0 --json --out "$(mktemp -u /tmp/bnorm_tp.XXXXXX)" "$@")

rate() { python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read().splitlines()[-1])["samples_per_s"]))'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(nproc) cores)"
single=() one=() ranks=() local=()
for _ in $(seq "$REPEATS"); do
  single+=("$("$BNORM" train --threads 1 "${FLAGS[@]}" 2>/dev/null | rate)")
  one+=("$("$BNORM" train --threads "$T" "${FLAGS[@]}" 2>/dev/null | rate)")
  ranks+=("$("${MPI[@]}" "$BNORM" train --distributed "${FLAGS[@]}" 2>/dev/null | rate)")
  local+=("$("${MPI[@]}" "$BNORM" train --distributed --bn-sync local "${FLAGS[@]}" 2>/dev/null | rate)")
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %10s   runs\n' "" "samples/s"
printf '%-34s %10s   %s\n' "1 process x 1 thread" "$(printf '%s\n' "${single[@]}" | median)" "${single[*]}"
printf '%-34s %10s   %s\n' "1 process x $T threads" "$(printf '%s\n' "${one[@]}" | median)" "${one[*]}"
printf '%-34s %10s   %s\n' "$T ranks x 1 thread, bn-sync global" "$(printf '%s\n' "${ranks[@]}" | median)" "${ranks[*]}"
printf '%-34s %10s   %s\n' "$T ranks x 1 thread, bn-sync local" "$(printf '%s\n' "${local[@]}" | median)" "${local[*]}"
