#!/usr/bin/env bash
# Installs from Debian's archive those of the packages named that are not
# installed yet (as root; otherwise says what is needed and installs nothing).
# Shared by setup.sh and aarch64_check.sh.
#   scripts/install_missing.sh CALLER PACKAGE...
set -euo pipefail
caller=$1
shift
if [ "$(id -u)" != 0 ]; then
  echo "$caller: not root, so not installing packages; needed: $*" >&2
  exit 0
fi
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
