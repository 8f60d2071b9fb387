#!/usr/bin/python3
"""End-to-end training speed and accuracy: `bnorm train` against PyTorch 1.13.

Runs both peers in the same session, alternating, --repeats times each, with
the same setup (MLP 784-256-256-10, BN before ReLU, batch 64, SGD momentum
0.9, lr 0.01, 2 threads by default). The machine is shared and noisy, so each
pair is compared as a ratio and the medians are reported. Peak resident
memory comes from /usr/bin/time -v.

Usage:
    /usr/bin/python3 bench/compare_train.py [--bnorm build/bnorm] [--repeats 3]
        [--epochs 5] [--threads 2] [--bn before] [--arch mlp|cnn]
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# PyTorch's matrix products go through Debian's OpenBLAS, which falls back to
# its slowest (Prescott) kernels on a CPU model it does not know, unless
# OPENBLAS_CORETYPE is set (even empty): then it picks by the CPU's features.
# Both ways are run and bnorm is compared with the faster, so that a peer
# handicapped by its packaging does not flatter bnorm.
TORCH_VARIANTS = {
    "as installed": {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None},
    "OPENBLAS_CORETYPE set": {"OPENBLAS_CORETYPE": ""},
}


def variant_env(changes):
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = os.environ.get(key) or value
    return env


def torch_openblas_core(changes):
    """The kernel set OpenBLAS picks inside PyTorch's process under these settings."""
    code = ("import ctypes, ctypes.util, torch\n"
            "lib = ctypes.CDLL(ctypes.util.find_library('openblas') or 'libopenblas.so.0')\n"
            "lib.openblas_get_corename.restype = ctypes.c_char_p\n"
            "print(lib.openblas_get_corename().decode())")
    out = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, env=variant_env(changes))
    return out.stdout.strip() or "?"


def run(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (epoch JSON objects, peak RSS in MiB)."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".time") as timing:
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", timing.name] + cmd,
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing.read())
    epochs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return epochs, int(rss.group(1)) / 1024 if rss else float("nan")


def summarize(epochs):
    """Mean samples/s over the epochs (each epoch times only its training loop) and the last accuracy."""
    return statistics.mean(e["samples_per_s"] for e in epochs), epochs[-1]["test_accuracy"]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bnorm", default=os.path.join(ROOT, "build", "bnorm"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bn", default="before", choices=["before", "after", "none"])
    ap.add_argument("--arch", default="mlp", choices=["mlp", "cnn"],
                    help="mlp: the default 784-256-256-10; cnn: bnorm's --arch cnn")
    ap.add_argument("--train-size", type=int, default=0,
                    help="first N training examples only (speed figures; accuracy then is not the full run's)")
    args = ap.parse_args()

    med = measure(args.bnorm, args.arch, args.repeats, args.epochs, args.threads, args.bn, args.train_size,
                  verbose=True)
    print()
    print(f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads, {args.arch}, {args.epochs} epochs, bn {args.bn}, "
          f"train size {args.train_size or 'all'}, "
          f"median of {args.repeats} runs")
    print_table(med)


def measure(bnorm, arch="mlp", repeats=3, epochs=5, threads=2, bn="before", train_size=0, verbose=False):
    """Alternating runs of bnorm and PyTorch (each of TORCH_VARIANTS); the medians of samples/s, accuracy,
    peak RSS and the per-run ratio against the faster PyTorch of that run."""
    common = ["--epochs", str(epochs), "--threads", str(threads), "--bn", bn]
    if train_size:
        common += ["--train-size", str(train_size)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            b_arch = ["--arch", "cnn"] if arch == "cnn" else []
            b_epochs, b_rss = run([bnorm, "train", "--json", "--out", os.path.join(tmp, "m.safetensors")] + b_arch +
                                  common)
            torch = {}
            for name, changes in TORCH_VARIANTS.items():
                t_epochs, t_rss = run(["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_peer.py"),
                                       "--arch", arch] + common, env=variant_env(changes))
                torch[name] = summarize(t_epochs) + (t_rss,)
            fastest = max(torch, key=lambda n: torch[n][0])
            (b_sps, b_acc), (t_sps, t_acc, t_rss) = summarize(b_epochs), torch[fastest]
            rows.append(dict(bnorm_sps=b_sps, torch_sps=t_sps, ratio=b_sps / t_sps, bnorm_acc=b_acc,
                             torch_acc=t_acc, bnorm_rss=b_rss, torch_rss=t_rss,
                             **{f"torch_sps {n}": v[0] for n, v in torch.items()}))
            if verbose:
                print(f"run {r + 1}: bnorm {b_sps:,.0f} samples/s acc {b_acc:.4f} rss {b_rss:.0f} MiB | torch " +
                      ", ".join(f"{n} {v[0]:,.0f}" for n, v in torch.items()) +
                      f" samples/s; faster: acc {t_acc:.4f} rss {t_rss:.0f} MiB | ratio {b_sps / t_sps:.2f}x",
                      flush=True)
    return {k: statistics.median(row[k] for row in rows) for k in rows[0]}


def print_table(med):
    print("| | samples/s (training loop) | test accuracy | peak RSS |")
    print("|---|---|---|---|")
    print(f"| bnorm | {med['bnorm_sps']:,.0f} | {med['bnorm_acc']:.4f} | {med['bnorm_rss']:.0f} MiB |")
    for name in TORCH_VARIANTS:
        print(f"| PyTorch {torch_version()}, OpenBLAS {name} | {med[f'torch_sps {name}']:,.0f} | | |")
    print(f"| PyTorch, the faster in each run | {med['torch_sps']:,.0f} | {med['torch_acc']:.4f} | "
          f"{med['torch_rss']:.0f} MiB |")
    print(f"| ratio (median of per-run ratios) | {med['ratio']:.2f}x | | "
          f"{med['bnorm_rss'] / med['torch_rss']:.2f}x |")


def torch_version():
    out = subprocess.run(["/usr/bin/python3", "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    main()
