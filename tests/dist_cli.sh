#!/usr/bin/env bash
# bnorm train --distributed as a user meets it under mpirun: one header and
# one line per epoch (rank 0 speaks), one model file; a batch smaller than the
# number of processes; refusals of options that cannot work; and failures on
# one rank that must end every rank with a message instead of a hang.
# Usage: tests/dist_cli.sh path/to/bnorm path/to/mpiexec   (exit 77: dataset absent)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_dist_cli 2 "path/to/bnorm path/to/mpiexec" "$@"
need_fashion_mnist
case $2 in  # a path is relative to where the script was called from
  */*) MPIEXEC=$(cd "$CALLER_DIR" && cd "$(dirname "$2")" && pwd)/$(basename "$2") ;;
  *) MPIEXEC=$2 ;;
esac

MPI=("$MPIEXEC" --allow-run-as-root --oversubscribe)
SMALL=(--train-size 600 --test-size 200 --epochs 2)

run "${MPI[@]}" -np 2 "$BNORM" train --distributed "${SMALL[@]}" --out "$T/m.st"
check "2 ranks train; rank 0 alone prints and saves" rc=0 outlines=5 out~"distributed: 2 processes" out~"epoch 2/2" out~"saved $T/m.st"
[ -f "$T/m.st" ] && run "$BNORM" eval --model "$T/m.st" --test-size 200
check "the model rank 0 saved loads" rc=0 out~"test_accuracy"

run "${MPI[@]}" -np 3 "$BNORM" train --distributed "${SMALL[@]}" --batch-size 2 --arch "conv3x3:4,bn,relu,gap,fc:10" --out "$T/m3.st"
check "batch 2 over 3 ranks (one share empty every step) trains" rc=0 out~"shares of 0-1" out~"epoch 2/2"

run "${MPI[@]}" -np 3 "$BNORM" train --distributed "${SMALL[@]}" --batch-size 4 --bn-sync local --out "$T/m4.st"
check "--bn-sync local refuses shares too small to normalize" 'rc!=0' err~"unsynchronized batch norm needs at least 2 examples"

run "$BNORM" train "${SMALL[@]}" --bn-sync local --out "$T/m5.st"
check "--bn-sync without --distributed is refused" rc=1 err~"--bn-sync applies only with --distributed"

# A distributed checkpoint resumes, under mpirun, to the same bytes as an
# uninterrupted distributed run (rank 0 writes it; every rank reads it).
run "${MPI[@]}" -np 2 "$BNORM" train --distributed --train-size 600 --test-size 200 --epochs 1 --checkpoint-every 4 --out "$T/r.st"
check "a distributed run writes checkpoints" rc=0
run "${MPI[@]}" -np 2 "$BNORM" train --distributed --resume "$T/r.st.ckpt" --epochs 2 --out "$T/r.st"
check "and resumes from them" rc=0 out~"epoch 2/2"
check_true "resumed = uninterrupted, byte for byte" cmp -s "$T/r.st" "$T/m.st"

# One rank fails before the first collective (its data directory is missing):
# the other must not wait for it forever.
run timeout 60 "${MPI[@]}" -np 1 "$BNORM" train --distributed "${SMALL[@]}" --out "$T/m6.st" : \
  -np 1 "$BNORM" train --distributed "${SMALL[@]}" --data "$T/no-such-dir" --out "$T/m6.st"
check "a rank that fails ends every rank, with its message" 'rc!=0' 'secs<60' err~"error (rank 1 of 2)" err~"no-such-dir"

run timeout 60 "${MPI[@]}" -np 1 "$BNORM" train --distributed "${SMALL[@]}" --out "$T/m7.st" : \
  -np 1 "$BNORM" train --distributed "${SMALL[@]}" --lr 0.5 --out "$T/m7.st"
check "ranks started with different options are refused" 'rc!=0' 'secs<60' err~"different training options"

# A rank that dies mid-run (killed, as by the OOM killer): mpirun ends the job.
run timeout 60 "${MPI[@]}" -np 2 bash -c \
  'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then (sleep 1; kill -9 $$) & fi; exec "$0" "$@"' \
  "$BNORM" train --distributed --train-size 20000 --test-size 100 --epochs 50 --out "$T/m8.st"
[ "$RC" -eq 137 ] && RC=1  # mpirun may pass on the signal's status; what matters is no hang
check "a rank killed mid-run ends the job" 'rc!=0' 'secs<60'

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
