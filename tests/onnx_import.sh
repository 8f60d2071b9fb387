#!/usr/bin/env bash
# bnorm import and scripts/torch_to_bnorm.py: models trained briefly in
# PyTorch (tests/fixtures/onnx_import, written by
# make_onnx_import_fixtures.py) come into bnorm through ONNX and through
# their state_dict; `bnorm predict --input X.npy --output Y.npy` gives
# PyTorch's eval-mode outputs to 1e-5 (max abs diff printed), the running
# statistics are PyTorch's, `bnorm train --init` trains them further, and
# export → import gives the same predictions again. Then the refusals.
# Exit 77 = skipped (a bnorm built without ONNX, or no numpy).
#   tests/onnx_import.sh BNORM SRC
set -u
bnorm=$1
root=$2
fixtures=$root/tests/fixtures/onnx_import
py=/usr/bin/python3

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# shellcheck source=tests/cli_lib.sh
source "$(dirname "$0")/cli_lib.sh"

if "$bnorm" import --onnx "$T/none.onnx" --out "$T/none" 2>&1 | grep -q "without ONNX"; then
  echo "SKIP: this bnorm was built without ONNX (libonnx-dev)"
  exit 77
fi
if ! $py -c 'import numpy' 2>/dev/null; then
  echo "SKIP: $py has no numpy"
  exit 77
fi
have_torch=0
if $py -c 'import torch' 2>/dev/null; then have_torch=1; fi

# max_diff.py A.npy B.npy TOL: prints the largest absolute difference, exit 0 if within TOL.
cat >"$T/max_diff.py" <<'PY'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
if a.shape != b.shape:
    print(f"shapes differ: {a.shape} vs {b.shape}")
    sys.exit(1)
d = float(np.abs(a.astype(np.float64) - b).max())
print(f"max abs diff {d:.3g}")
sys.exit(0 if d <= float(sys.argv[3]) else 1)
PY

# same_statistics.py SCRIPTS MODEL NPZ [with_count]: the model's running
# statistics, batch norm by batch norm, are exactly PyTorch's (and
# num_batches_tracked too).
cat >"$T/same_statistics.py" <<'PY'
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import safetensors_py
tensors, metadata = safetensors_py.read(sys.argv[2])
expected = np.load(sys.argv[3])
layers = json.loads(metadata["architecture"])["layers"]
norms = [i for i, layer in enumerate(layers) if layer["type"] == "batchnorm"]
keys = ["running_mean", "running_var"] + (["num_batches_tracked"] if len(sys.argv) > 4 else [])
bad = [f"{i}.{key}" for k, i in enumerate(norms) for key in keys
       if not np.array_equal(tensors[f"{i}.{key}"], expected[f"{key}_{k}"])]
print(f"{len(norms)} batch norms, {len(norms) * len(keys)} tensors compared; differing: {bad}")
sys.exit(1 if bad or not norms else 0)
PY

# compare NAME MODEL HOW: predict on the fixture's inputs, compare with PyTorch.
compare() {
  local name=$1 model=$2 how=$3
  run "$bnorm" predict --model "$model" --input "$fixtures/$name.x.npy" --output "$T/$name.$how.npy"
  check "$name ($how): predict --input X.npy --output Y.npy" rc=0
  run $py "$T/max_diff.py" "$T/$name.$how.npy" "$fixtures/$name.y.npy" 1e-5
  check "$name ($how): PyTorch's eval-mode outputs to 1e-5" rc=0 out~"max abs diff"
  echo "      $name ($how): $OUT"
}

# train_further NAME MODEL HOW: two epochs of bnorm train from the model.
train_further() {
  local name=$1 model=$2 how=$3
  run "$bnorm" train --init "$model" --train "$fixtures/$name.x.npy" --train-targets "$fixtures/$name.y.npy" \
    --task regress --epochs 2 --batch-size 8 --val-fraction 0 --out "$T/$name.$how.trained.safetensors"
  check "$name ($how): bnorm train --init trains it further" rc=0 out~"epoch 2/2"
  run "$bnorm" predict --model "$T/$name.$how.trained.safetensors" --input "$fixtures/$name.x.npy"
  check "$name ($how): the trained model predicts" rc=0
}

# roundtrip LABEL MODEL X.npy EXPECTED.npy EXPORT_FLAGS...: bnorm export, then
# bnorm import, predicts the same bits as MODEL did (EXPECTED).
roundtrip() {
  local label=$1 model=$2 inputs=$3 expected=$4
  shift 4
  run "$bnorm" export --model "$model" --onnx "$T/again.onnx" "$@"
  check "$label: bnorm export" rc=0
  run "$bnorm" import --onnx "$T/again.onnx" --out "$T/again.safetensors"
  check "$label: bnorm import of that export" rc=0
  run "$bnorm" predict --model "$T/again.safetensors" --input "$inputs" --output "$T/again.npy"
  check "$label: predict after export and import" rc=0
  run $py "$T/max_diff.py" "$T/again.npy" "$expected" 0
  check "$label: export -> import gives the same predictions" rc=0
  echo "      $label (export -> import): $OUT"
}

