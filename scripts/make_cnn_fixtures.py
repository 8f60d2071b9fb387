#!/usr/bin/python3
"""Generate PyTorch golden values for a small conv-BN-ReLU-pool stack.

Writes tests/fixtures/cnn_golden.safetensors, read by tests/test_cnn_golden.cpp.
The network is described in bnorm's architecture JSON (stored in the metadata
as "architecture") and built in torch with the same mapping that
scripts/torch_check_model.py uses, so the fixture also pins that mapping.

Tensors:
    init.<state_dict name>            weights and buffers before training
    step<t>.x, step<t>.dy             input and upstream gradient of the logits
    step<t>.y                         logits in training mode
    step<t>.grad.<param name>         d(sum(y*dy))/d(param), not accumulated
    step<t>.<buffer name>             running statistics after the step
    eval.x, eval.y                    eval mode after all steps

Usage: /usr/bin/python3 scripts/make_cnn_fixtures.py [--output PATH]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from torch_check_model import build_sequential  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "tests", "fixtures", "cnn_golden.safetensors")
SEED = 20261126
STEPS = 2


def bn(channels, momentum):
    return {"type": "batchnorm", "num_features": channels, "eps": 1e-5, "momentum": momentum,
            "affine": True, "track_running_stats": True, "unbiased_running_var": True}


# (N, 3, 10, 10) → conv 3x3 → (4, 10, 10) → maxpool 2 → (4, 5, 5) → conv 3x3 s2 → (5, 3, 3)
# → gap → flatten → 5 → linear → 3
ARCHITECTURE = {
    "input_shape": [3, 10, 10],
    "layers": [
        {"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": [3, 3], "stride": 1,
         "padding": 1, "bias": False},
        bn(4, 0.1),
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2, "stride": 2},
        {"type": "conv2d", "in_channels": 4, "out_channels": 5, "kernel_size": [3, 3], "stride": 2,
         "padding": 1, "bias": True},
        {"type": "relu"},
        bn(5, 0.3),
        {"type": "global_avgpool"},
        {"type": "flatten"},
        {"type": "linear", "in_features": 5, "out_features": 3, "bias": True},
    ],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    gen = np.random.default_rng(SEED)

    model = build_sequential(ARCHITECTURE)
    with torch.no_grad():
        for module in model:
            if isinstance(module, torch.nn.BatchNorm2d):
                # Non-trivial gamma/beta so their role in the gradients counts.
                module.weight.copy_(torch.from_numpy(gen.uniform(0.5, 1.5, module.num_features).astype(np.float32)))
                module.bias.copy_(torch.from_numpy(gen.normal(0, 0.5, module.num_features).astype(np.float32)))
    tensors = {}
    for name, value in model.state_dict().items():
        tensors[f"init.{name}"] = value.numpy().copy()

    for t in range(STEPS):
        model.train()
        x = torch.from_numpy((gen.normal(0.5, 2.0, (6, 3, 10, 10))).astype(np.float32))
        dy = torch.from_numpy(gen.normal(0, 1, (6, 3)).astype(np.float32))
        model.zero_grad(set_to_none=True)
        y = model(x)
        (y * dy).sum().backward()
        tensors[f"step{t}.x"] = x.numpy()
        tensors[f"step{t}.dy"] = dy.numpy()
        tensors[f"step{t}.y"] = y.detach().numpy()
        for name, param in model.named_parameters():
            tensors[f"step{t}.grad.{name}"] = param.grad.numpy().copy()
        for name, buf in model.named_buffers():
            tensors[f"step{t}.{name}"] = buf.numpy().copy()

    model.eval()
    x = torch.from_numpy(gen.normal(0.5, 2.0, (4, 3, 10, 10)).astype(np.float32))
    with torch.no_grad():
        tensors["eval.x"] = x.numpy()
        tensors["eval.y"] = model(x).numpy()

    metadata = {"format": "bnorm-fixture", "version": "1", "generator": "scripts/make_cnn_fixtures.py",
                "torch_version": str(torch.__version__), "steps": str(STEPS),
                "architecture": json.dumps(ARCHITECTURE)}
    safetensors_py.write(args.output, tensors, metadata)
    print(f"wrote {args.output}: {len(tensors)} tensors, {STEPS} steps")


if __name__ == "__main__":
    main()
