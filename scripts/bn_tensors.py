"""Compares the batch-norm tensors of two bnorm model files.

Usage: bn_tensors.py A B KIND [RTOL]   (KIND: stats or affine)

Exit 0 when every running_mean and running_var (stats) or every BN weight and
bias (affine) is bit-identical in A and B, 1 when any differs. With RTOL
(stats only): equal to RTOL relative, a mean measured against the channel's
standard deviation (a mean near 0 is float rounding of its inputs there, as
in `bnorm recalibrate`'s drift report), a variance against itself.
"""

import json
import os
import sys

import numpy as np

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
    if len(sys.argv) > 4:
        rtol = float(sys.argv[4])
        same = True
        for n in names:
            a, b = a_tensors[n].astype(np.float64), b_tensors[n].astype(np.float64)
            scale = np.abs(b)
            if n.endswith("running_mean"):
                scale = np.maximum(scale, np.sqrt(b_tensors[n[: -len("mean")] + "var"].astype(np.float64)))
            worst = float((np.abs(a - b) / np.maximum(scale, 1e-30)).max())
            print(f"{n}: largest relative difference {worst:.3g}")
            same = same and worst <= rtol
    else:
        same = all(a_tensors[n].tobytes() == b_tensors[n].tobytes() for n in names)
    sys.exit(0 if names and same else 1)


if __name__ == "__main__":
    main()
