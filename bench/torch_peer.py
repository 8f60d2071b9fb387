#!/usr/bin/python3
"""PyTorch peer of `bnorm train`: same data, model, optimizer and schedule.

--arch mlp is bnorm's default MLP, --arch cnn its `--arch cnn`.

Used as the reference for end-to-end training speed and accuracy.  Prints one
JSON line per epoch on stdout:

    {"epoch": e, "train_loss": ..., "test_loss": ..., "test_accuracy": ...,
     "samples_per_s": ...}

samples_per_s times only that epoch's training loop: the data set is decoded,
normalized and turned into a tensor before any timing starts, so the figure
compares the training arithmetic, not file or data-loader speed.

Usage:
    /usr/bin/python3 bench/torch_peer.py [--arch mlp|cnn] [--epochs 5] [--threads 2]
        [--bn before|after|none] [--batch-size 64] [--lr 0.01]
        [--train-size N] [--seed 0] [--data DIR]
"""

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
HIDDEN = 256
CLASSES = 10
MOMENTUM = 0.9
EVAL_BATCH = 1000  # evaluation batch size only affects speed, not results

# IDX element type codes (third byte of the magic number) we accept.
_IDX_TYPES = {0x08: np.uint8}


def read_idx(path):
    """Decode a (possibly gzipped) big-endian IDX file into a numpy array."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - start != count:
        raise ValueError(f"{path}: expected {count} data bytes, found {len(raw) - start}")
    return np.frombuffer(raw, dtype=_IDX_TYPES[raw[2]], offset=start).reshape(dims)


def load_split(data_dir, prefix):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{prefix}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images.reshape(images.shape[0], -1), labels


def build_cnn(bn_mode):
    """bnorm's `--arch cnn`: conv3x3 32, BN, ReLU, maxpool 2, conv3x3 64, BN, ReLU, maxpool 2, fc 10."""
    layers = []
    channels = 1
    for out in (32, 64):
        conv = nn.Conv2d(channels, out, 3, padding=1, bias=bn_mode != "before")
        if bn_mode == "before":
            layers += [conv, nn.BatchNorm2d(out), nn.ReLU()]
        elif bn_mode == "after":
            layers += [conv, nn.ReLU(), nn.BatchNorm2d(out)]
        else:
            layers += [conv, nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
        channels = out
    layers += [nn.Flatten(), nn.Linear(64 * 7 * 7, CLASSES)]
    model = nn.Sequential(*layers)
    for module in model:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build_model(bn_mode):
    """784-256-256-10 MLP with batch norm placed as `bn_mode` says."""
    layers = []
    width = 28 * 28
    for _ in range(2):
        if bn_mode == "before":
            # The BN shift makes a linear bias redundant, as in bnorm's default.
            layers += [nn.Linear(width, HIDDEN, bias=False), nn.BatchNorm1d(HIDDEN), nn.ReLU()]
        elif bn_mode == "after":
            layers += [nn.Linear(width, HIDDEN), nn.ReLU(), nn.BatchNorm1d(HIDDEN)]
        else:
            layers += [nn.Linear(width, HIDDEN), nn.ReLU()]
        width = HIDDEN
    layers.append(nn.Linear(width, CLASSES))
    model = nn.Sequential(*layers)
    for module in model:
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def evaluate(model, x, y):
    """Mean cross-entropy and accuracy in eval mode (running statistics)."""
    model.eval()
    total_loss = 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            target = y[start : start + EVAL_BATCH]
            total_loss += F.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(dim=1) == target).sum().item()
    return total_loss / x.shape[0], correct / x.shape[0]


def parse_args():
    parser = argparse.ArgumentParser(description="PyTorch peer of `bnorm train`")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bn", choices=["before", "after", "none"], default="before")
    parser.add_argument("--input-norm", choices=["pixel", "global"], default="pixel",
                        help="per-pixel or one global mean/std, as bnorm train --input-norm")
    parser.add_argument("--arch", choices=["mlp", "cnn"], default="mlp",
                        help="mlp: 784-256-256-10 (bnorm's default); cnn: bnorm's --arch cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--train-size", type=int, default=None,
                        help="use only the first N training examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST directory")
    args = parser.parse_args()
    if args.epochs < 0 or args.threads < 1 or args.batch_size < 1 or args.lr <= 0:
        parser.error("epochs must be >= 0, threads and batch size >= 1, lr > 0")
    if args.train_size is not None and args.train_size < 2:
        parser.error("--train-size must be at least 2 (batch norm needs 2 samples)")
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "t10k")
    if args.train_size is not None:
        train_images = train_images[: args.train_size]
        train_labels = train_labels[: args.train_size]

    # Statistics of the training images actually used, in float64 so that the
    # 47M-element sums do not lose precision.
    train_scaled = train_images.astype(np.float64) / 255.0
    if args.input_norm == "global":
        mean = float(train_scaled.mean())
        std = float(train_scaled.std())
    else:
        # Per pixel, with bnorm's floor of 1e-3 for nearly constant pixels.
        mean = train_scaled.mean(axis=0)
        std = np.maximum(train_scaled.std(axis=0), 1e-3)
    x_train = torch.from_numpy(((train_scaled - mean) / std).astype(np.float32))
    x_test = torch.from_numpy(
        ((test_images.astype(np.float64) / 255.0 - mean) / std).astype(np.float32))
    y_train = torch.from_numpy(train_labels.astype(np.int64))
    y_test = torch.from_numpy(test_labels.astype(np.int64))
    print(json.dumps({"config": vars(args), "train_examples": int(x_train.shape[0]),
                      "input_mean": float(np.mean(mean)), "input_std": float(np.mean(std)),
                      "torch_version": str(torch.__version__)}), file=sys.stderr)

    if args.arch == "cnn":
        x_train = x_train.reshape(-1, 1, 28, 28)
        x_test = x_test.reshape(-1, 1, 28, 28)
        model = build_cnn(args.bn)
    else:
        model = build_model(args.bn)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM)
    # A separate generator keeps the shuffling order independent of how many
    # random numbers weight initialization happened to consume.
    shuffle_gen = torch.Generator().manual_seed(args.seed)
    n = x_train.shape[0]

    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=shuffle_gen)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        seen = 0
        start_time = time.perf_counter()
        for start in range(0, n, args.batch_size):
            index = order[start : start + args.batch_size]
            if index.numel() == 1:
                break  # batch norm cannot train on a single example
            logits = model(x_train[index])
            loss = F.cross_entropy(logits, y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Accumulate without .item() so the loop never waits on a sync;
            # weighting by batch size gives the per-example mean loss.
            loss_sum += loss.detach().double() * index.numel()
            seen += index.numel()
        elapsed = time.perf_counter() - start_time

        test_loss, test_accuracy = evaluate(model, x_test, y_test)
        print(json.dumps({
            "epoch": epoch,
            "train_loss": round(loss_sum.item() / seen, 6),
            "test_loss": round(test_loss, 6),
            "test_accuracy": round(test_accuracy, 6),
            "samples_per_s": round(seen / elapsed, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
