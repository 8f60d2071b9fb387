#!/usr/bin/env bash
# Precise statistics and fine-tuning as a user meets them: `bnorm recalibrate`
# prints each BN layer's drift and writes a loadable model; `bnorm train
# --init` fine-tunes a small Fashion-MNIST model on brightened images, with
# --freeze-bn stats leaving the running statistics bit for bit alone and
# without it moving them; a resumed frozen run cannot be unfrozen.
# Usage: tests/cli_finetune.sh path/to/bnorm
#   (exit 77: dataset, python3 or numpy absent)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_cli_ft 1 "path/to/bnorm" "$@"
need_fashion_mnist
SCRIPTS=$HERE/../scripts
/usr/bin/python3 -c 'import numpy' 2>/dev/null || { echo "SKIP: python3 with numpy is absent"; exit 77; }

SMALL=(--train-size 3000 --test-size 1000 --threads 1)
# The first 3000/1000 examples as they are and brightened by 60 levels: small
# copies load in a fraction of the time the whole set takes.
mkdir "$T/plain" "$T/bright"
/usr/bin/python3 "$SCRIPTS/brighten_idx.py" "$DATA" "$T/plain" 0 3000 1000 || exit 2
/usr/bin/python3 "$SCRIPTS/brighten_idx.py" "$DATA" "$T/bright" 60 3000 1000 || exit 2
same_bn() { /usr/bin/python3 "$SCRIPTS/bn_tensors.py" "$1" "$2" "$3"; }
accuracy() { sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p' <<<"$1"; }

# One mean and std for all pixels: with per-pixel statistics a border pixel
# that is nearly always 0 has its std raised to 1e-3, and brightening it by
# 60 makes it a 235-sigma input, which frozen statistics cannot absorb.
run "$BNORM" train "${SMALL[@]}" --data "$T/plain" --epochs 1 --input-norm global --out "$T/base.st"
check "a small model to start from" rc=0

# --- recalibrate ------------------------------------------------------------------

run "$BNORM" recalibrate --data "$T/plain" --model "$T/base.st" --batches 20 --out "$T/exact.st"
check "recalibrate prints each BN layer's drift" rc=0 'out~exact, over 1280 training examples (20 batches' \
  'out~layer 1 (256 channels): running mean changed by up to' 'out~layer 4 (256 channels)' "out~saved $T/exact.st"
check_true "... and changes the running statistics" bash -c "! /usr/bin/python3 '$SCRIPTS/bn_tensors.py' '$T/base.st' '$T/exact.st' stats"
check_true "... but nothing else" same_bn "$T/base.st" "$T/exact.st" affine
run "$BNORM" eval --data "$T/plain" --model "$T/exact.st" --test-size 1000
check "the recalibrated model evaluates" rc=0 'out~test_accuracy'
run "$BNORM" recalibrate --data "$T/plain" --model "$T/base.st" --batches 5 --batch-size 32 --mode batch-average --out "$T/avg.st"
check "recalibrate --mode batch-average" rc=0 'out~batch-average, over 160 training examples (5 batches'
run "$BNORM" recalibrate --data "$T/plain" --model "$T/base.st" --batches 0 --out "$T/x.st"
check "--batches 0 is refused" rc=1 "err~--batches must be a positive number or 'all'"
run "$BNORM" recalibrate --data "$T/plain" --model "$T/base.st" --mode fast --out "$T/x.st"
check "an unknown mode is refused" 'rc!=0' 'err~--mode'

# --- fine-tuning on brightened images ----------------------------------------------

run "$BNORM" eval --model "$T/base.st" --data "$T/bright"
check "the base model on brightened images" rc=0
BASE_ACC=$(accuracy "$OUT")

run "$BNORM" train "${SMALL[@]}" --data "$T/bright" --init "$T/base.st" --epochs 1 --out "$T/ft.st"
check "fine-tuning loads every tensor of the initial model" rc=0 \
  "out~init $T/base.st: loaded 0.weight 1.weight 1.bias 1.running_mean 1.running_var 1.num_batches_tracked" \
  '!out~initialized (no match)'
check_true "... and moves the running statistics" bash -c "! /usr/bin/python3 '$SCRIPTS/bn_tensors.py' '$T/base.st' '$T/ft.st' stats"
FT_ACC=$(accuracy "$(grep 'epoch 1/1' <<<"$OUT" | sed 's/test_acc/test_accuracy/')")

run "$BNORM" train "${SMALL[@]}" --data "$T/bright" --init "$T/base.st" --freeze-bn stats --epochs 1 \
  --checkpoint-every 20 --out "$T/frozen.st"
check "fine-tuning with --freeze-bn stats" rc=0
check_true "... leaves the running statistics bit for bit alone" same_bn "$T/base.st" "$T/frozen.st" stats
check_true "... while gamma and beta learn" bash -c "! /usr/bin/python3 '$SCRIPTS/bn_tensors.py' '$T/base.st' '$T/frozen.st' affine"
FROZEN_ACC=$(accuracy "$(grep 'epoch 1/1' <<<"$OUT" | sed 's/test_acc/test_accuracy/')")

run "$BNORM" train "${SMALL[@]}" --data "$T/bright" --init "$T/base.st" --freeze-bn all --epochs 1 --out "$T/all.st"
check "fine-tuning with --freeze-bn all" rc=0
check_true "... fixes gamma and beta too" same_bn "$T/base.st" "$T/all.st" affine

run "$BNORM" train --resume "$T/frozen.st.ckpt" --freeze-bn none --out "$T/frozen.st"
check "a resumed frozen run cannot be unfrozen" rc=1 'err~--freeze-bn "none" conflicts with the checkpoint'
run "$BNORM" train --resume "$T/frozen.st.ckpt" --threads 1 --out "$T/resumed.st"
check "a resumed frozen run stays frozen" rc=0 'out~resuming'
check_true "... and ends with the same model file" cmp -s "$T/frozen.st" "$T/resumed.st"

run "$BNORM" train "${SMALL[@]}" --data "$T/plain" --init "$T/base.st" --layers 784,256,10 --epochs 0 --out "$T/part.st"
check "with --layers, only matching tensors load" rc=0 'out~loaded 0.weight 1.weight 1.bias' \
  'out~initialized (no match) 3.weight 3.bias'
run "$BNORM" train "${SMALL[@]}" --data "$T/plain" --init "$T/base.st" --freeze-bn all --weight-decay 0.01 --epochs 0 --out "$T/x.st"
check "--freeze-bn all with --weight-decay is refused" rc=1 'err~--weight-decay would still shrink them'

echo "accuracy on brightened test images: base $BASE_ACC, fine-tuned $FT_ACC, fine-tuned with frozen stats $FROZEN_ACC"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
