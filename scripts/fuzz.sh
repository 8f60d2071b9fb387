#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for
# the given number of seconds (default 60), starting from the checked-in
# seeds in fuzz/corpus/<target>/. Inputs the fuzzer finds go to
# build-fuzz/corpus/<target>/ (not the source tree); a crash leaves its input
# in build-fuzz/artifacts/ and makes this script exit non-zero.
#   scripts/fuzz.sh [seconds] [target...]
# Needs clang and libclang-rt-14-dev from Debian (.ci/run installs them with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_model_file fuzz_idx fuzz_architecture fuzz_csv fuzz_npy)

cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBNORM_FUZZ=ON -DBNORM_BUILD_TESTS=OFF -DBNORM_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"

mkdir -p build-fuzz/artifacts
status=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "== $t: ${seconds}s"
  # -rss_limit_mb/-malloc_limit_mb: an input that makes a reader allocate more
  # than 1 GiB is a finding (readers must refuse before allocating).
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-fuzz/fuzz/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -artifact_prefix="build-fuzz/artifacts/$t-" -print_final_stats=1 \
      "build-fuzz/corpus/$t" "fuzz/corpus/$t" 2>"build-fuzz/$t.log"; then
    echo "$t: FAILED (see build-fuzz/$t.log and build-fuzz/artifacts/)" >&2
    tail -n 40 "build-fuzz/$t.log" >&2
    status=1
  fi
  grep -E '^stat::number_of_executed_units|^stat::new_units_added|Done [0-9]+ runs' "build-fuzz/$t.log" || true
done
exit $status
