#!/usr/bin/env bash
# Fails (non-zero) when a tracked C++ file is not as clang-format would write
# it with the repository's .clang-format; prints each place that differs.
#   scripts/check_format.sh            every tracked C++ file under include/ src/
#                                      tests/ bench/ examples/ fuzz/
#   scripts/check_format.sh FILE...    only these files
# To fix a file: clang-format -i FILE. Needs Debian's clang-format (setup.sh --tests).
set -euo pipefail
cd "$(dirname "$0")/.."

clang_format=${CLANG_FORMAT:-clang-format}
if ! command -v "$clang_format" >/dev/null; then
  echo "check_format: $clang_format not found (apt-get install clang-format)" >&2
  exit 2
fi

if [ "$#" -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files -- include src tests bench examples fuzz |
                       grep -E '\.(cpp|hpp|h|cc)$')
fi

# --Werror turns each difference into an error; clang-format still checks every
# file, so one run lists them all.
if "$clang_format" --style=file --dry-run --Werror "${files[@]}"; then
  echo "check_format: ${#files[@]} files as .clang-format writes them"
else
  echo "check_format: files differ from .clang-format (clang-format -i FILE fixes one)" >&2
  exit 1
fi
