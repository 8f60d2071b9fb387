#!/usr/bin/python3
"""PyTorch peer of `bnorm bench bn`: median times of BatchNorm1d/2d on one shape.

Prints one JSON object like bnorm's: shape, fwd_train_ms, fwdbwd_train_ms, infer_ms.
Usage: /usr/bin/python3 bench/torch_bn.py --shape 32x64x56x56 [--threads 2] [--iterations 50]
"""

import argparse
import json
import statistics
import time

import torch


def median_ms(iterations, body):
    body()  # warm-up
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        body()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="32x64x56x56")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = [int(v) for v in args.shape.split("x")]
    bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(shape[1])
    x = torch.randn(*shape, requires_grad=True)
    dy = torch.randn(*shape)

    bn.train()
    with torch.no_grad():
        fwd = median_ms(args.iterations, lambda: bn(x))

    def fwdbwd():
        x.grad = None
        bn.weight.grad = None
        bn.bias.grad = None
        bn(x).backward(dy)

    both = median_ms(args.iterations, fwdbwd)
    bn.eval()
    with torch.no_grad():
        infer = median_ms(args.iterations, lambda: bn(x))
    print(json.dumps({"shape": args.shape, "fwd_train_ms": fwd, "fwdbwd_train_ms": both, "infer_ms": infer}))


if __name__ == "__main__":
    main()
