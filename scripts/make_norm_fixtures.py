#!/usr/bin/python3
"""Generate PyTorch golden values for bnorm's GroupNorm and LayerNorm tests.

Writes tests/fixtures/group_layer_norm_golden.safetensors, read by
tests/test_group_layer_norm.cpp through the project's safetensors reader.
For every case a float32 torch.nn.GroupNorm or torch.nn.LayerNorm (with
normalized_shape the example shape, as bnorm's LayerNorm) runs one forward
and backward of sum(y * dy); the tensors are stored under

    <case>.x, <case>.dy, <case>.y, <case>.dx
    <case>.weight, <case>.bias, <case>.dweight, <case>.dbias   (affine cases)

and the case list as JSON in the "cases" metadata entry.  The layers have no
running statistics, so one step says everything and eval mode is the same.

Usage:
    /usr/bin/python3 scripts/make_norm_fixtures.py [--output PATH] [--verify]

--verify re-reads the file and cross-checks torch's results against an
independent float64 numpy implementation of the formulas.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "tests", "fixtures", "group_layer_norm_golden.safetensors")

# Each case seeds its own generator with BASE_SEED + its index.
BASE_SEED = 20261129

# groups: GroupNorm's num_groups (kind "gn" only).  x = input_mean + input_std * N(0, 1).
CASES = [
    # (N, C): one group, groups in between, one channel per group (a single
    # value per group: var 0, y = bias, dx = 0).
    dict(kind="gn", shape=[4, 6], groups=3, eps=1e-5, affine=True),
    dict(kind="gn", shape=[3, 8], groups=1, eps=1e-5, affine=True),
    dict(kind="gn", shape=[5, 6], groups=6, eps=1e-5, affine=True),
    # (N, C, H, W): groups 1, C and in between, odd spatial sizes.
    dict(kind="gn", shape=[2, 6, 5, 7], groups=3, eps=1e-5, affine=True),
    dict(kind="gn", shape=[3, 4, 3, 3], groups=1, eps=1e-3, affine=True),
    dict(kind="gn", shape=[2, 8, 4, 4], groups=8, eps=1e-5, affine=True, input_mean=100.0, input_std=2.0),
    dict(kind="gn", shape=[2, 6, 3, 5], groups=2, eps=1e-5, affine=False),
    dict(kind="gn", shape=[1, 4, 1, 9], groups=2, eps=1e-5, affine=True, input_mean=-3.0, input_std=0.5),
    # LayerNorm over the whole example.
    dict(kind="ln", shape=[4, 10], eps=1e-5, affine=True),
    dict(kind="ln", shape=[3, 7], eps=1e-3, affine=True, input_mean=50.0, input_std=2.0),
    dict(kind="ln", shape=[2, 3, 4, 5], eps=1e-5, affine=True),
    dict(kind="ln", shape=[5, 4, 2, 2], eps=1e-5, affine=False),
    dict(kind="ln", shape=[1, 2, 3, 3], eps=1e-5, affine=True),
]


def describe_cases():
    descriptors = []
    for index, case in enumerate(CASES):
        descriptors.append({
            "name": f"case{index}",
            "kind": case["kind"],
            "shape": list(case["shape"]),
            "groups": case.get("groups", 1),
            "eps": case["eps"],
            "affine": case["affine"],
            "input_mean": case.get("input_mean", 0.0),
            "input_std": case.get("input_std", 1.0),
        })
    return descriptors


def as_numpy(tensor):
    return tensor.detach().cpu().numpy().copy()


def make_module(desc):
    shape = desc["shape"]
    if desc["kind"] == "gn":
        return torch.nn.GroupNorm(desc["groups"], shape[1], eps=desc["eps"], affine=desc["affine"])
    return torch.nn.LayerNorm(shape[1:], eps=desc["eps"], elementwise_affine=desc["affine"])


def run_case(desc, seed):
    gen = torch.Generator().manual_seed(seed)
    module = make_module(desc).float()
    name = desc["name"]
    out = []
    if desc["affine"]:
        # The defaults (weight 1, bias 0) would hide scale and shift mistakes.
        with torch.no_grad():
            module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=gen))
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
    noise = torch.randn(desc["shape"], generator=gen, dtype=torch.float32)
    x = (desc["input_mean"] + desc["input_std"] * noise).float().requires_grad_(True)
    dy = torch.randn(desc["shape"], generator=gen, dtype=torch.float32)
    y = module(x)
    (y * dy).sum().backward()
    out += [(f"{name}.x", as_numpy(x)), (f"{name}.dy", as_numpy(dy)),
            (f"{name}.y", as_numpy(y)), (f"{name}.dx", as_numpy(x.grad))]
    if desc["affine"]:
        out += [(f"{name}.weight", as_numpy(module.weight)), (f"{name}.bias", as_numpy(module.bias)),
                (f"{name}.dweight", as_numpy(module.weight.grad)), (f"{name}.dbias", as_numpy(module.bias.grad))]
    return out


def build():
    torch.set_num_threads(1)  # the same bits on every run
    descriptors = describe_cases()
    tensors = []
    for index, desc in enumerate(descriptors):
        case_tensors = run_case(desc, BASE_SEED + index)
        # How far torch's float32 result is from the exact one: large where a
        # group holds one or two values (the dx formula then cancels almost
        # completely); the C++ test allows bnorm this much on top of its bound.
        desc["torch_deviation"] = float(f"{deviation(desc, dict(case_tensors)):.3g}")
        tensors.extend(case_tensors)
    metadata = {
        "format": "bnorm-fixture",
        "version": "1",
        "generator": "scripts/make_norm_fixtures.py",
        "torch_version": str(torch.__version__),
        "cases": json.dumps(descriptors),
    }
    return tensors, metadata


# ---------------------------------------------------------------------------
# Verification against float64 numpy, written from the papers' definitions.


def reference(desc, x, dy, weight, bias):
    """y, dx, dweight, dbias in float64; weight/bias broadcast per channel (gn) or per value (ln)."""
    n = x.shape[0]
    groups = desc["groups"] if desc["kind"] == "gn" else 1
    rows = x.reshape(n, groups, -1)
    count = rows.shape[2]
    mean = rows.mean(axis=2, keepdims=True)
    inv_std = 1.0 / np.sqrt(rows.var(axis=2, keepdims=True) + desc["eps"])  # biased variance
    x_hat = ((rows - mean) * inv_std).reshape(x.shape)
    if desc["kind"] == "gn":
        pshape = (1, -1) + (1,) * (x.ndim - 2)
        axes = (0,) + tuple(range(2, x.ndim))
    else:
        pshape = (1,) + x.shape[1:]
        axes = (0,)
    w = weight.reshape(pshape)
    y = w * x_hat + bias.reshape(pshape)
    g = (dy * w).reshape(n, groups, -1)
    xh = x_hat.reshape(n, groups, -1)
    dx = inv_std / count * (count * g - g.sum(axis=2, keepdims=True)
                            - xh * (g * xh).sum(axis=2, keepdims=True))
    return y, dx.reshape(x.shape), (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def relative_error(got, want):
    got = np.asarray(got, dtype=np.float64)
    return float(np.max(np.abs(got - want) / (1.0 + np.abs(want)), initial=0.0))


def exact_results(desc, t):
    """(name suffix, float64 value) of every result tensor of a case, from its inputs."""
    t = {k.rsplit(".", 1)[1]: np.asarray(v, dtype=np.float64) for k, v in t.items()}
    pshape = [desc["shape"][1]] if desc["kind"] == "gn" else desc["shape"][1:]
    weight = t["weight"] if desc["affine"] else np.ones(pshape)
    bias = t["bias"] if desc["affine"] else np.zeros(pshape)
    y, dx, dweight, dbias = reference(desc, t["x"], t["dy"], weight, bias)
    results = [("y", y), ("dx", dx)]
    if desc["affine"]:
        results += [("dweight", dweight), ("dbias", dbias)]
    return results


def deviation(desc, case_tensors):
    got = {k.rsplit(".", 1)[1]: v for k, v in case_tensors.items()}
    return max(relative_error(got[suffix], want) for suffix, want in exact_results(desc, case_tensors))


def check_close(label, got, want, tol):
    assert got.shape == want.shape, f"{label}: shape {got.shape} != {want.shape}"
    err = relative_error(got, want)
    assert err <= tol, f"{label}: relative error {err:.3g} exceeds {tol}"
    return err


def verify(path, tensors, metadata):
    read_tensors, read_metadata = safetensors_py.read(path)
    assert list(read_tensors) == [n for n, _ in tensors], "tensor names or order differ"
    for name, array in tensors:
        assert read_tensors[name].tobytes() == np.ascontiguousarray(array).tobytes(), name
    assert read_metadata == metadata, "metadata differs"
    for desc in json.loads(read_metadata["cases"]):
        name = desc["name"]
        # Loose enough for torch's float32 rounding in the one- and two-value
        # groups, far too tight for a wrong formula (errors of order 1).
        tol = 1e-4 * (1.0 + abs(desc["input_mean"]) / desc["input_std"])
        case_tensors = {k: v for k, v in read_tensors.items() if k.startswith(name + ".")}
        worst = max(check_close(f"{name}.{suffix}", read_tensors[f"{name}.{suffix}"], want, tol)
                    for suffix, want in exact_results(desc, case_tensors))
        print(f"verify {name}: ok (max relative deviation from float64 reference {worst:.2e})")
    print(f"verify: {path} round-trips ({len(read_tensors)} tensors)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="fixture file to write")
    parser.add_argument("--verify", action="store_true", help="re-read the written file and check it")
    args = parser.parse_args()
    tensors, metadata = build()
    size = safetensors_py.write(args.output, tensors, metadata)
    print(f"wrote {args.output}: {len(CASES)} cases, {len(tensors)} tensors, {size} bytes, torch {torch.__version__}")
    if args.verify:
        verify(args.output, tensors, metadata)


if __name__ == "__main__":
    main()
