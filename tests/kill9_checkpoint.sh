#!/usr/bin/env bash
# kill -9 at random moments of a training run that saves a checkpoint every
# step and its model every epoch, then checks that whatever is on disk loads:
# the model with `bnorm eval`, the checkpoint by resuming from it to the end.
# A file may be the previous one or the new one, never half of either
# (write_file_atomically: temp file, fsync, rename). Leftover hidden
# temporary files (SIGKILL allows no cleanup) must not break the next run.
# Usage: tests/kill9_checkpoint.sh path/to/bnorm [iterations] [max_seconds]
# Prints a summary line; exits 1 on any failure, 77 without the dataset.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_kill9 1-3 "path/to/bnorm [iterations] [max-seconds]" "$@"
need_fashion_mnist
ITER=${2:-40}
MAX_SECONDS=${3:-50}

ARGS=(train --train-size 500 --test-size 100 --epochs 3 --threads 1 --checkpoint-every 1
      --out "$T/m.st" --checkpoint "$T/m.ckpt")

# How long an undisturbed run takes, so the kills spread over all of it
# (data loading, training steps, saves) instead of landing during start-up.
start=$(date +%s%N)
"$BNORM" "${ARGS[@]}" >/dev/null 2>&1 || { echo "FAIL: the undisturbed run failed"; exit 1; }
run_ms=$((($(date +%s%N) - start) / 1000000))
rm -f "$T/m.st" "$T/m.ckpt"

began=$(date +%s)
iterations=0 landed=0 models_checked=0 ckpts_checked=0 failures=0
for i in $(seq 1 "$ITER"); do
  [ $(($(date +%s) - began)) -lt "$MAX_SECONDS" ] || break
  iterations=$i
  "$BNORM" "${ARGS[@]}" >/dev/null 2>"$T/err" &
  pid=$!
  sleep "$(awk -v r="$RANDOM" -v ms="$run_ms" 'BEGIN { printf "%.3f", (5 + r / 32768 * 0.8 * ms) / 1000 }')"
  if kill -9 "$pid" 2>/dev/null; then landed=$((landed + 1)); fi
  wait "$pid" 2>/dev/null
  if [ -e "$T/m.st" ]; then
    models_checked=$((models_checked + 1))
    if ! "$BNORM" eval --model "$T/m.st" --test-size 100 >/dev/null 2>"$T/eval.err"; then
      failures=$((failures + 1))
      echo "FAIL (iteration $i): model does not load: $(head -c 300 "$T/eval.err")"
    fi
  fi
  if [ -e "$T/m.ckpt" ]; then
    ckpts_checked=$((ckpts_checked + 1))
    cp "$T/m.ckpt" "$T/r.ckpt"
    if ! "$BNORM" train --resume "$T/r.ckpt" --out "$T/r.st" --threads 1 >/dev/null 2>"$T/resume.err"; then
      failures=$((failures + 1))
      echo "FAIL (iteration $i): checkpoint does not resume: $(head -c 300 "$T/resume.err")"
    fi
  fi
done
leftovers=$(find "$T" -maxdepth 1 -name '.*.tmp-*' | wc -l)
# The next run after all that must still work, leftovers and all.
if ! "$BNORM" "${ARGS[@]}" >/dev/null 2>"$T/err"; then
  failures=$((failures + 1))
  echo "FAIL: a run after the kills failed: $(head -c 300 "$T/err")"
fi
echo "kill9: iterations=$iterations kills_landed=$landed models_checked=$models_checked" \
  "checkpoints_resumed=$ckpts_checked leftover_temp_files=$leftovers undisturbed_run_ms=$run_ms failures=$failures"
[ "$failures" -eq 0 ]
