#!/usr/bin/env bash
# The bnorm command-line tool as a user meets it: exit codes and messages for
# wrong flags, missing or malformed files, and a few working commands.
# Usage: tests/cli_errors.sh path/to/bnorm
# Prints one line per check and ends with "N passed, M failed"; exits 1 if M > 0.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_cli_errors 1 "path/to/bnorm" "$@"

# Rows of 784 pixel values; row r is a fixed pattern shifted by r.
pixel_rows() {
  awk -v rows="$1" -v sep="$2" 'BEGIN { for (r = 0; r < rows; r++) { s = "";
    for (i = 0; i < 784; i++) s = s (i ? sep : "") (i * 7 + r * 3) % 256; print s } }'
}

# --- flags -------------------------------------------------------------------

run "$BNORM"
check "no subcommand fails" 'rc!=0' 'err~subcommand'

run "$BNORM" train --bn sideways
check "train --bn sideways fails" 'rc!=0' 'err~--bn' 'err~sideways'

run "$BNORM" train --epochs x
check "train --epochs x fails" 'rc!=0' 'err~--epochs'

run "$BNORM" frobnicate
check "unknown subcommand fails" 'rc!=0'

run "$BNORM" --help
check "bnorm --help" rc=0 'out~train' 'out~eval' 'out~predict'

run "$BNORM" --version
check "bnorm --version" rc=0 'out~bnorm'

run "$BNORM" train --help
check "bnorm train --help" rc=0 'out~--bn' 'out~--epochs' 'out~--out' 'out~--layers'

run "$BNORM" eval --help
check "bnorm eval --help" rc=0 'out~--model' 'out~--data'

run "$BNORM" predict --help
check "bnorm predict --help" rc=0 'out~--model' 'out~--input' 'out~--batch-stats' 'out~--json'

run "$BNORM" eval
check "eval without --model fails" 'rc!=0' 'err~--model'

run "$BNORM" train --layers 784,abc,10
check "train --layers 784,abc,10" rc=1 'err~--layers' 'err~784,abc,10' '!out~training'

run "$BNORM" train --arch "conv3x3:8,bogus,fc:10"
check "train --arch with an unknown token" rc=1 "err~'bogus'" '!out~training'

run "$BNORM" train --arch cnn --layers 784,10
check "train --arch and --layers together" 'rc!=0' 'err~--layers'

run "$BNORM" train --arch-file "$T/no-such-arch.txt"
check "train --arch-file missing" rc=1 'err~no-such-arch.txt' 'err~cannot open'

run "$BNORM" train --layers 784
check "train --layers with one width" rc=1 'err~--layers'

run "$BNORM" train --batch-size 1
check "train --batch-size 1" rc=1 'err~--batch-size'

# --- files -------------------------------------------------------------------

run "$BNORM" eval --model /nonexistent.safetensors
check "eval --model /nonexistent.safetensors" rc=1 'err~/nonexistent.safetensors' 'err~cannot open'

printf 'this is a text file, not a model\n' >"$T/notes.txt"
run "$BNORM" eval --model "$T/notes.txt"
check "eval --model <text file>" rc=1 "err~$T/notes.txt: "

mkdir "$T/adir"
run "$BNORM" eval --model "$T/adir"
check "eval --model <directory>" rc=1 "err~$T/adir"

head -c 5 /dev/zero >"$T/five.safetensors"
run "$BNORM" predict --model "$T/five.safetensors" --input "$T/notes.txt"
check "predict --model <5-byte file>" rc=1 "err~$T/five.safetensors" 'err~shorter than the 8-byte'

mkdir "$T/empty" "$T/out"
printf 'precious\000bytes\n' >"$T/out/m.safetensors"
cp "$T/out/m.safetensors" "$T/m.before"
run "$BNORM" train --data "$T/empty" --out "$T/out/m.safetensors"
check "train --data <empty dir>" rc=1 "err~$T/empty/" 'err~-idx' 'err~not found'
check_true "failed train leaves the earlier model byte-for-byte unchanged" cmp -s "$T/m.before" "$T/out/m.safetensors"
check_true "failed train leaves no temporary files" no_temp_files "$T/out"

