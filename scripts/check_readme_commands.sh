#!/usr/bin/env bash
# Runs the shell blocks of README.md and docs/*.md that are marked runnable,
# so that the commands the docs show keep working.
#   scripts/check_readme_commands.sh [build dir]   (default build; needs its bnorm tool)
#
# A block is runnable when its fence's info string is "sh runnable":
#   ```sh runnable
#   build/bnorm train --epochs 1
#   ```
# (indented inside a list item too). Other blocks (plain "sh", "cmake", "cpp",
# output) are never run. A runnable block writes only new files in the
# directory it runs in: the repository's own folders are links to the checkout.
#
# Each Markdown file's blocks run in order, each block as one `bash -eo
# pipefail` script, in a scratch directory of their own that mirrors the
# repository (a symbolic link to each top-level entry), so a later block can
# use what an earlier one wrote and nothing is left in the checkout. There
# `build/bnorm` and `bnorm` (on PATH) are a wrapper around the built tool that
# keeps the check short: to `bnorm train` it adds `--train-size 2000`,
# `--test-size 1000` and `--threads 1` (small steps on two threads of a busy
# machine spend most of their time waiting for each other), each unless the
# command gives that flag itself or resumes a checkpoint (`--resume`, whose
# stored configuration wins). Everything else passes through unchanged. The
# first failing block stops the check with its file, line and output; exit
# status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
build_dir=${1:-build}
case "$build_dir" in /*) ;; *) build_dir="$repo/$build_dir" ;; esac
tool="$build_dir/bnorm"
[ -x "$tool" ] || { echo "check_readme_commands: no bnorm tool at $tool (build the bnorm_cli target first)" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The wrapper that stands in for build/bnorm.
mkdir -p "$scratch/bin"
cat > "$scratch/bin/bnorm" <<EOF
#!/usr/bin/env bash
real="$tool"
EOF
cat >> "$scratch/bin/bnorm" <<'EOF'
if [ "${1:-}" = train ]; then
  add_train=(--train-size 2000) add_test=(--test-size 1000) add_threads=(--threads 1)
  for a in "$@"; do
    case "$a" in
      --resume|--resume=*) add_train=() add_test=() add_threads=() ;;
      --train-size|--train-size=*) add_train=() ;;
      --test-size|--test-size=*) add_test=() ;;
      --threads|--threads=*) add_threads=() ;;
    esac
  done
  exec "$real" "$@" "${add_train[@]}" "${add_test[@]}" "${add_threads[@]}"
fi
exec "$real" "$@"
EOF
chmod +x "$scratch/bin/bnorm"

# Writes each runnable block of a Markdown file to <out>/<n>.sh and prints
# "<line of its opening fence>\t<that file>". Any other fence opens a block
# that is skipped up to its closing fence.
extract() {
  local md=$1 out=$2
  awk -v out="$out" '
    /^[ \t]*```/ {
      if (state == "run") { state = ""; close(file); next }
      if (state == "other") { state = ""; next }
      match($0, /^[ \t]*/); indent = RLENGTH
      info = substr($0, indent + 4); gsub(/^[ \t]+|[ \t]+$/, "", info)
      if (info == "sh runnable") { state = "run"; n++; file = out "/" n ".sh"; printf "%d\t%s\n", NR, file; printf "" > file }
      else state = "other"
      next
    }
    state == "run" { print substr($0, indent + 1) > file }
  ' "$md"
}

blocks=0
start=$(date +%s)
for md in README.md docs/*.md; do
  [ -f "$md" ] || continue
  work="$scratch/run-$(basename "$md" .md)"
  mkdir -p "$work/build" "$scratch/blocks-$(basename "$md" .md)"
  for entry in "$repo"/* "$repo"/.[!.]*; do
    name=$(basename "$entry")
    case "$name" in build|.git) continue ;; esac
    ln -s "$entry" "$work/$name"
  done
  ln -s "$scratch/bin/bnorm" "$work/build/bnorm"
  while IFS=$'\t' read -r line body; do
    blocks=$((blocks + 1))
    echo "== $md:$line"
    sed 's/^/   /' "$body"
    t0=$(date +%s)
    if ! (cd "$work" && PATH="$scratch/bin:$PATH" bash -eo pipefail "$body") > "$body.log" 2>&1; then
      echo "check_readme_commands: FAILED: the block at $md:$line; its output:" >&2
      sed 's/^/   | /' "$body.log" >&2
      exit 1
    fi
    echo "   ok, $(( $(date +%s) - t0 )) s"
  done < <(extract "$md" "$scratch/blocks-$(basename "$md" .md)")
done
echo "check_readme_commands: $blocks runnable blocks passed in $(( $(date +%s) - start )) s"
