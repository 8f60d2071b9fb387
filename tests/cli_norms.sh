#!/usr/bin/env bash
# GroupNorm, LayerNorm and batch norm's scale/center switches as a user meets
# them: `bnorm train --arch ...,gn:4,...,ln,...` trains and saves a model that
# eval reloads and PyTorch loads (scripts/torch_check_model.py, where Debian's
# python3-torch is installed); fold leaves the layers alone and export refuses
# them by name.
# Usage: tests/cli_norms.sh path/to/bnorm   (exit 77: Fashion-MNIST absent)
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 path/to/bnorm" >&2
  exit 2
fi
BNORM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPTS=$HERE/../scripts
DATA=/usr/share/datasets/fashion-mnist
[ -e "$DATA/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP: $DATA is absent"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/bnorm_cli_norms.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 2
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"

TINY=(--train-size 256 --test-size 128 --epochs 1 --batch-size 32 --threads 1)
HAVE_TORCH=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && HAVE_TORCH=1
# torch_load NAME FILE: PyTorch rebuilds FILE and gives bnorm's logits.
torch_load() {
  if [ "$HAVE_TORCH" = 1 ]; then
    run /usr/bin/python3 "$SCRIPTS/torch_check_model.py" --model "$2" --bnorm "$BNORM" --count 64
    check "$1 loads into PyTorch with the same logits" rc=0 out~OK
  else
    echo "SKIP: $1 in PyTorch (/usr/bin/python3 cannot import torch)"
  fi
}

ARCH=conv3x3:8,gn:4,relu,maxpool2,conv3x3:8,relu,gn:8,flatten,fc:32,ln,relu,fc:10
run "$BNORM" train "${TINY[@]}" --arch "$ARCH" --out "$T/gn.st"
check "train --arch with gn:4, gn:8 and ln" rc=0 out~"saved $T/gn.st"
run "$BNORM" eval --model "$T/gn.st" --test-size 128
check "eval reloads it" rc=0 out~test_accuracy
torch_load "the gn/ln CNN" "$T/gn.st"

run "$BNORM" train "${TINY[@]}" --arch "conv3x3:4,ln,relu,flatten,fc:10" --out "$T/ln_image.st"
check "ln over whole (C, H, W) examples" rc=0
torch_load "the image ln model" "$T/ln_image.st"

run "$BNORM" train "${TINY[@]}" --arch "fc:32,gn:3,relu,fc:10" --out "$T/bad.st"
check "gn:3 on 32 units is refused, naming the token" rc!=0 err~"'gn:3'" err~"must divide"
check_true "... and writes no model" test ! -e "$T/bad.st"

run "$BNORM" fold --model "$T/gn.st" --out "$T/folded.st"
check "fold leaves GroupNorm and LayerNorm alone" rc=0 out~"12 layers into 12"
torch_load "the folded gn/ln model" "$T/folded.st"

run "$BNORM" export --model "$T/gn.st" --onnx "$T/gn.onnx"
if [[ "$ERR" == *"built without ONNX"* ]]; then
  echo "SKIP: export (this bnorm has no ONNX)"
else
  check "export refuses GroupNorm by name" rc!=0 err~"layer 1 is a GroupNorm"
  check_true "... and writes no .onnx" test ! -e "$T/gn.onnx"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
