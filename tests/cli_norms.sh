#!/usr/bin/env bash
# GroupNorm, LayerNorm and batch norm's scale/center switches as a user meets
# them: `bnorm train --arch ...,gn:4,...,ln,...` trains and saves a model that
# eval reloads and PyTorch loads (scripts/torch_check_model.py, where Debian's
# python3-torch is installed); fold leaves the layers alone and export refuses
# them by name. Models learning only gamma (--bn-center off) or only beta
# (--bn-scale off) hold that tensor alone, fold, and load into PyTorch.
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
    run /usr/bin/python3 "$SCRIPTS/torch_check_model.py" --model "$2" --bnorm "$BNORM" --count 32
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

run "$BNORM" export --model "$T/gn.st" --onnx "$T/gn.onnx"
if [[ "$ERR" == *"built without ONNX"* ]]; then
  echo "SKIP: export (this bnorm has no ONNX)"
else
  check "export refuses GroupNorm by name" rc!=0 err~"layer 1 is a GroupNorm"
  check_true "... and writes no .onnx" test ! -e "$T/gn.onnx"
fi

# --- batch norm's scale (gamma) and center (beta) switches -------------------
# only_bn_tensor FILE NAME: the model's batch-norm layers hold NAME (weight or
# bias) and not the other one.
only_bn_tensor() {
  /usr/bin/python3 - "$1" "$2" "$SCRIPTS" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[3])
import safetensors_py
tensors, meta = safetensors_py.read(sys.argv[1])
keep = sys.argv[2]
drop = "bias" if keep == "weight" else "weight"
bn = [i for i, l in enumerate(json.loads(meta["architecture"])["layers"]) if l["type"] == "batchnorm"]
sys.exit(0 if bn and all(f"{i}.{keep}" in tensors and f"{i}.{drop}" not in tensors for i in bn) else 1)
PY
}
for switch in scale center; do
  other=$([ $switch = scale ] && echo center || echo scale)
  tensor=$([ $switch = scale ] && echo weight || echo bias)
  run "$BNORM" train "${TINY[@]}" --arch "conv3x3:4,bn,relu,flatten,fc:16,bn,relu,fc:10" --bn-$other off --out "$T/$switch.st"
  check "train --bn-$other off (only $switch learned)" rc=0
  check_true "... the file holds the batch norms' $tensor only" only_bn_tensor "$T/$switch.st" "$tensor"
  torch_load "the $switch-only model" "$T/$switch.st"
  run "$BNORM" fold --model "$T/$switch.st" --out "$T/$switch-folded.st"
  check "... folds (the missing gamma as 1, beta as 0)" rc=0
  run "$BNORM" export --model "$T/$switch.st" --onnx "$T/$switch.onnx"
  [[ "$ERR" == *"built without ONNX"* ]] || check "... exports to ONNX" rc=0
done
run "$BNORM" train "${TINY[@]}" --layers 784,16,10 --bn-scale off --bn-center off --out "$T/neither.st"
check "train --bn-scale off --bn-center off" rc=0
torch_load "the model without gamma and beta (affine=False)" "$T/neither.st"
run "$BNORM" train "${TINY[@]}" --no-affine --bn-scale on --out "$T/conflict.st"
check "--no-affine with --bn-scale is refused" rc!=0 err~"--no-affine"
run "$BNORM" train "${TINY[@]}" --bn-center maybe --out "$T/conflict.st"
check "--bn-center takes on or off only" rc!=0
check_true "... neither refusal writes a model" test ! -e "$T/conflict.st"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
