#!/usr/bin/env bash
# Your own data through the bnorm tool: real tables that no one on this
# project wrote (scikit-learn's small datasets as Debian ships them, turned
# into CSV and .npy by scripts/sklearn_datasets.py), then every kind of bad
# table, each refused with the file, line and column and nothing lost.
# Usage: tests/cli_tables.sh path/to/bnorm path/to/source
# Exit 77 (skipped) where python3-sklearn is missing; 1 if a check fails.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_cli_tables 2 "path/to/bnorm path/to/source" "$@"
SRC=$(cd "$CALLER_DIR" && cd "$2" && pwd)

/usr/bin/python3 "$SRC/scripts/sklearn_datasets.py" "$T/skl" >"$T/.convert" 2>&1
status=$?
if [ $status -eq 77 ]; then
  echo "SKIP: Debian's python3-sklearn is not installed ($(tail -n 1 "$T/.convert"))"
  exit 77
elif [ $status -ne 0 ]; then
  echo "FAIL: scripts/sklearn_datasets.py: $(cat "$T/.convert")"
  exit 1
fi
D=$T/skl

# The last epoch's JSON line: its field $1.
last_field() { tail -n 1 "$T/.out" | sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p"; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

# --- real data ---------------------------------------------------------------

run "$BNORM" train --train "$D/breast_cancer.csv" --target diagnosis --out cancer.safetensors --json
check "breast cancer (CSV, strings): trains" rc=0 'err~task classify' 'err~2 classes: benign malignant' \
  'err~held out 114 of 569'
acc=$(last_field test_accuracy)
echo "      breast cancer hold-out accuracy: $acc"
check_true "breast cancer: hold-out accuracy >= 0.95" at_least "$acc" 0.95

run "$BNORM" train --train "$D/digits_X.npy" --train-targets "$D/digits_y.npy" \
  --arch "conv3x3:16,bn,relu,conv3x3:32,bn,relu,maxpool2,conv3x3:64,bn,relu,gap,fc:10" --out digits.safetensors --json
check "digits (NPY (N, 1, 8, 8), int64 labels): a conv net trains" rc=0 'err~task classify' 'err~of (1, 8, 8)'
acc=$(last_field test_accuracy)
echo "      digits hold-out accuracy: $acc"
check_true "digits: hold-out accuracy >= 0.95" at_least "$acc" 0.95

run "$BNORM" train --train "$D/iris.csv" --out iris.safetensors
check "iris (CSV, class names as strings): trains" rc=0 'out~task classify' 'out~setosa versicolor virginica'
head -n 1 "$D/iris.csv" >"$T/three.csv"
grep -m1 setosa "$D/iris.csv" >>"$T/three.csv"
grep -m1 versicolor "$D/iris.csv" >>"$T/three.csv"
grep -m1 virginica "$D/iris.csv" >>"$T/three.csv"
run "$BNORM" predict --model iris.safetensors --input "$T/three.csv" --json
check "iris: predict prints the class names" rc=0 outlines=3 'out~"label":"setosa"' 'out~"label":"versicolor"' \
  'out~"label":"virginica"'
run "$BNORM" predict --model iris.safetensors --input "$T/three.csv"
check "iris: predict's text names the classes" rc=0 'out~0: setosa'
# Columns are matched by name: reordered, without the target, the same answers.
awk -F, -v OFS=, '{ print $4, $3, $2, $1 }' "$T/three.csv" >"$T/reordered.csv"
run "$BNORM" predict --model iris.safetensors --input "$T/reordered.csv" --json
check "iris: columns in another order, no target column: same labels" rc=0 'out~"label":"setosa"' \
  'out~"label":"versicolor"' 'out~"label":"virginica"'

run "$BNORM" eval --model iris.safetensors --test "$D/iris.csv" --json
check "iris: eval on a CSV" rc=0 'out~"test_accuracy":' 'out~"examples":150'

run "$BNORM" train --train "$D/diabetes.csv" --task regress --out diabetes.safetensors --json
check "diabetes (CSV, forced regression): reports rmse, mae and r2" rc=0 'err~task regress (as asked)' \
  'out~"test_rmse":' 'out~"test_mae":' 'out~"test_r2":' '!out~test_accuracy'
r2=$(last_field test_r2)
echo "      diabetes hold-out R²: $r2"
check_true "diabetes: hold-out R² >= 0.3" at_least "$r2" 0.3
head -n 4 "$D/diabetes.csv" >"$T/few.csv"
run "$BNORM" predict --model diabetes.safetensors --input "$T/few.csv" --json --output "$T/pred.npy"
check "diabetes: predictions in the target's units" rc=0 outlines=3 'out~"prediction":['
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  run /usr/bin/python3 -c "import numpy as np; a = np.load('$T/pred.npy'); assert a.dtype == np.float32 and a.shape == (3, 1), (a.dtype, a.shape); assert 20 < a.min() and a.max() < 400, a; print('ok')"
  check "predict --output writes float32 (N, outputs) that NumPy loads" rc=0 'out~ok'
fi
run "$BNORM" predict --model digits.safetensors --input "$D/digits_X.npy" --limit 5 --output "$T/logits.npy"
check "digits: predict from NPY, logits to NPY" rc=0 outlines=5

# A resumed table run continues bit for bit: its predictions equal an uninterrupted run's.
run "$BNORM" train --train "$D/iris.csv" --epochs 4 --out whole.safetensors
run "$BNORM" train --train "$D/iris.csv" --epochs 2 --checkpoint-every 3 --out part.safetensors
check "iris: a run that checkpoints" rc=0
run "$BNORM" train --resume part.safetensors.ckpt --epochs 4 --out resumed.safetensors
check "iris: resumed from its checkpoint, with its CSV and split" rc=0 'out~resuming'
run "$BNORM" predict --model whole.safetensors --input "$D/iris.csv" --json
cp "$T/.out" "$T/whole.json"
run "$BNORM" predict --model resumed.safetensors --input "$D/iris.csv" --json
check_true "iris: resumed and uninterrupted runs predict the same logits" cmp -s "$T/.out" "$T/whole.json"

if command -v mpirun >/dev/null && [ -n "$(ldd "$BNORM" | grep -i mpi)" ]; then
  # OpenMPI leaves its own allocations at exit: no leak report for them (as the other MPI tests).
  run env ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 mpirun -np 2 --allow-run-as-root --oversubscribe \
    "$BNORM" train --distributed --threads 1 \
    --train "$D/breast_cancer.csv" --epochs 20 --out dist.safetensors --json
  check "breast cancer under mpirun -np 2 --distributed" rc=0 'out~"test_accuracy":'
fi

# --- bad data ----------------------------------------------------------------

printf 'a,b,y\n1,2,x\n3,4\n' >"$T/ragged.csv"
printf 'a,b,y\n1,2,x\n3,,z\n' >"$T/empty_cell.csv"
printf 'a,b,y\n1,2,x\n3,four,z\n' >"$T/text.csv"
printf 'a,b,y\n1,2,x\n3,inf,z\n' >"$T/inf.csv"
printf '' >"$T/empty.csv"
printf 'a,b,y\n' >"$T/header_only.csv"
printf 'a,b,y\n1,2,x\n3,4,x\n' >"$T/one_class.csv"
printf 'a,b,y\n1,2,x\n3,4,z\n5,6,x\n7,8,z\n' >"$T/train4.csv"
printf 'a,b,y\n1,2,x\n3,4,w\n' >"$T/unseen.csv"
for case in "ragged.csv:line 3 has 2 fields" "empty_cell.csv:line 3, column 2 ('b'): empty cell" \
  "text.csv:line 3, column 2 ('b'): 'four' is not a number" "inf.csv:line 3, column 2 ('b')" \
  "empty.csv:empty" "header_only.csv:no data rows" "one_class.csv:single class ('x')"; do
  file=${case%%:*}
  run "$BNORM" train --train "$T/$file" --out kept.safetensors
  check "bad CSV $file: refused" rc=1 "err~$T/$file" "err~${case#*:}"
done
run "$BNORM" train --train "$T/train4.csv" --target label
check "missing target column: refused" rc=1 "err~no target column 'label'"
run "$BNORM" train --train "$T/train4.csv" --test "$T/unseen.csv" --out kept.safetensors
check "test label never seen in training: refused" rc=1 "err~$T/unseen.csv" "err~label 'w' was never seen in training"

# NPY: wrong dtype, big-endian, Fortran order, truncated, lying header, mismatched N.
/usr/bin/python3 - "$T" <<'EOF' || echo "FAIL: could not write the bad .npy files"
import sys, numpy as np
t = sys.argv[1]
np.save(f"{t}/x.npy", np.zeros((6, 3), np.float32))
np.save(f"{t}/y.npy", np.array([0, 1, 0, 1, 0, 1], np.int64))
np.save(f"{t}/y5.npy", np.array([0, 1, 0, 1, 0], np.int64))
np.save(f"{t}/f16.npy", np.zeros((6, 3), np.float16))
np.save(f"{t}/big.npy", np.zeros((6, 3), ">f4"))
np.save(f"{t}/fortran.npy", np.asfortranarray(np.zeros((6, 3), np.float32)))
raw = open(f"{t}/x.npy", "rb").read()
open(f"{t}/truncated.npy", "wb").write(raw[:-8])
open(f"{t}/lying.npy", "wb").write(raw.replace(b"(6, 3)", b"(9, 3)"))
EOF
for case in "f16.npy:unsupported dtype '<f2'" "big.npy:big-endian" "fortran.npy:fortran" "truncated.npy:needs" "lying.npy:needs"; do
  file=${case%%:*}
  run "$BNORM" train --train "$T/$file" --train-targets "$T/y.npy" --out kept.safetensors
  check "bad NPY $file: refused" rc=1 "err~$T/$file" "err~${case#*:}"
done
run "$BNORM" train --train "$T/x.npy" --train-targets "$T/y5.npy" --out kept.safetensors
check "NPY X and y with different N: refused" rc=1 "err~$T/y5.npy" "err~holds 5 targets but"
run "$BNORM" train --train "$T/x.npy" --out kept.safetensors
check "NPY features without targets: refused" rc=1 "err~--train-targets"
check_true "no refused run wrote kept.safetensors" test ! -e kept.safetensors

# Nothing already saved is lost: a model survives a bad run aimed at it.
cp iris.safetensors precious.safetensors
run "$BNORM" train --train "$T/ragged.csv" --out precious.safetensors
check "a bad table aimed at an existing model: refused" rc=1
check_true "the existing model is untouched" cmp -s iris.safetensors precious.safetensors

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
