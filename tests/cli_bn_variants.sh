#!/usr/bin/env bash
# Batch Renormalization and ghost batch norm from the command line: the
# options land in the model file, the warm-up's position survives a
# checkpoint (a resumed run ends with the uninterrupted run's file), bad
# values are refused; with mpiexec given, `bnorm recalibrate --distributed`
# over 2 processes writes the running statistics one process writes.
# Usage: tests/cli_bn_variants.sh path/to/bnorm [path/to/mpiexec]
#   (exit 77: dataset, python3 or numpy absent)
set -u

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ ! -x "$1" ]; then
  echo "usage: $0 path/to/bnorm [path/to/mpiexec]" >&2
  exit 2
fi
BNORM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
MPIEXEC=${2:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPTS=$HERE/../scripts
DATA=/usr/share/datasets/fashion-mnist
[ -d "$DATA" ] || { echo "SKIP: $DATA is absent"; exit 77; }
/usr/bin/python3 -c 'import numpy' 2>/dev/null || { echo "SKIP: python3 with numpy is absent"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/bnorm_cli_bnv.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 2
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"

mkdir "$T/small"
/usr/bin/python3 "$SCRIPTS/brighten_idx.py" "$DATA" "$T/small" 0 640 200 || exit 2
# 10 steps an epoch; the warm-up of 40 steps is plain for 5, and the
# checkpoint at step 14 sits inside the ramp, where the step count matters.
SMALL=(--data "$T/small" --threads 1 --layers 784,32,10 --epochs 2)
VARIANTS=(--batch-renorm --renorm-warmup 40 --renorm-rmax 2 --virtual-batch-size 16)
# The first BN layer's renorm options, virtual batch size and step count.
cat >"$T/layer_config.py" <<'PY'
import json, os, sys
sys.path.insert(0, sys.argv[1])
import safetensors_py
tensors, meta = safetensors_py.read(sys.argv[2])
bn = [l for l in json.loads(meta["architecture"])["layers"] if l["type"] == "batchnorm"][0]
print(json.dumps(bn["renorm"], sort_keys=True), bn["virtual_batch_size"], int(tensors["1.renorm_steps"]))
PY

run "$BNORM" train "${SMALL[@]}" "${VARIANTS[@]}" --checkpoint-every 7 --out "$T/v.st"
check "training with --batch-renorm and --virtual-batch-size" rc=0 'out~epoch 2/2'
run /usr/bin/python3 "$T/layer_config.py" "$SCRIPTS" "$T/v.st"
check "... stores both in the model, with the step count" rc=0 \
  'out~{"dmax": 5.0, "rmax": 2.0, "warmup_steps": 40} 16 20'
run "$BNORM" train --resume "$T/v.st.ckpt" --renorm-rmax 3 --out "$T/r.st"
check "a resumed run cannot change the renorm limits" rc=1 'err~--renorm-rmax 3.0 conflicts with the checkpoint'
run "$BNORM" train --resume "$T/v.st.ckpt" --threads 1 --out "$T/r.st"
check "a run resumed from step 14 ..." rc=0 'out~resuming'
check_true "... ends with the uninterrupted run's file" cmp -s "$T/v.st" "$T/r.st"
run "$BNORM" eval --model "$T/v.st" --data "$T/small"
check "the model evaluates (plain batch norm)" rc=0 'out~test_accuracy'

run "$BNORM" train "${SMALL[@]}" --renorm-dmax 1 --out "$T/x.st"
check "--renorm-dmax without --batch-renorm is refused" rc=1 'err~--renorm-dmax needs --batch-renorm'
run "$BNORM" train "${SMALL[@]}" --batch-renorm --renorm-rmax 0.5 --out "$T/x.st"
check "--renorm-rmax below 1 is refused" rc=1 'err~--renorm-rmax must be >= 1'
run "$BNORM" train "${SMALL[@]}" --virtual-batch-size -3 --out "$T/x.st"
check "a negative --virtual-batch-size is refused" rc=1 'err~--virtual-batch-size must be >= 0'
run "$BNORM" train "${SMALL[@]}" --batch-renorm --no-running-stats --out "$T/x.st"
check "--batch-renorm with --no-running-stats is refused" rc=1 'err~cannot go with --no-running-stats'
run "$BNORM" train --help
check "train --help describes the options" rc=0 'out~--batch-renorm' 'out~--renorm-warmup' 'out~--virtual-batch-size'

if [ -n "$MPIEXEC" ]; then
  MPI=("$MPIEXEC" --allow-run-as-root --oversubscribe -np 2)
  run "$BNORM" train --data "$T/small" --threads 1 --epochs 1 --out "$T/base.st"
  check "a model to recalibrate" rc=0
  run "$BNORM" recalibrate --data "$T/small" --model "$T/base.st" --batch-size 50 --out "$T/one.st"
  check "recalibrate in one process" rc=0
  # 640 examples in batches of 50: each rank's share ends in a partial batch.
  run "${MPI[@]}" "$BNORM" recalibrate --distributed --threads 1 --data "$T/small" --model "$T/base.st" \
    --batch-size 50 --out "$T/two.st"
  check "recalibrate --distributed over 2 processes; rank 0 alone prints" rc=0 'out~2 processes' \
    'out~over 640 training examples' "out~saved $T/two.st"
  check_true "... gives the single process's running statistics (1e-6 relative)" \
    /usr/bin/python3 "$SCRIPTS/bn_tensors.py" "$T/one.st" "$T/two.st" stats 1e-6
  check_true "... and they differ from the trained ones" bash -c "! /usr/bin/python3 '$SCRIPTS/bn_tensors.py' '$T/base.st' '$T/two.st' stats 1e-6"
  run "${MPI[@]}" "$BNORM" recalibrate --distributed --mode batch-average --data "$T/small" --model "$T/base.st" --out "$T/x.st"
  check "--distributed with batch-average is refused" 'rc!=0' 'err~batch-average works in one process only'
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
