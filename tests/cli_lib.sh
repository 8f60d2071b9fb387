# Shared by the CLI test scripts (sourced first thing): the preamble
# (cli_test_begin), and run + check, which run a command and check its exit
# status and output, one PASS/FAIL line each (in the scratch directory $T).
DATA=/usr/share/datasets/fashion-mnist

# cli_test_begin NAME NARGS USAGE "$@": refuses a wrong call (exit 2 with
# "usage: <script> USAGE"; NARGS is a count or MIN-MAX, and the first
# argument must be the bnorm tool), sets BNORM to the tool's absolute path,
# CALLER_DIR to the directory it was called from (for the other arguments) and
# T to a fresh scratch directory removed at exit, and moves into it (so a
# stray default model.safetensors lands there, not in the source tree).
cli_test_begin() {
  local name=$1 nargs=$2 usage=$3
  shift 3
  local min=${nargs%-*} max=${nargs#*-}
  if [ $# -lt "$min" ] || [ $# -gt "$max" ] || [ ! -x "$1" ]; then
    echo "usage: $0 $usage" >&2
    exit 2
  fi
  BNORM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
  CALLER_DIR=$PWD  # where relative arguments are relative to
  T=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX") || exit 2
  # shellcheck disable=SC2064  # $T is fixed now
  trap "rm -rf '$T'" EXIT
  cd "$T" || exit 2
}

# Exit 77 (ctest: skipped) where Debian's Fashion-MNIST is not installed.
need_fashion_mnist() {
  [ -d "$DATA" ] || { echo "SKIP: $DATA is absent"; exit 77; }
}

PASSED=0
FAILED=0
RC=0
OUT=""
ERR=""
SECS=0

# run CMD...: runs with a time limit, keeps exit status, stdout, stderr and seconds.
run() {
  local start end
  start=$(date +%s%N)
  timeout 300 "$@" >"$T/.out" 2>"$T/.err" </dev/null
  RC=$?
  end=$(date +%s%N)
  SECS=$(((end - start) / 1000000000))
  OUT=$(cat "$T/.out")
  ERR=$(cat "$T/.err")
}

# check NAME EXPECTATION...: one PASS/FAIL line for the last run.
#   rc=N  rc!=0  out~TEXT  err~TEXT  !err~TEXT  !out~TEXT  outlines=N  secs<N
# Every check also refuses a death by signal (exit >= 128), a timeout (124)
# and an internal error (exit 2 with "internal error").
check() {
  local name=$1
  shift
  local problems=()
  if [ "$RC" -ge 128 ]; then problems+=("killed by a signal (exit $RC)"); fi
  if [ "$RC" -eq 124 ]; then problems+=("timed out"); fi
  case "$ERR" in *"internal error"* | *"terminate called"* | *"Segmentation"* | *"Aborted"*)
    problems+=("crash or internal error on stderr") ;;
  esac
  local e
  for e in "$@"; do
    case "$e" in
      'rc!=0') [ "$RC" -ne 0 ] || problems+=("exit status 0, expected non-zero") ;;
      rc=*) [ "$RC" -eq "${e#rc=}" ] || problems+=("exit status $RC, expected ${e#rc=}") ;;
      out~*) [[ "$OUT" == *"${e#out~}"* ]] || problems+=("stdout lacks '${e#out~}'") ;;
      err~*) [[ "$ERR" == *"${e#err~}"* ]] || problems+=("stderr lacks '${e#err~}'") ;;
      '!out~'*) [[ "$OUT" != *"${e#!out~}"* ]] || problems+=("stdout contains '${e#!out~}'") ;;
      '!err~'*) [[ "$ERR" != *"${e#!err~}"* ]] || problems+=("stderr contains '${e#!err~}'") ;;
      outlines=*)
        local n
        n=$(grep -c '' "$T/.out")
        [ "$n" -eq "${e#outlines=}" ] || problems+=("stdout has $n lines, expected ${e#outlines=}") ;;
      'secs<'*) [ "$SECS" -lt "${e#secs<}" ] || problems+=("took ${SECS}s, expected under ${e#secs<}s") ;;
      *) problems+=("unknown expectation '$e'") ;;
    esac
  done
  if [ ${#problems[@]} -eq 0 ]; then
    PASSED=$((PASSED + 1))
    echo "PASS: $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL: $name"
    local p
    for p in "${problems[@]}"; do echo "      $p"; done
    echo "      exit $RC; stderr: $(printf '%s' "$ERR" | head -c 400)"
  fi
}

# A plain condition that is not about the last run's output.
check_true() {
  local name=$1
  shift
  if "$@"; then
    PASSED=$((PASSED + 1))
    echo "PASS: $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL: $name"
  fi
}

no_temp_files() { ! compgen -G "$1/.*.tmp-*" >/dev/null; }
