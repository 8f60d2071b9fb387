#!/usr/bin/env bash
# bnorm as a package, the ways a user meets it:
#   1. installs the build in a fresh prefix; the shared library has its SONAME;
#   2. builds and runs every examples/*/ as a project of its own against it;
#   3. links both installed libraries (tests/consumer_package);
#   4. builds bnorm inside another project with add_subdirectory
#      (tests/consumer_subdir): without CLI11, GoogleTest or Google Benchmark,
#      and without bnorm's compile options reaching that project's sources.
# Any failure ends the script non-zero.
#   scripts/check_install.sh [build dir]   (default build; built here first if need be)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build}
jobs=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

fail() { echo "check_install: $*" >&2; exit 1; }

cmake --build "$build" -j"$jobs"
cmake --install "$build" --prefix "$prefix" >/dev/null

lib=$(find "$prefix" -name 'libbnorm.so' | head -n 1)
[ -n "$lib" ] || fail "no libbnorm.so under $prefix"
readelf -d "$lib" | grep SONAME | grep -q 'libbnorm\.so\.0\]' || fail "$lib has no SONAME libbnorm.so.0"
echo "== installed: $(readelf -d "$lib" | grep SONAME | sed 's/.*\[\(.*\)\]/SONAME \1/')"

# A project of its own against the prefix: configure, build, run each binary.
build_against_prefix() {
  local src=$1 out=$2
  shift 2
  cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build "$out" -j"$jobs" >/dev/null
  for exe in "$@"; do
    echo "== $(basename "$src")/$exe"
    (cd "$out" && "./$exe") || fail "$exe from $src failed"
  done
}

for dir in examples/*/; do
  name=$(basename "$dir")
  build_against_prefix "$root/$dir" "$tmp/examples/$name" "$name"
done
build_against_prefix "$root/tests/consumer_package" "$tmp/consumer_package" consumer_shared consumer_static

# bnorm under add_subdirectory. Its development tools are ruled out, so a
# find_package for any of them would stop the configure.
sub=$tmp/consumer_subdir
cmake -S tests/consumer_subdir -B "$sub" --no-warn-unused-cli -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=ON -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON >/dev/null
if grep -E '^(CLI11|GTest|benchmark|MPI_CXX)_[A-Z_]*:' "$sub/CMakeCache.txt"; then
  fail "bnorm under add_subdirectory looked for a package it must not need there (above)"
fi
cmake --build "$sub" -j"$jobs" >/dev/null
for exe in consumer_shared consumer_static; do
  echo "== consumer_subdir/$exe"
  "$sub/$exe" || fail "$exe (add_subdirectory) failed"
done
# bnorm's own sources get its options and the consumer's do not: the first
# check shows the second looks at the right lines.
commands=$sub/compile_commands.json
grep '"command"' "$commands" | grep 'src/nn/model\.cpp' | grep -q -- '-ffp-contract=off' ||
  fail "bnorm's sources were compiled without -ffp-contract=off"
consumer=$(grep '"command"' "$commands" | grep 'consumer_subdir/main\.cpp')
[ -n "$consumer" ] || fail "no compile command for tests/consumer_subdir/main.cpp"
for flag in -Wall -Wextra -ffp-contract=off -fno-math-errno -fno-trapping-math -march=native; do
  if grep -q -- "$flag" <<<"$consumer"; then fail "bnorm's $flag reached the consumer's main.cpp"; fi
done
echo "check_install: all passed"
