#!/usr/bin/python3
"""PyTorch golden values for precise statistics and frozen batch norm.

Writes tests/fixtures/recalibrate_golden.safetensors, read by
tests/test_recalibrate.cpp:

  update_bn.<name>          the parameters of a small torch.nn.Sequential
                            (state_dict names, bnorm's "<index>.<name>"),
                            before torch.optim.swa_utils.update_bn
  update_bn.x               the data (N, 6), fed in batches of BATCH in order
  update_bn.after.<name>    running_mean, running_var, num_batches_tracked
                            of each BN layer after update_bn
  frozen<k>.{gamma,beta,running_mean,running_var,x,dy,y,dx,dgamma,dbeta}
                            a BatchNorm in eval mode with trainable gamma and
                            beta (fine-tuning with frozen statistics): forward
                            and backward of sum(dy * y)

Usage: /usr/bin/python3 scripts/make_recalibrate_fixtures.py [--output PATH]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from torch.optim.swa_utils import update_bn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "tests", "fixtures", "recalibrate_golden.safetensors")
SEED = 20261129
N, BATCH = 23, 5  # four batches of 5 and a last one of 3


def update_bn_case(out):
    g = torch.Generator().manual_seed(SEED)
    # bnorm's "fc:5,bn,relu,fc:4,bn,relu,fc:3" on 6 inputs: a Linear followed
    # by batch norm has no bias.
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 5, bias=False), torch.nn.BatchNorm1d(5), torch.nn.ReLU(),
        torch.nn.Linear(5, 4, bias=False), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
        torch.nn.Linear(4, 3))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.8 + (1.0 if name.endswith("1.weight") else 0.0))
        for m in model:
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    for name, t in model.state_dict().items():
        out[f"update_bn.{name}"] = t.numpy().copy()
    x = torch.randn(N, 6, generator=g) * 2.0 + 0.5
    out["update_bn.x"] = x.numpy().copy()
    loader = [x[i:i + BATCH] for i in range(0, N, BATCH)]
    update_bn(loader, model)
    for name, t in model.state_dict().items():
        if "running" in name or "num_batches" in name:
            out[f"update_bn.after.{name}"] = t.numpy().copy()


def frozen_case(out, k, shape):
    g = torch.Generator().manual_seed(SEED + 1 + k)
    C = shape[1]
    bn = torch.nn.BatchNorm1d(C) if len(shape) == 2 else torch.nn.BatchNorm2d(C)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(C, generator=g) * 0.5 + 1.0)
        bn.bias.copy_(torch.randn(C, generator=g) * 0.5)
        bn.running_mean.copy_(torch.randn(C, generator=g))
        bn.running_var.copy_(torch.rand(C, generator=g) + 0.3)
    bn.eval()  # frozen statistics; gamma and beta still require grad
    x = (torch.randn(shape, generator=g) * 1.5 + 0.3).requires_grad_(True)
    dy = torch.randn(shape, generator=g)
    y = bn(x)
    (y * dy).sum().backward()
    p = f"frozen{k}."
    out[p + "gamma"] = bn.weight.detach().numpy().copy()
    out[p + "beta"] = bn.bias.detach().numpy().copy()
    out[p + "running_mean"] = bn.running_mean.numpy().copy()
    out[p + "running_var"] = bn.running_var.numpy().copy()
    out[p + "x"] = x.detach().numpy().copy()
    out[p + "dy"] = dy.numpy().copy()
    out[p + "y"] = y.detach().numpy().copy()
    out[p + "dx"] = x.grad.numpy().copy()
    out[p + "dgamma"] = bn.weight.grad.numpy().copy()
    out[p + "dbeta"] = bn.bias.grad.numpy().copy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {}
    update_bn_case(out)
    frozen_shapes = [[8, 6], [3, 4, 2, 3]]
    for k, shape in enumerate(frozen_shapes):
        frozen_case(out, k, shape)
    meta = {"format": "bnorm-fixture", "version": "1", "torch": torch.__version__,
            "update_bn": json.dumps({"batch": BATCH, "n": N, "arch": "fc:5,bn,relu,fc:4,bn,relu,fc:3",
                                     "input": [6]}),
            "frozen": json.dumps(frozen_shapes)}
    safetensors_py.write(args.output, {k: np.array(v, order="C") for k, v in out.items()}, meta)
    print(f"wrote {args.output}: {len(out)} tensors")


if __name__ == "__main__":
    main()
