#!/usr/bin/env bash
# `bnorm experiment all --quick` as CI runs it: every experiment writes its
# report.md, every plot the report embeds exists as a PNG, and the index
# links every report. Also: an unknown experiment is refused, and a missing
# gnuplot is named in the error.
# Usage: tests/experiment_quick.sh path/to/bnorm   (exit 77: dataset or gnuplot absent)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cli_lib.sh
. "$HERE/cli_lib.sh"
cli_test_begin bnorm_experiment 1 "path/to/bnorm" "$@"
need_fashion_mnist
gnuplot -e "set terminal pngcairo" >/dev/null 2>&1 || { echo "SKIP: gnuplot with pngcairo is absent"; exit 77; }

FAILED=0
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }

start=$(date +%s)
if ! "$BNORM" experiment all --quick --out "$T/reports" --threads 2 >"$T/out" 2>"$T/err"; then
  cat "$T/out" "$T/err"
  fail "bnorm experiment all --quick exited with status $?"
fi
echo "experiment all --quick: $(($(date +%s) - start)) s"

for name in speed covariate-shift regularization test-time input-normalization small-batch; do
  dir="$T/reports/$name"
  report="$dir/report.md"
  [ -s "$report" ] || { fail "$name: no report.md"; continue; }
  grep -q '^## Conclusions' "$report" || fail "$name: report has no conclusions"
  grep -q '^- command: `.*experiment all --quick' "$report" || fail "$name: report does not record the command"
  grep -q '^- machine: ' "$report" || fail "$name: report does not record the machine"
  ls "$dir"/*.csv >/dev/null 2>&1 || fail "$name: no CSV file"
  pngs=$(grep -o '([^()]*\.png)' "$report" | tr -d '()')
  [ -n "$pngs" ] || fail "$name: report embeds no plot"
  for png in $pngs; do
    f="$dir/$png"
    if [ ! -s "$f" ] || [ "$(head -c 4 "$f" | tail -c 3)" != "PNG" ]; then fail "$name: $png is not a PNG"; fi
  done
  grep -q "($name/report.md)" "$T/reports/README.md" || fail "index does not link $name"
  echo "ok: $name ($(echo "$pngs" | wc -w) plots)"
done

"$BNORM" experiment nonsense --quick --out "$T/x" >/dev/null 2>"$T/err" && fail "an unknown experiment was accepted"
grep -q "unknown experiment 'nonsense'" "$T/err" || fail "unknown experiment: message was: $(cat "$T/err")"

# Without gnuplot on the PATH the error names it and the exit status is 1.
mkdir -p "$T/bin"
for tool in bash sh; do ln -s "$(command -v $tool)" "$T/bin/$tool"; done
PATH="$T/bin" "$BNORM" experiment speed --quick --out "$T/y" >/dev/null 2>"$T/err"
rc=$?
[ $rc -eq 1 ] || fail "without gnuplot: exit status $rc, expected 1"
grep -q "gnuplot" "$T/err" || fail "without gnuplot: message does not name it: $(cat "$T/err")"

if [ $FAILED -gt 0 ]; then echo "$FAILED check(s) failed"; exit 1; fi
echo "all checks passed"
