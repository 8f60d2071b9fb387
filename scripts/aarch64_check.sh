#!/usr/bin/env bash
# Builds the library and the batch-norm test programs for aarch64 with a cross
# compiler and runs them under qemu-user: the kernels must compile and give
# correct results where their x86 paths are not compiled (there, the plain
# reference computes them). As root, first installs what that needs: the cross
# compiler, qemu-user and the arm64 libraries, side by side with the amd64
# ones (multiarch; nlohmann-json and CLI11 are headers, shared by both).
# Environment: BNORM_AARCH64_BUILD_DIR (default build-aarch64).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

packages=(g++-aarch64-linux-gnu qemu-user libopenblas-dev:arm64 zlib1g-dev:arm64 libgtest-dev:arm64 libgomp1:arm64
          libstdc++6:arm64)
# The arm64 packages can be named only once dpkg knows the architecture.
if [ "$(id -u)" = 0 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
bash scripts/install_missing.sh aarch64_check.sh "${packages[@]}"

build_dir=${BNORM_AARCH64_BUILD_DIR:-build-aarch64}
tests=(test_bn_kernels test_gradcheck test_bn_golden test_cpu_caches test_small_gemm)
# Tests are listed when CTest runs, not after each link: under qemu a listing
# costs seconds, and only the programs below are run here.
cmake -S . -B "$build_dir" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
  -DBNORM_BUILD_TESTS=ON -DBNORM_BUILD_BENCH=OFF -DBNORM_MPI=OFF \
  -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST
cmake --build "$build_dir" -j"$(nproc)" --target "${tests[@]}"

readelf -h "$build_dir/tests/test_bn_kernels" | grep -q "Machine: *AArch64" || { echo "not an aarch64 build" >&2; exit 1; }
failed=0
for t in "${tests[@]}"; do
  echo "== $t (qemu-aarch64)"
  OMP_NUM_THREADS=2 qemu-aarch64 "$build_dir/tests/$t" --gtest_brief=1 || failed=1
done
echo "aarch64_check.sh: $([ $failed = 0 ] && echo passed || echo FAILED) in $((SECONDS - started)) s"
exit $failed
