#!/usr/bin/python3
"""Check that a bnorm model file loads into PyTorch and gives the same logits.

Usage:
    /usr/bin/python3 scripts/torch_check_model.py --model FILE --bnorm PATH/TO/bnorm
        [--images IDX_GZ] [--count 200] [--tol 1e-5]

The model file (safetensors) is rebuilt as a torch.nn.Sequential from its
"architecture" metadata, loaded with load_state_dict(strict=True) and run in
eval mode on the first --count images.  `bnorm predict ... --json` is run on
the same images and every logit must satisfy

    |bnorm - torch| <= tol * (1 + |torch|)

with identical predicted labels.  Exit codes: 0 OK, 1 mismatch or error,
77 when torch is not installed (ctest treats 77 as "skipped" when the test
sets SKIP_RETURN_CODE 77).
"""

import argparse
import gzip
import json
import os
import subprocess
import sys

SKIP_EXIT = 77

# Without torch there is nothing to compare against; report a skip rather than
# a failure so that machines without PyTorch still pass the test suite.
try:
    import numpy as np
    import torch
except Exception as exc:  # ImportError, or a broken install raising anything else
    print(f"SKIP: torch not available ({exc})")
    sys.exit(SKIP_EXIT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bnorm_model_py  # noqa: E402

DEFAULT_IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


class CheckError(Exception):
    """A failure to report as one clear line before exiting 1."""


def read_idx_images(path):
    """Decode a (possibly gzipped) unsigned-byte IDX image file to [N, H*W]."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise CheckError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if ndim < 2 or len(raw) - start != int(np.prod(dims)):
        raise CheckError(f"{path}: IDX dimensions {dims} do not match its size")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims[0], -1)


def load_model(path):
    """Return (model in eval mode, normalization mean, std, input size)."""
    try:
        tensors, metadata, architecture = bnorm_model_py.read_model(path)
        normalization = bnorm_model_py.json_metadata(metadata, "input_normalization")
    except bnorm_model_py.FormatError as exc:
        raise CheckError(str(exc)) from exc
    input_shape = architecture.get("input_shape")
    if not isinstance(input_shape, list) or len(input_shape) not in (1, 3):
        raise CheckError(f"unsupported input_shape {input_shape!r}")

    try:
        model = bnorm_model_py.build_sequential(architecture)
    except bnorm_model_py.FormatError as exc:
        raise CheckError(str(exc)) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckError(f"bad layer description: {exc!r}") from exc
    state = {name: torch.from_numpy(array) for name, array in tensors.items()}
    for name, value in bnorm_model_py.fixed_bn_parameters(architecture).items():
        if name in state:
            raise CheckError(f"{name}: the layer does not learn it, yet the file holds it")
        state[name] = value
    # load_state_dict alone is not strict enough: BatchNorm quietly fills in a
    # missing num_batches_tracked (for old checkpoints) and copy_ converts
    # dtypes, so compare names and dtypes against the module ourselves.
    expected_state = model.state_dict()
    missing = sorted(set(expected_state) - set(state))
    unexpected = sorted(set(state) - set(expected_state))
    if missing or unexpected:
        raise CheckError(f"tensor names do not match the architecture: "
                         f"missing {missing}, unexpected {unexpected}")
    for name, tensor in state.items():
        if tensor.dtype != expected_state[name].dtype:
            raise CheckError(f"{name}: dtype {tensor.dtype}, expected {expected_state[name].dtype}")
    try:
        # strict=True: every tensor must have a home and every parameter or
        # buffer must be in the file, so a naming mismatch cannot slip through.
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckError(f"load_state_dict failed: {exc}") from exc
    model.eval()

    mode = normalization.get("mode")
    mean = np.asarray(normalization.get("mean"), dtype=np.float32)
    std = np.asarray(normalization.get("std"), dtype=np.float32)
    features = int(np.prod(input_shape))
    expected = {"global": 1, "pixel": features}.get(mode)
    if expected is None or mean.shape != (expected,) or std.shape != (expected,):
        raise CheckError(f"bad input_normalization: mode {mode!r}, "
                         f"mean shape {mean.shape}, std shape {std.shape}")
    return model, mean, std, input_shape


def run_bnorm(bnorm, model_path, images_path, count):
    """Run `bnorm predict` and return {index: (label, logits)}."""
    command = [bnorm, "predict", "--model", model_path, "--input", images_path,
               "--limit", str(count), "--json"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CheckError(f"cannot run {bnorm}: {exc}") from exc
    if result.returncode != 0:
        raise CheckError(f"{' '.join(command)} exited with {result.returncode}:\n"
                         f"{result.stderr.strip()}")
    predictions = {}
    for line_number, line in enumerate(result.stdout.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            index, label, logits = int(record["index"]), int(record["label"]), record["logits"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckError(f"bnorm output line {line_number} is not a prediction: {line!r}") from exc
        if index in predictions:
            raise CheckError(f"bnorm printed index {index} twice")
        predictions[index] = (label, np.asarray(logits, dtype=np.float64))
    return predictions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="bnorm model file (safetensors)")
    parser.add_argument("--bnorm", required=True, help="path to the bnorm executable")
    parser.add_argument("--images", default=DEFAULT_IMAGES, help="IDX image file (.gz or raw)")
    parser.add_argument("--count", type=int, default=200, help="number of leading images to compare")
    parser.add_argument("--tol", type=float, default=1e-5, help="relative tolerance per logit")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")

    try:
        model, mean, std, input_shape = load_model(args.model)
        images = read_idx_images(args.images)[: args.count]
        if images.shape[1] != int(np.prod(input_shape)):
            raise CheckError(f"images have {images.shape[1]} pixels, model expects {input_shape}")
        count = images.shape[0]

        # Same float32 arithmetic, in the same order, as the documented
        # normalization x = (pixel/255 - mean)/std, to keep input rounding
        # from eating into the tolerance.
        x = (images.astype(np.float32) / np.float32(255.0) - mean) / std
        with torch.no_grad():
            logits = model(torch.from_numpy(x).reshape(count, *input_shape)).double().numpy()
        labels = logits.argmax(axis=1)

        predictions = run_bnorm(args.bnorm, args.model, args.images, count)
        if sorted(predictions) != list(range(count)):
            raise CheckError(f"bnorm returned indices {sorted(predictions)[:5]}... "
                             f"({len(predictions)} in all), expected 0..{count - 1}")

        max_diff = 0.0
        failures = []
        for i in range(count):
            label, bnorm_logits = predictions[i]
            if bnorm_logits.shape != logits[i].shape:
                raise CheckError(f"example {i}: bnorm gave {bnorm_logits.size} logits, "
                                 f"torch {logits.shape[1]}")
            diff = np.abs(bnorm_logits - logits[i])
            max_diff = max(max_diff, float(diff.max()))
            bad = np.nonzero(diff > args.tol * (1.0 + np.abs(logits[i])))[0]
            if bad.size:
                k = int(bad[0])
                failures.append(f"example {i} logit {k}: bnorm {bnorm_logits[k]!r} "
                                f"vs torch {logits[i][k]!r}")
            if label != labels[i]:
                failures.append(f"example {i}: bnorm label {label} vs torch label {labels[i]}")
    except CheckError as exc:
        print(f"FAIL: {exc}")
        return 1

    print(f"compared {count} examples, max abs logit diff {max_diff:.3g} (tol {args.tol:g})")
    if failures:
        for line in failures[:10]:
            print(f"  {line}")
        if len(failures) > 10:
            print(f"  ... and {len(failures) - 10} more")
        print(f"FAIL: {len(failures)} mismatches between bnorm and PyTorch")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