for name in mlp_bn_before mlp_bn_after_no_affine cnn cnn_gap_view; do
  run "$bnorm" import --onnx "$fixtures/$name.onnx" --out "$T/$name.onnx.safetensors"
  check "$name: bnorm import" rc=0 out~"imported" out~"ONNX momentum"
  compare "$name" "$T/$name.onnx.safetensors" onnx
  run $py "$T/same_statistics.py" "$root/scripts" "$T/$name.onnx.safetensors" "$fixtures/$name.bn.npz"
  check "$name (onnx): running statistics kept" rc=0
  train_further "$name" "$T/$name.onnx.safetensors" onnx

  roundtrip "$name" "$T/$name.onnx.safetensors" "$fixtures/$name.x.npy" "$T/$name.onnx.npy"

  if [ $have_torch = 1 ]; then
    shape=$($py -c 'import sys, numpy as np; print(",".join(map(str, np.load(sys.argv[1]).shape[1:])))' "$fixtures/$name.x.npy")
    run $py "$root/scripts/torch_to_bnorm.py" --module "$fixtures/$name.pt" --input-shape "$shape" \
      --out "$T/$name.torch.safetensors"
    check "$name: torch_to_bnorm.py" rc=0 out~"wrote"
    compare "$name" "$T/$name.torch.safetensors" state_dict
    run $py "$T/same_statistics.py" "$root/scripts" "$T/$name.torch.safetensors" "$fixtures/$name.bn.npz" with_count
    check "$name (state_dict): running statistics and num_batches_tracked kept" rc=0
    train_further "$name" "$T/$name.torch.safetensors" state_dict
  fi
done
if [ $have_torch = 0 ]; then echo "note: no torch in $py, so torch_to_bnorm.py was not run"; fi

# A model of bnorm's own, with its input normalization, through export and import.
run "$bnorm" train --train "$fixtures/mlp_bn_before.x.npy" --train-targets "$fixtures/mlp_bn_before.y.npy" \
  --task regress --epochs 2 --batch-size 8 --val-fraction 0 --input-norm feature --layers 12,8,3 --out "$T/own.safetensors"
check "own model: train" rc=0
run "$bnorm" predict --model "$T/own.safetensors" --input "$fixtures/mlp_bn_before.x.npy" --output "$T/own.npy"
check "own model: predict" rc=0
for opset in 9 15; do
  roundtrip "own model, opset $opset" "$T/own.safetensors" "$fixtures/mlp_bn_before.x.npy" "$T/own.npy" --opset $opset
done

# Refusals: exit 1, the file and the node named, nothing written, an existing
# model left as it was.
refuse() {
  local what=$1 file=$2
  shift 2
  run "$bnorm" import --onnx "$file" --out "$T/refused.safetensors"
  check "$what is refused" rc=1 err~"$file" "$@"
  check_true "  ... and nothing is written" test ! -e "$T/refused.safetensors"
}
refuse "an unsupported operator" "$fixtures/refuse_softmax.onnx" err~"node '/1/Softmax' (Softmax)"
refuse "a batch norm over (C, L) sequences" "$fixtures/refuse_bn_sequence.onnx" err~"(BatchNormalization)" \
  err~"cannot hold"
refuse "an initializer of the wrong shape" "$fixtures/refuse_bad_shape.onnx" err~"(BatchNormalization)" \
  err~"has shape [17], expected [16]"
head -c 1500 "$fixtures/mlp_bn_before.onnx" >"$T/truncated.onnx"
refuse "a truncated file" "$T/truncated.onnx"
printf 'name,value\n1,2\n' >"$T/table.onnx"
refuse "a file that is not ONNX" "$T/table.onnx" err~"not an ONNX model"
refuse "a missing file" "$T/missing.onnx"
echo "keep me" >"$T/kept.safetensors"
run "$bnorm" import --onnx "$fixtures/refuse_softmax.onnx" --out "$T/kept.safetensors"
check "a refusal over an existing model" rc=1
check_true "  ... leaves it as it was" grep -qx "keep me" "$T/kept.safetensors"
check_true "  ... and no temporary file" no_temp_files "$T"
if [ $have_torch = 1 ]; then
  $py -c 'import torch; torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)), "'"$T"'/softmax.pt")'
  run $py "$root/scripts/torch_to_bnorm.py" --module "$T/softmax.pt" --out "$T/refused.safetensors"
  check "torch_to_bnorm.py refuses a module bnorm has not" rc=1 err~"layer 1 (Softmax)"
  check_true "  ... and nothing is written" test ! -e "$T/refused.safetensors"
fi

echo "onnx_import: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
