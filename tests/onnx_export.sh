#!/usr/bin/env bash
# bnorm export: trains small models of each kind, exports each as ONNX (as
# saved and with the batch norms folded), runs the files with onnxruntime
# (scripts/onnx_check.mjs, Node) on the first 1000 Fashion-MNIST test images
# and checks that the outputs equal `bnorm predict`'s to 1e-4 with the same
# labels; python3-onnx's checker must accept each file too, where installed.
# The default MLP runs on all 10,000 test images and the default CNN on
# 2000 (predict takes one image at a time, ~10 ms each; docs/interop.md has
# its 10,000), and there both bnorm and onnxruntime must also be within
# 1e-5 · max(1, largest |logit|) of each example's float64 logits, with
# float64's labels (scripts/onnx_precision.py, where torch is installed):
# two float32 runtimes differ by float32 rounding of their sums, 2e-5 to
# 6e-5 on logits of size 50 to 400, so each is held to the exact answer
# instead (docs/interop.md, "Conformance").
# Then the refusals. Exit 77 = skipped (no Node, no onnxruntime-node in
# tools/onnx, no Fashion-MNIST, or a bnorm built without ONNX).
#   tests/onnx_export.sh BNORM SRC
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_onnx_export 2 "path/to/bnorm path/to/source" "$@"
bnorm=$BNORM
root=$(cd "$CALLER_DIR" && cd "$2" && pwd)
images=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
check_script=$root/scripts/onnx_check.mjs

if ! command -v node >/dev/null; then
  echo "SKIP: node is not installed"
  exit 77
fi
if ! (cd "$root/tools/onnx" && node -e 'require.resolve("onnxruntime-node")') 2>/dev/null; then
  echo "SKIP: onnxruntime-node is not installed (cd tools/onnx && ONNXRUNTIME_NODE_INSTALL=skip npm install)"
  exit 77
fi
need_fashion_mnist

if "$bnorm" export --model "$T/none" --onnx "$T/none.onnx" 2>&1 | grep -q "without ONNX"; then
  echo "SKIP: this bnorm was built without ONNX (libonnx-dev)"
  exit 77
fi
have_onnx_py=0
if /usr/bin/python3 -c 'import onnx' 2>/dev/null; then have_onnx_py=1; fi
have_torch=0
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then have_torch=1; fi
limit=1000  # images per comparison
against_float64=0  # 1: compare also bnorm and onnxruntime with float64

# python3-onnx's checker, as a second reader of the file.
py_check='import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)'

# compare NAME MODEL EXPECTED EXPORT_FLAGS...: exports MODEL, runs
# onnxruntime on the images and compares with predict's logits in EXPECTED.
# With against_float64=1 both are compared with float64 too (the model file
# predict ran is EXPECTED's name without .expect.npy).
compare() {
  local name=$1 model=$2 expected=$3
  shift 3
  run "$bnorm" export --model "$model" --onnx "$T/$name.onnx" "$@"
  check "$name: export" rc=0 out~"exported"
  run node "$check_script" --model "$T/$name.onnx" --input "$images" --limit $limit --expect "$expected" --tol 1e-4 \
    --output "$T/$name.ort.npy"
  check "$name: onnxruntime equals bnorm predict (1e-4, same labels)" rc=0 out~"labels differ on 0 of $limit"
  echo "      $name: $(grep -o 'max .*' "$T/.out")"
  if [ $against_float64 = 1 ] && [ $have_torch = 1 ]; then
    run /usr/bin/python3 "$root/scripts/onnx_precision.py" --model "${expected%.expect.npy}.safetensors" \
      --bnorm "$expected" --ort "$T/$name.ort.npy" --images "$images" --limit $limit --rtol 1e-5
    check "$name: bnorm and onnxruntime each within 1e-5 * max(1, |logit|) of float64, float64's labels" rc=0
    sed 's/^/      /' "$T/.out"
  fi
  if [ $have_onnx_py = 1 ]; then
    run /usr/bin/python3 -c "$py_check" "$T/$name.onnx"
    check "$name: python3-onnx checker accepts the file" rc=0
  fi
}

# predict_images NAME: predict's logits for the first $limit images, in $T/NAME.expect.npy.
predict_images() {
  run "$bnorm" predict --model "$T/$1.safetensors" --input "$images" --limit $limit --output "$T/$1.expect.npy"
  check "$1: predict" rc=0
}

# model NAME TRAIN_FLAGS...: trains a small model and compares its exports,
# as saved and folded. Folding moves the logits a little by itself (its own
# tests bound that), so the folded export is held to `bnorm fold`'s model:
# what is measured is the export.
model() {
  local name=$1
  shift
  run "$bnorm" train --train-size 2000 --test-size 200 --epochs 1 --out "$T/$name.safetensors" --json "$@"
  check "$name: train" rc=0
  predict_images "$name"
  compare "$name" "$T/$name.safetensors" "$T/$name.expect.npy"
  run "$bnorm" fold --model "$T/$name.safetensors" --out "$T/$name-folded.safetensors"
  check "$name: bnorm fold" rc=0
  predict_images "$name-folded"
  compare "$name folded" "$T/$name.safetensors" "$T/$name-folded.expect.npy" --fold-bn
}

# The default MLP and CNN, on more images and against float64 too.
against_float64=1
limit=10000
model mlp                                # BN before ReLU, pixel normalization
if [ $have_torch = 1 ]; then
  # The float64 check can fail: one logit moved by 1e-3, hundreds of float32
  # rounding steps of logits this size, is caught.
  run /usr/bin/python3 -c 'import numpy as np, sys; y = np.load(sys.argv[1]); y[17, 3] += 1e-3; np.save(sys.argv[2], y)' \
    "$T/mlp.expect.npy" "$T/mlp.moved.npy"
  check "a moved logit written" rc=0
  run /usr/bin/python3 "$root/scripts/onnx_precision.py" --model "$T/mlp.safetensors" --bnorm "$T/mlp.moved.npy" \
    --ort "$T/mlp.ort.npy" --images "$images" --rtol 1e-5
  check "  ... and the float64 check reports it" rc=1 out~"FAIL: bnorm"