run "$BNORM" train --out /nonexistent-dir/m.safetensors --train-size 100 --epochs 1
check "train --out into a missing directory fails before training" rc=1 'err~/nonexistent-dir' 'err~directory' \
  '!out~training' '!out~epoch' 'secs<5'

run "$BNORM" train --out "$T/adir" --train-size 100 --epochs 1
check "train --out <existing directory>" rc=1 "err~$T/adir" '!out~epoch'

# Regression: an empty --out once passed the up-front check, so the whole
# training ran and only the save failed. It must be refused before training.
run "$BNORM" train --out "" --train-size 100 --test-size 50 --epochs 1
check "train --out '' fails before training" rc=1 '!out~training' '!out~epoch'

# A dataset directory whose training images are a cut-off gzip stream.
mkdir "$T/cut"
{ printf '\000\000\010\003\000\000\000\002\000\000\000\034\000\000\000\034'; head -c 1568 /dev/urandom; } | gzip -c >"$T/cut/full.gz"
head -c 40 "$T/cut/full.gz" >"$T/cut/train-images-idx3-ubyte.gz"
rm "$T/cut/full.gz"
printf '\000\000\010\001\000\000\000\002\001\002' >"$T/cut/train-labels-idx1-ubyte"
run "$BNORM" train --data "$T/cut" --out "$T/out/m.safetensors"
check "train --data <truncated gzip images>" rc=1 "err~$T/cut/train-images-idx3-ubyte.gz" 'err~truncated'
check_true "... and the earlier model is still unchanged" cmp -s "$T/m.before" "$T/out/m.safetensors"

# --- predict and eval with a real model -------------------------------------

if [ -d "$DATA" ]; then
  run "$BNORM" train --train-size 200 --test-size 100 --epochs 1 --out "$T/m.safetensors"
  check "train a small model" rc=0 'out~epoch 1/1' 'out~saved'
  check_true "the model file exists" test -s "$T/m.safetensors"
  check_true "training leaves no temporary files" no_temp_files "$T"

  {
    pixel_rows 1 ' '
    echo '1 2 3'
    pixel_rows 1 ' '
  } >"$T/short-line.txt"
  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/short-line.txt"
  check "predict: line 2 has 3 values" rc=1 "err~$T/short-line.txt: line 2" 'err~expected 784 values, got 3'

  { pixel_rows 1 ' '; echo '1 2 x3'; } >"$T/not-number.txt"
  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/not-number.txt"
  check "predict: a word instead of a number" rc=1 "err~$T/not-number.txt: line 2" 'err~not a number'

  : >"$T/empty.txt"
  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/empty.txt"
  check "predict: empty input" rc=1 "err~$T/empty.txt" 'err~no examples'

  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/nonexistent.txt"
  check "predict: missing input" rc=1 "err~$T/nonexistent.txt" 'err~cannot open'

  printf '\000\000\010\003\000\000\000\002' >"$T/short.idx"
  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/short.idx"
  check "predict: IDX input with a cut-off header" rc=1 "err~$T/short.idx" 'err~truncated'

  {
    echo '# two examples'
    pixel_rows 2 ','
  } >"$T/two.txt"
  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/two.txt"
  check "predict: two valid lines" rc=0 outlines=2 'out~0: ' 'out~1: '

  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/two.txt" --json
  labels=$(grep -c '"label":' "$T/.out")
  logits=$(grep -c '"logits":\[' "$T/.out")
  check "predict --json: two JSON lines" rc=0 outlines=2 'out~{"' 'out~"label":' 'out~"logits":['
  check_true "predict --json: each line has label and logits" test "$labels" -eq 2 -a "$logits" -eq 2

  run "$BNORM" predict --model "$T/m.safetensors" --input "$T/two.txt" --batch-stats
  check "predict --batch-stats warns" rc=0 outlines=2 'err~--batch-stats is wrong on purpose'

  run "$BNORM" eval --model "$T/m.safetensors" --test-size 100 --json
  check "eval a small model" rc=0 'out~"test_accuracy"' 'out~"examples":100'

  run "$BNORM" eval --model "$T/m.safetensors" --data "$T/empty"
  check "eval --data <empty dir>" rc=1 "err~$T/empty/t10k-" 'err~not found'
else
  echo "SKIP: predict and eval checks ($DATA is absent)"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
