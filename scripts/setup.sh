#!/usr/bin/env bash
# Sets up bnorm on Debian 12: installs what it needs from Debian's archive
# (as root; skipped otherwise) and builds it in build/.
#   scripts/setup.sh            the library, the bnorm tool (with OpenMPI for --distributed, ONNX for
#                               export) and Fashion-MNIST
#   scripts/setup.sh --tests    also PyTorch, for the tests that compare with it, python3-onnx (the
#                               ONNX checker, for the export test), scikit-learn
#                               (its small real datasets, for the tests on CSV and NumPy data), and
#                               gnuplot (pngcairo), for the test that runs the experiments, and
#                               clang-format, for scripts/check_format.sh
# Environment: BNORM_BUILD_DIR (default build), BNORM_CMAKE_FLAGS (e.g.
# "-DBNORM_NATIVE=ON" for this machine's instruction set, "-DBNORM_SANITIZE=ON").
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake make libopenblas-dev libdnnl-dev zlib1g-dev nlohmann-json3-dev libcli11-dev libgtest-dev libbenchmark-dev
          openmpi-bin libopenmpi-dev
          libonnx-dev libprotobuf-dev
          dataset-fashion-mnist)
if [ "${1:-}" = "--tests" ]; then
  packages+=(python3-torch python3-numpy python3-sklearn gnuplot-nox python3-onnx clang-format)
fi

bash scripts/install_missing.sh setup.sh "${packages[@]}"

build_dir=${BNORM_BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${BNORM_CMAKE_FLAGS:-}
cmake --build "$build_dir" -j"$(nproc)"
