"""Compares the batch-norm tensors of two bnorm model files.

Usage: bn_tensors.py A B KIND   (KIND: stats or affine)

Exit 0 when every running_mean and running_var (stats) or every BN weight and
bias (affine) is bit-identical in A and B, 1 when any differs.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402


def bn_names(metadata, kind):
    layers = json.loads(metadata["architecture"])["layers"]
    suffixes = ("running_mean", "running_var") if kind == "stats" else ("weight", "bias")
    return [f"{i}.{s}" for i, layer in enumerate(layers) if layer["type"] == "batchnorm" for s in suffixes]


def main():
    a_tensors, a_meta = safetensors_py.read(sys.argv[1])
    b_tensors, _ = safetensors_py.read(sys.argv[2])
    names = bn_names(a_meta, sys.argv[3])
    same = all(a_tensors[n].tobytes() == b_tensors[n].tobytes() for n in names)
    sys.exit(0 if names and same else 1)


if __name__ == "__main__":
    main()
