#!/usr/bin/python3
"""Write a bnorm model file from a PyTorch nn.Sequential, state_dict and all.

Usage:
    /usr/bin/python3 scripts/torch_to_bnorm.py --module MODEL.pt --out MODEL.safetensors
        [--input-shape C,H,W] [--classify]

MODEL.pt is a whole module saved with torch.save(model, "MODEL.pt"), where
model is a torch.nn.Sequential of Linear, Conv2d, BatchNorm1d/2d, ReLU, Tanh,
Sigmoid, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout and
Identity.  Its state_dict goes into the file as it is: weights, running
statistics and num_batches_tracked; momentum (None too), eps and affine into
the architecture.  --input-shape is one example's shape; it may be left out
when the first layer is a Linear.  The model takes raw inputs; its outputs
are raw values (predict writes them as they are) unless --classify says they
are class scores.  scripts/torch_check_model.py goes the other way.

Exit codes: 0 written, 1 a module bnorm cannot hold or a bad file (nothing
written), 77 torch not installed.
"""

import argparse
import os
import sys

try:
    import torch
except Exception as exc:  # ImportError, or a broken install raising anything else
    print(f"SKIP: torch not available ({exc})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bnorm_model_py  # noqa: E402


def input_shape_of(sequential, text):
    if text:
        try:
            shape = [int(v) for v in text.split(",")]
        except ValueError:
            shape = []
        if not shape or min(shape) < 1:
            raise bnorm_model_py.FormatError(f"--input-shape {text!r}: write positive sizes separated by commas, e.g. 1,28,28")
        return shape
    first = next(iter(sequential), None)
    if isinstance(first, torch.nn.Linear):
        return [first.in_features]
    raise bnorm_model_py.FormatError("the first layer is not a Linear, so give --input-shape (e.g. 1,28,28)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="torch.save'd torch.nn.Sequential")
    parser.add_argument("--out", required=True, help="bnorm model file to write")
    parser.add_argument("--input-shape", default="", help="one example's shape, e.g. 1,28,28")
    parser.add_argument("--classify", action="store_true", help="the outputs are class scores")
    args = parser.parse_args()
    try:
        try:
            sequential = torch.load(args.module, map_location="cpu")
        except Exception as exc:  # pickle, zip and torch errors alike
            raise bnorm_model_py.FormatError(f"cannot load a module: {exc}") from exc
        architecture = bnorm_model_py.write_model(
            args.out, sequential, input_shape_of(sequential, args.input_shape), classify=args.classify,
            training={"converted_from": args.module})
    except bnorm_model_py.FormatError as exc:
        print(f"torch_to_bnorm: error: {args.module}: {exc}", file=sys.stderr)
        return 1
    kinds = ",".join(layer["type"] for layer in architecture["layers"])
    print(f"wrote {args.out}: input {architecture['input_shape']}, layers {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
