#!/usr/bin/env python3
"""Fails when a file of a lower layer includes a header of a higher one.

The layers, lowest first: the base utilities (include/bnorm/*.hpp beside the
layer folders, implemented in src/core/), kernels, nn, train, io, cli.
dist and experiments stand beside train: they may include base, kernels, nn,
train and io, but nothing below cli includes them and they do not include
each other. cli may include everything; include/bnorm/bnorm.hpp is the
umbrella header and may too.

A file's layer is the folder under include/bnorm/ or src/ it sits in. An
include's layer is read from its path ("bnorm/<layer>/...") or, for a quoted
include without the bnorm/ prefix, from the file it resolves to (beside the
including file, then under include/ and each src/<layer>/).

Usage: scripts/check_layering.py [REPO]   (default: the repository holding
this script). Prints one line per offending include, file:line: include,
and exits 1 if there is any; 0 and a one-line summary otherwise.
"""
import os
import re
import sys

ORDER = ["base", "kernels", "nn", "train", "io", "cli"]
BESIDE_TRAIN = {"dist", "experiments"}
UMBRELLA = "include/bnorm/bnorm.hpp"
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
SOURCE_SUFFIXES = (".hpp", ".h", ".cpp", ".cc", ".inl")


def layer_of(rel):
    """The layer of a repository-relative path, or None when it has none."""
    parts = rel.split("/")
    if parts[0] == "include" and len(parts) >= 3 and parts[1] == "bnorm":
        return "base" if len(parts) == 3 else parts[2]
    if parts[0] == "src" and len(parts) >= 3:
        return "base" if parts[1] == "core" else parts[1]
    return None


def allowed(lower, upper):
    """May a file of layer `lower` include a header of layer `upper`?"""
    if lower == upper or lower == "cli":
        return True
    if upper in BESIDE_TRAIN:
        return False  # only cli and the folder itself include dist/experiments
    if lower in BESIDE_TRAIN:
        return ORDER.index(upper) <= ORDER.index("io")
    if lower not in ORDER or upper not in ORDER:
        return False  # a new folder: give it a place in ORDER first
    return ORDER.index(upper) <= ORDER.index(lower)


def resolve(repo, including_rel, target, quoted):
    """The repository-relative path an include names, or None (a system header)."""
    if target.startswith("bnorm/"):
        return "include/" + target
    if not quoted:
        return None
    beside = os.path.normpath(os.path.join(os.path.dirname(including_rel), target))
    if os.path.isfile(os.path.join(repo, beside)):
        return beside
    src = os.path.join(repo, "src")
    for folder in sorted(os.listdir(src)):
        candidate = os.path.join("src", folder, target)
        if os.path.isfile(os.path.join(repo, candidate)):
            return candidate
    return None


def main():
    repo = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    violations = []
    checked = 0
    for top in ("include", "src"):
        for dirpath, _, files in os.walk(os.path.join(repo, top)):
            for name in sorted(files):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), repo)
                own = layer_of(rel)
                if own is None or rel == UMBRELLA:
                    continue
                with open(os.path.join(repo, rel), encoding="utf-8") as f:
                    for number, line in enumerate(f, 1):
                        m = INCLUDE_RE.match(line)
                        if not m:
                            continue
                        target = resolve(repo, rel, m.group(2), m.group(1) == '"')
                        theirs = layer_of(target) if target else None
                        if theirs is None:
                            continue
                        checked += 1
                        if not allowed(own, theirs):
                            violations.append(f"{rel}:{number}: {line.strip()}  ({own} includes {theirs})")
    for v in violations:
        print(v)
    if violations:
        print(f"layering: {len(violations)} include(s) point up the layer order "
              f"(base < kernels < nn < train < io < cli; dist, experiments beside train)", file=sys.stderr)
        return 1
    print(f"layering: {checked} includes checked, none points up the layer order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
