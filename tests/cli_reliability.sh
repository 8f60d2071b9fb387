#!/usr/bin/env bash
# bnorm train's reliability features as a user meets them: a diverging run
# stops with the step and layer named and leaves the earlier model alone;
# --on-nan skip-batch reports what it skipped; a checkpointed run that is
# stopped (or killed) and resumed writes the same model file byte for byte as
# one that never stopped; bad --resume use and oversized flags are refused.
# Usage: tests/cli_reliability.sh path/to/bnorm   (exit 77: dataset absent)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_cli_rel 1 "path/to/bnorm" "$@"
need_fashion_mnist

SMALL=(--train-size 1000 --test-size 100 --threads 1)

# --- numeric faults ------------------------------------------------------------

run "$BNORM" train "${SMALL[@]}" --epochs 1 --bn none --out "$T/m.st"
check "a good small model first" rc=0
cp "$T/m.st" "$T/m.before"
run "$BNORM" train "${SMALL[@]}" --epochs 2 --bn none --lr 50 --out "$T/m.st"
check "--lr 50 --bn none stops on a non-finite loss" rc=1 'err~non-finite' 'err~global step' 'err~epoch 1, batch' \
  'err~layer 2 (linear) output' "err~$T/m.st keeps the last completed epoch's model" '!out~epoch 1/2' \
  'err~(try a lower --lr'  # the tool's advice, added to the library's message
check_true "... and the earlier model file is unchanged" cmp -s "$T/m.before" "$T/m.st"
check_true "... and no temporary files are left" no_temp_files "$T"

run "$BNORM" train "${SMALL[@]}" --epochs 1 --bn none --lr 50 --on-nan skip-batch --json --out "$T/m.st"
# Here every batch after the first few overflows (the weights are already
# huge but finite), so skipping cannot rescue the run: each skip is reported,
# and the epoch's non-finite evaluation ends it rather than printing null.
check "--on-nan skip-batch reports each skipped batch" rc=1 'err~batch skipped' 'err~global step 5' \
  'err~non-finite loss or accuracy' '!out~null'
check_true "... and the earlier model file is unchanged" cmp -s "$T/m.before" "$T/m.st"

run "$BNORM" train "${SMALL[@]}" --epochs 1 --on-nan skip-batch --json --out "$T/ok.st"
check "--json reports skipped_batches" rc=0 'out~"skipped_batches":0' '!out~null'

# --- checkpoints and resume -------------------------------------------------------

RUN=(--train-size 2000 --test-size 100 --threads 1 --seed 3)
run "$BNORM" train "${RUN[@]}" --epochs 2 --out "$T/full.st"
check "uninterrupted 2-epoch run" rc=0

# Stopped: a 1-epoch run leaves its last checkpoint at step 28 of 32; resuming
# it for 2 epochs is the same run as the uninterrupted one.
run "$BNORM" train "${RUN[@]}" --epochs 1 --checkpoint-every 7 --out "$T/part.st"
check "1-epoch run with --checkpoint-every 7" rc=0
check_true "... wrote the checkpoint beside --out" test -s "$T/part.st.ckpt"
run "$BNORM" train --resume "$T/part.st.ckpt" --epochs 2 --out "$T/part.st" --threads 1
check "--resume at step 28 with --epochs 2" rc=0 'out~resuming' 'out~global step 28' 'out~epoch 2/2'
check_true "... final model file identical to the uninterrupted run's" cmp "$T/full.st" "$T/part.st"

for opt in sgd adam; do
  run "$BNORM" train "${RUN[@]}" --epochs 2 --optimizer "$opt" --checkpoint-every 5 --checkpoint "$T/c.ckpt" \
    --out "$T/u-$opt.st"
  check "$opt: uninterrupted run with checkpoints" rc=0
  # Killed: SIGKILL once the first checkpoint exists, then resume from it.
  "$BNORM" train "${RUN[@]}" --epochs 2 --optimizer "$opt" --checkpoint-every 5 --checkpoint "$T/k.ckpt" \
    --out "$T/k-$opt.st" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 500); do [ -s "$T/k.ckpt" ] && break; sleep 0.01; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  run "$BNORM" train --resume "$T/k.ckpt" --checkpoint-every 5 --checkpoint "$T/k.ckpt" --out "$T/k-$opt.st" --threads 1
  check "$opt: resume after kill -9" rc=0 'out~resuming'
  check_true "$opt: ... final model identical to the uninterrupted run's" cmp "$T/u-$opt.st" "$T/k-$opt.st"
  rm -f "$T/k.ckpt"
