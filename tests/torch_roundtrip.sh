#!/usr/bin/env bash
# Trains small bnorm models of every block layout, then checks with PyTorch
# (scripts/torch_check_model.py) that each file loads into torch.nn.Sequential
# with strict names and gives the same logits to 1e-5. Exit 77 = skipped.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_torch_roundtrip 2 "path/to/bnorm path/to/source" "$@"
bnorm=$BNORM
root=$(cd "$CALLER_DIR" && cd "$2" && pwd)
tmp=$T
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "SKIP: Debian's python3-torch is not installed (/usr/bin/python3 cannot import torch)"
  exit 77
fi
need_fashion_mnist
status=0
check() {
  local name=$1
  shift
  if ! "$bnorm" train --train-size 2000 --test-size 200 --epochs 1 --out "$tmp/$name.safetensors" --json "$@" >/dev/null; then
    echo "FAIL $name: bnorm train failed"
    status=1
    return
  fi
  if /usr/bin/python3 "$root/scripts/torch_check_model.py" --model "$tmp/$name.safetensors" --bnorm "$bnorm" --count 300; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    status=1
  fi
}
check bn-before --bn before
check bn-after --bn after
check bn-none --bn none
check options --bn before --input-norm global --bn-cumulative --no-affine --activation tanh --layers 784,64,32,10
check cnn --arch cnn
check cnn-after --arch "conv3x3:8:s2,bn,relu,avgpool2,conv5x5:6:p0,relu,bn,gap,flatten,dropout:0.2,fc:10" --bn after --input-norm pixel
# A folded model (BN merged into the conv/linear before it) is a plain Sequential too.
if "$bnorm" fold --model "$tmp/cnn.safetensors" --out "$tmp/cnn-folded.safetensors" >/dev/null &&
   /usr/bin/python3 "$root/scripts/torch_check_model.py" --model "$tmp/cnn-folded.safetensors" --bnorm "$bnorm" --count 300; then
  echo "ok   cnn-folded"
else
  echo "FAIL cnn-folded"
  status=1
fi
check biased-var --bn after --bn-running-var biased --activation sigmoid --eps 1e-3 --bn-momentum 0.3
exit $status
