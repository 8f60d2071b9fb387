#!/usr/bin/python3
"""Generate PyTorch golden values for bnorm's batch-normalization tests.

Writes tests/fixtures/batchnorm_golden.safetensors, read by the C++ batch-norm
tests through the project's safetensors reader.  For every case a float32
torch.nn.BatchNorm1d/2d is run for a few training steps and then once in eval
mode; inputs, upstream gradients, outputs, input/parameter gradients and the
running statistics after each step are stored under names

    <case>.gamma, <case>.beta                         (affine cases only)
    <case>.step<t>.x, .dy, .y, .dx                    (every step t)
    <case>.step<t>.dgamma, .dbeta                     (affine cases only)
    <case>.step<t>.running_mean, .running_var         (track_running_stats)
    <case>.step<t>.num_batches_tracked  (I64 scalar)  (track_running_stats)
    <case>.eval.x, <case>.eval.y

and the case list is recorded as JSON in the "cases" metadata entry.

Usage:
    /usr/bin/python3 scripts/make_bn_fixtures.py [--output PATH] [--verify]

--verify re-reads the written file with our own parser, checks that it
round-trips exactly, and cross-checks the torch results against an
independent float64 numpy implementation of the batch-norm formulas.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

# Make the shared helper importable whatever the current directory is.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "tests", "fixtures", "batchnorm_golden.safetensors")

# Every case derives its own generator from this seed plus its index, so that
# adding or reordering later cases does not change the data of earlier ones.
BASE_SEED = 20240517

# input_mean/input_std describe how x is drawn (x = mean + std * N(0,1)).
# They are written into the descriptors too, so the C++ test can loosen its
# tolerances for the deliberately ill-conditioned large-offset cases.
CASES = [
    # Smallest legal training batch for BatchNorm1d.
    dict(shape=[2, 5], eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, steps=3),
    # Odd sizes, larger eps and momentum.
    dict(shape=[7, 13], eps=1e-3, momentum=0.3, affine=True, track_running_stats=True, steps=4),
    # Realistic hidden-layer size; kept at 3 steps because it dominates the file size.
    dict(shape=[64, 256], eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, steps=3),
    # Cumulative moving average (momentum=None) with a sizeable offset.
    dict(shape=[16, 32], eps=1e-5, momentum=None, affine=True, track_running_stats=True, steps=5,
         input_mean=10.0, input_std=3.0),
    # Mean far from zero: catches the catastrophic cancellation of E[x^2]-E[x]^2.
    dict(shape=[32, 8], eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, steps=3,
         input_mean=1000.0, input_std=1.0),
    # No learnable parameters, slow running-average updates.
    dict(shape=[10, 6], eps=1e-5, momentum=0.01, affine=False, track_running_stats=True, steps=4),
    # No running statistics: eval mode falls back to batch statistics.
    dict(shape=[9, 4], eps=1e-5, momentum=0.1, affine=True, track_running_stats=False, steps=3),
    # 4-D (BatchNorm2d) cases.
    dict(shape=[2, 3, 5, 7], eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, steps=3),
    dict(shape=[4, 8, 6, 6], eps=1e-3, momentum=None, affine=True, track_running_stats=True, steps=4,
         input_mean=10.0, input_std=3.0),
    # H = 1 and no affine parameters.
    dict(shape=[3, 5, 1, 9], eps=1e-5, momentum=0.3, affine=False, track_running_stats=True, steps=3),
    # Batch of one image: statistics come from the spatial positions alone.
    dict(shape=[1, 6, 3, 4], eps=1e-5, momentum=0.01, affine=True, track_running_stats=True, steps=3),
    # 4-D without running statistics and with a larger eps.
    dict(shape=[5, 4, 3, 3], eps=1e-3, momentum=0.1, affine=True, track_running_stats=False, steps=3,
         input_mean=-2.0, input_std=0.5),
    # Large offset in 4-D, no affine, cumulative average.
    dict(shape=[3, 2, 4, 4], eps=1e-5, momentum=None, affine=False, track_running_stats=True, steps=3,
         input_mean=1000.0, input_std=2.0),
]


def describe_cases():
    """Case descriptors as stored in the metadata (names assigned by index)."""
    descriptors = []
    for index, case in enumerate(CASES):
        descriptors.append({
            "name": f"case{index}",
            "shape": list(case["shape"]),
            "eps": case["eps"],
            "momentum": case["momentum"],
            "affine": case["affine"],
            "track_running_stats": case["track_running_stats"],
            "steps": case["steps"],
            "input_mean": case.get("input_mean", 0.0),
            "input_std": case.get("input_std", 1.0),
        })
    return descriptors


def as_numpy(tensor):
    return tensor.detach().cpu().numpy().copy()


def run_case(desc, seed):
    """Run one case through PyTorch; return an ordered list of (name, array)."""
    gen = torch.Generator().manual_seed(seed)
    shape = desc["shape"]
    channels = shape[1]
    module_type = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
    bn = module_type(
        channels,
        eps=desc["eps"],
        momentum=desc["momentum"],
        affine=desc["affine"],
        track_running_stats=desc["track_running_stats"],
    ).float()

    name = desc["name"]
    out = []
    if desc["affine"]:
        # The defaults (gamma=1, beta=0) would hide scale/shift mistakes.
        with torch.no_grad():
            bn.weight.copy_(0.5 + torch.rand(channels, generator=gen))
            bn.bias.copy_(torch.randn(channels, generator=gen))
        out.append((f"{name}.gamma", as_numpy(bn.weight)))
        out.append((f"{name}.beta", as_numpy(bn.bias)))

    def draw_input():
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        return (desc["input_mean"] + desc["input_std"] * noise).float()

    for step in range(desc["steps"]):
        prefix = f"{name}.step{step}"
        x = draw_input().requires_grad_(True)
        dy = torch.randn(shape, generator=gen, dtype=torch.float32)
        bn.train()
        # Parameter gradients would otherwise accumulate across steps.
        bn.zero_grad(set_to_none=True)
        y = bn(x)
        (y * dy).sum().backward()
        out.append((f"{prefix}.x", as_numpy(x)))
        out.append((f"{prefix}.dy", as_numpy(dy)))
        out.append((f"{prefix}.y", as_numpy(y)))
        out.append((f"{prefix}.dx", as_numpy(x.grad)))
        if desc["affine"]:
            out.append((f"{prefix}.dgamma", as_numpy(bn.weight.grad)))
            out.append((f"{prefix}.dbeta", as_numpy(bn.bias.grad)))
        if desc["track_running_stats"]:
            out.append((f"{prefix}.running_mean", as_numpy(bn.running_mean)))
            out.append((f"{prefix}.running_var", as_numpy(bn.running_var)))
            out.append((f"{prefix}.num_batches_tracked",
                        np.array(int(bn.num_batches_tracked), dtype=np.int64)))

    bn.eval()
    x = draw_input()
    with torch.no_grad():
        y = bn(x)
    out.append((f"{name}.eval.x", as_numpy(x)))
    out.append((f"{name}.eval.y", as_numpy(y)))
    return out


def build():
    """Return (tensors, metadata) for the whole fixture file."""
    # Reductions may be split differently across threads; one thread keeps the
    # output bit-for-bit reproducible from run to run and machine to machine.
    torch.set_num_threads(1)
    torch.manual_seed(BASE_SEED)
    descriptors = describe_cases()
    tensors = []
    for index, desc in enumerate(descriptors):
        tensors.extend(run_case(desc, BASE_SEED + index))
    metadata = {
        "format": "bnorm-fixture",
        "version": "1",
        "generator": "scripts/make_bn_fixtures.py",
        "torch_version": str(torch.__version__),
        "cases": json.dumps(descriptors),
    }
    return tensors, metadata


# ---------------------------------------------------------------------------
# Verification: an independent float64 reference, so that a wrong assumption
# about PyTorch's semantics (biased vs unbiased variance, the cumulative
# average, eval without running stats) is caught here rather than in C++.


def reference_forward_backward(x, dy, gamma, beta, eps):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    bshape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    count = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)  # biased: what normalization uses
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(bshape)) * invstd.reshape(bshape)
    y = gamma.reshape(bshape) * xhat + beta.reshape(bshape)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    dx = (gamma * invstd / count).reshape(bshape) * (
        count * dy - dbeta.reshape(bshape) - xhat * dgamma.reshape(bshape))
    return y, dx, dgamma, dbeta, mean, var * count / (count - 1)


def reference_eval(x, gamma, beta, eps, mean, var):
    bshape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    xhat = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
    return gamma.reshape(bshape) * xhat + beta.reshape(bshape)


def check_close(label, got, want, rtol, worst):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{label}: shape {got.shape} != {want.shape}"
    err = np.max(np.abs(got - want) / (1.0 + np.abs(want)), initial=0.0)
    assert err <= rtol, f"{label}: relative error {err:.3g} exceeds {rtol}"
    worst[0] = max(worst[0], err)


def verify(path, tensors, metadata):
    read_tensors, read_metadata = safetensors_py.read(path)

    # Round trip: same names in the same order, identical dtype/shape/bits.
    assert list(read_tensors) == [n for n, _ in tensors], "tensor names or order differ"
    for name, array in tensors:
        got = read_tensors[name]
        assert safetensors_py.dtype_name(got) == safetensors_py.dtype_name(array), name
        assert got.shape == array.shape, name
        assert got.tobytes() == np.ascontiguousarray(array).tobytes(), name
    assert read_metadata == metadata, "metadata differs"
    with open(path, "rb") as f:
        assert f.read() == safetensors_py.serialize(read_tensors, read_metadata), \
            "re-serializing the parsed file does not reproduce it"

    # Semantic cross-check against the float64 reference.  PyTorch's float32
    # kernels fold normalization into y = x*a + b, which loses accuracy in
    # proportion to how far the inputs sit from zero relative to their spread
    # (about 3e-4 for mean 1000, std 1), so the tolerance scales with that.
    t = {k: v.astype(np.float64) for k, v in read_tensors.items()}
    for desc in json.loads(read_metadata["cases"]):
        name, channels, eps = desc["name"], desc["shape"][1], desc["eps"]
        tol = 2e-5 * (1.0 + abs(desc["input_mean"]) / desc["input_std"])
        gamma = t[f"{name}.gamma"] if desc["affine"] else np.ones(channels)
        beta = t[f"{name}.beta"] if desc["affine"] else np.zeros(channels)
        running_mean, running_var = np.zeros(channels), np.ones(channels)
        worst = [0.0]
        for step in range(desc["steps"]):
            p = f"{name}.step{step}"
            y, dx, dgamma, dbeta, mean, unbiased_var = reference_forward_backward(
                t[f"{p}.x"], t[f"{p}.dy"], gamma, beta, eps)
            check_close(f"{p}.y", t[f"{p}.y"], y, tol, worst)
            check_close(f"{p}.dx", t[f"{p}.dx"], dx, tol, worst)
            if desc["affine"]:
                check_close(f"{p}.dgamma", t[f"{p}.dgamma"], dgamma, tol, worst)
                check_close(f"{p}.dbeta", t[f"{p}.dbeta"], dbeta, tol, worst)
            if desc["track_running_stats"]:
                # momentum None means a plain average over all batches so far.
                m = desc["momentum"] if desc["momentum"] is not None else 1.0 / (step + 1)
                running_mean = (1 - m) * running_mean + m * mean
                running_var = (1 - m) * running_var + m * unbiased_var
                check_close(f"{p}.running_mean", t[f"{p}.running_mean"], running_mean, tol, worst)
                check_close(f"{p}.running_var", t[f"{p}.running_var"], running_var, tol, worst)
                assert int(read_tensors[f"{p}.num_batches_tracked"]) == step + 1, p
        x = t[f"{name}.eval.x"]
        if desc["track_running_stats"]:
            want = reference_eval(x, gamma, beta, eps, running_mean, running_var)
        else:
            want = reference_forward_backward(x, np.zeros_like(x), gamma, beta, eps)[0]
        check_close(f"{name}.eval.y", t[f"{name}.eval.y"], want, tol, worst)
        print(f"verify {name}: ok (max relative deviation from float64 reference {worst[0]:.2e})")
    print(f"verify: {path} round-trips ({len(read_tensors)} tensors)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="fixture file to write")
    parser.add_argument("--verify", action="store_true",
                        help="re-read the written file and check it")
    args = parser.parse_args()

    tensors, metadata = build()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    size = safetensors_py.write(args.output, tensors, metadata)
    print(f"wrote {args.output}: {len(CASES)} cases, {len(tensors)} tensors, "
          f"{size} bytes, torch {torch.__version__}")
    if args.verify:
        verify(args.output, tensors, metadata)


if __name__ == "__main__":
    main()