done

run "$BNORM" train --resume "$T/part.st.ckpt" --lr 0.5 --out "$T/x.st"
check "--resume with a conflicting --lr is refused" rc=1 'err~--lr' 'err~conflicts' "err~$T/part.st.ckpt"
run "$BNORM" train --resume "$T/part.st.ckpt" --lr 0.01 --epochs 1 --out "$T/x.st"
check "--resume with an agreeing --lr is fine" rc=0
run "$BNORM" train --resume "$T/full.st" --out "$T/x.st"
check "--resume of a model file" rc=1 "err~$T/full.st" 'err~not a bnorm checkpoint'
run "$BNORM" train --resume "$T/nonexistent.ckpt" --out "$T/x.st"
check "--resume of a missing file" rc=1 "err~$T/nonexistent.ckpt" 'err~cannot open'
head -c 300 "$T/part.st.ckpt" >"$T/cut.ckpt"
run "$BNORM" train --resume "$T/cut.ckpt" --out "$T/x.st"
check "--resume of a truncated checkpoint" rc=1 "err~$T/cut.ckpt"
run "$BNORM" train --resume "$T/part.st.ckpt" --train-size 1500 --out "$T/x.st"
check "--resume with another --train-size is refused" rc=1 'err~--train-size' 'err~conflicts'
run "$BNORM" train --resume "$T/part.st.ckpt" --epochs 0 --out "$T/x.st"
check "--resume with fewer epochs than done is refused" rc=1 "err~$T/part.st.ckpt" 'err~inconsistent'

# --- sizes refused before allocating --------------------------------------------------

run "$BNORM" train --layers 784,16777216,16777216,10 --out "$T/x.st"
check "--layers with a 2^48-weight layer" rc=1 'err~--layers' 'err~GiB' 'secs<5'
run "$BNORM" train --layers 784,100000,100000,10 --out "$T/x.st"
check "--layers 784,100000,100000,10" rc=1 'err~GiB' 'secs<5'
run "$BNORM" train --batch-size 9223372036854775807 --out "$T/x.st"
check "--batch-size 2^63-1" rc=1 'err~--batch-size'
run "$BNORM" train --train-size -5 --out "$T/x.st"
check "--train-size -5" rc=1 'err~--train-size'
run "$BNORM" train --checkpoint-every -1 --out "$T/x.st"
check "--checkpoint-every -1" rc=1 'err~--checkpoint-every'
run "$BNORM" train --on-nan ignore --out "$T/x.st"
check "--on-nan ignore" 'rc!=0' 'err~--on-nan'
run "$BNORM" train --checkpoint-every 5 --checkpoint /nonexistent-dir/c.ckpt --out "$T/x.st"
check "--checkpoint in a missing directory" rc=1 'err~/nonexistent-dir/c.ckpt'

run "$BNORM" eval --model "$T/full.st" --batch-size 9223372036854775807 --test-size 100
check "eval --batch-size 2^63-1 (no overflow stepping through the test set)" rc=0 'out~examples 100'
run "$BNORM" eval --model "$T/full.st" --test-size -3
check "eval --test-size -3" rc=1 'err~--test-size'
awk 'BEGIN { for (i = 0; i < 100000; i++) printf "1 "; print "" }' >"$T/long-line.txt"
run "$BNORM" predict --model "$T/full.st" --input "$T/long-line.txt"
check "predict: a line of 100000 values" rc=1 "err~$T/long-line.txt: line 1" 'err~more than the 784 values'

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