fi
limit=2000
model cnn --arch cnn
against_float64=0
limit=1000
model mlp-bn-after --bn after
model mlp-no-affine --no-affine
# The other layers, activations and input normalizations.
model cnn-mix --arch "conv3x3:8:s2,bn,sigmoid,avgpool2,conv5x5:6:p0,tanh,bn,gap,flatten,dropout:0.2,fc:10" \
  --input-norm channel
model mlp-global --input-norm global --activation tanh --eps 1e-3
model mlp-raw --input-norm none --bn after
# The oldest opset the export writes (Gemm needs its bias input there).
predict_images cnn  # on $limit images again
compare "cnn opset 9" "$T/cnn.safetensors" "$T/cnn.expect.npy" --opset 9
compare "mlp-no-affine opset 9 folded" "$T/mlp-no-affine.safetensors" "$T/mlp-no-affine-folded.expect.npy" \
  --opset 9 --fold-bn

# Regression: the graph ends by undoing the target standardization, so its
# outputs are in the targets' units like predict's. A small table made up
# here, targets of order 10 so that 1e-4 is far above float rounding.
run node -e '
  const fs = require("fs");
  const npy = (file, shape, values) => {
    let h = `{"descr": "<f4", "fortran_order": False, "shape": (${shape.join(", ")},), }`.replace(/"/g, "\x27");
    h += " ".repeat(63 - ((10 + h.length) % 64)) + "\n";
    const head = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, h.length & 255, h.length >> 8]);
    fs.writeFileSync(file, Buffer.concat([head, Buffer.from(h, "latin1"), Buffer.from(Float32Array.from(values).buffer)]));
  };
  const n = 400, f = 6, x = [], y = [];
  let s = 12345;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let i = 0; i < n; ++i) {
    let t = 4;
    for (let j = 0; j < f; ++j) { const v = 10 * rand() - 3; x.push(v); t += 0.1 * (j + 1) * v * (j % 2 ? -1 : 1); }
    y.push(t + 0.1 * Math.sin(x[i * f]), 0.5 * t - 5);
  }
  npy(process.argv[1] + "/X.npy", [n, f], x);
  npy(process.argv[1] + "/y.npy", [n, 2], y);
' "$T"
check "regression data written" rc=0
run "$bnorm" train --train "$T/X.npy" --train-targets "$T/y.npy" --task regress --epochs 3 --layers 6,32,2 \
  --out "$T/reg.safetensors" --json
check "regression: train" rc=0
run "$bnorm" predict --model "$T/reg.safetensors" --input "$T/X.npy" --output "$T/reg.expect.npy"
check "regression: predict" rc=0
for fold in "" --fold-bn; do
  run "$bnorm" export --model "$T/reg.safetensors" --onnx "$T/reg.onnx" $fold
  check "regression ${fold:-as saved}: export" rc=0
  run node "$check_script" --model "$T/reg.onnx" --input "$T/X.npy" --expect "$T/reg.expect.npy" --tol 1e-4 --no-labels
  check "regression ${fold:-as saved}: onnxruntime equals bnorm predict in the targets' units (1e-4)" rc=0 out~"max"
  echo "      regression ${fold:-as saved}: $(grep -o 'max .*' "$T/.out")"
done

# Refusals: a clear error naming the file, exit 1, nothing written, and an
# existing file left as it was.
run "$bnorm" export --model "$T/missing.safetensors" --onnx "$T/out.onnx"
check "a missing model file is refused" rc=1 err~"missing.safetensors"
check_true "  ... and nothing is written" test ! -e "$T/out.onnx"
head -c 300 /dev/urandom >"$T/corrupt.safetensors"
echo "keep me" >"$T/kept.onnx"
run "$bnorm" export --model "$T/corrupt.safetensors" --onnx "$T/kept.onnx"
check "a corrupt model file is refused" rc=1 err~"corrupt.safetensors"
check_true "  ... and the existing output is untouched" grep -qx "keep me" "$T/kept.onnx"
check_true "  ... and no temporary file is left" no_temp_files "$T"
run "$bnorm" export --model "$T/mlp.safetensors" --onnx "$T/no/such/dir/out.onnx"
check "an --onnx path in a missing directory is refused" rc=1 err~"$T/no/such/dir/out.onnx"
mkdir "$T/a-directory"
run "$bnorm" export --model "$T/mlp.safetensors" --onnx "$T/a-directory"
check "an --onnx path that is a directory is refused" rc=1 err~"a-directory"
check_true "  ... and it is still a directory" test -d "$T/a-directory"
check_true "  ... and no temporary file is left" no_temp_files "$T"
run "$bnorm" export --model "$T/mlp.safetensors" --onnx "$T/out.onnx" --opset 8
check "an opset below 9 is refused" 'rc!=0' err~"opset"
check_true "  ... and nothing is written" test ! -e "$T/out.onnx"
run "$bnorm" train --train-size 500 --test-size 100 --epochs 1 --no-running-stats --out "$T/no-stats.safetensors" --json
check "no-running-stats: train" rc=0
run "$bnorm" export --model "$T/no-stats.safetensors" --onnx "$T/out.onnx"
check "a batch norm without running statistics is refused" rc=1 err~"running statistics"
check_true "  ... and nothing is written" test ! -e "$T/out.onnx"

echo "onnx_export: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
