#!/usr/bin/python3
"""How far bnorm predict and onnxruntime each are from the exact logits.

Usage:
    /usr/bin/python3 scripts/onnx_precision.py --model FILE --bnorm Y1.npy --ort Y2.npy
        [--images IDX_GZ] [--limit N] [--rtol R]

The model file is evaluated in float64 with torch (the same nn.Sequential
scripts/torch_check_model.py builds, in double; the input normalization
too, from the float32 constants the file holds) on the images, and the two
float32 results, from `bnorm predict --output Y1.npy` and from onnxruntime
(`node scripts/onnx_check.mjs --output Y2.npy`), are each compared with it.
Prints, per result, the largest |float32 - float64| and the largest scaled
error: per example, max_j |y_j - exact_j| / max(1, max_j |exact_j|), also in
units of float32's unit roundoff u = 2^-24.

Float32 rounds relative to the size of what it holds, so an absolute bound
on logits of size 50 asks for a few units of the last place after sums of
hundreds of terms: onnxruntime itself is ~4e-5 from float64 there. With
--rtol R (the check, 1e-5 = 168 u by default) each result must be within
R * max(1, largest |logit| of the example) of float64, and the labels of both
must be float64's (but for ties within that much): both runtimes are held to
the exact answer, not only to each other. Exit 1 otherwise, 77 without torch.
"""

import argparse
import os
import sys

SKIP_EXIT = 77
try:
    import numpy as np
    import torch
except Exception as exc:
    print(f"SKIP: torch not available ({exc})")
    sys.exit(SKIP_EXIT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
import bnorm_model_py  # noqa: E402
import torch_check_model as tcm  # noqa: E402

FLOAT32_EPS = 2.0**-24


def exact_logits(model_path, images):
    torch.set_num_threads(1)  # the result does not need more, and the tests run beside others
    model, mean, std, input_shape = tcm.load_model(model_path)
    _, metadata = safetensors_py.read(model_path)
    divisor = float(bnorm_model_py.json_metadata(metadata, "input_normalization").get("divisor", 1.0))
    model = model.double()
    x = images.astype(np.float64) / divisor
    x = (x - mean.astype(np.float64)) / std.astype(np.float64)
    x = torch.from_numpy(x.reshape([-1, *input_shape]))
    with torch.no_grad():
        return model(x).numpy()


def read_npy(path, rows):
    y = np.load(path)
    if y.shape[0] != rows:
        raise tcm.CheckError(f"{path}: {y.shape[0]} rows, expected {rows}")
    return y.astype(np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--bnorm", required=True, help="bnorm predict --output of the same images")
    parser.add_argument("--ort", required=True, help="onnx_check.mjs --output of the same images")
    parser.add_argument("--images", default=tcm.DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--rtol", type=float, default=1e-5,
                        help="allowed error per example, relative to max(1, its largest |logit|)")
    args = parser.parse_args()
    try:
        images = tcm.read_idx_images(args.images)[: args.limit]
        exact = exact_logits(args.model, images)
        scale = np.maximum(1.0, np.abs(exact).max(axis=1))
        labels = exact.argmax(axis=1)
        second = np.sort(exact, axis=1)[:, -2]
        tie = exact.max(axis=1) - second <= args.rtol * scale
        ok = True
        results = {"bnorm": read_npy(args.bnorm, len(exact)), "onnxruntime": read_npy(args.ort, len(exact))}
        for name, y in results.items():
            error = np.abs(y - exact).max(axis=1)
            scaled = float((error / scale).max())
            wrong_labels = int(((y.argmax(axis=1) != labels) & ~tie).sum())
            print(f"{name}: max |float32 - float64| = {error.max():.3e}, max scaled error = {scaled:.3e} "
                  f"({scaled / FLOAT32_EPS:.1f} u; rtol {args.rtol:g}), labels differ from float64's on "
                  f"{wrong_labels} of {len(exact)}")
            if not (scaled <= args.rtol and wrong_labels == 0):
                print(f"FAIL: {name} is further from float64 than rtol {args.rtol:g} allows")
                ok = False
        between = float(np.abs(results["bnorm"] - results["onnxruntime"]).max())
        print(f"max |bnorm - onnxruntime| = {between:.3e}, max |logit| = {np.abs(exact).max():.3g}")
        return 0 if ok else 1
    except (tcm.CheckError, bnorm_model_py.FormatError) as exc:
        print(f"onnx_precision: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
