#!/usr/bin/python3
"""Batch norm alone, side by side: bnorm, PyTorch 1.13 and oneDNN 2.6.

For each shape, runs `bnorm bench bn`, bench/torch_bn.py and bench/onednn_bn
(built here from bench/onednn_bn.cpp against libdnnl-dev, in its plain layout
and its blocked nChw8c (AVX2) and nChw16c (AVX-512) layouts) --repeats times, alternating, and prints the medians
of training forward / training forward+backward / inference in ms, and the
forward+backward speed-up of bnorm over each peer.

Usage: /usr/bin/python3 bench/compare_bn.py [--bnorm build/bnorm] [--threads 2]
           [--repeats 3] [--shapes 256x4096,64x512,32x64x56x56,128x256x14x14]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("fwd_train_ms", "fwdbwd_train_ms", "infer_ms")


def run_json(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def stream_json(bnorm, threads):
    """One `bnorm bench stream` run: {"copy_gbps": .., "triad_gbps": ..}."""
    return run_json([bnorm, "bench", "stream", "--threads", str(threads), "--json"])


def build_onednn(build_dir):
    exe = os.path.join(build_dir, "onednn_bn")
    src = os.path.join(ROOT, "bench", "onednn_bn.cpp")
    header = os.path.join(ROOT, "bench", "onednn_peer.hpp")
    if not os.path.exists(exe) or os.path.getmtime(exe) < max(os.path.getmtime(src), os.path.getmtime(header)):
        subprocess.run(["g++", "-std=c++17", "-O2", src, "-o", exe, "-ldnnl"], check=True)
    return exe


def jit_layouts(onednn, env):
    """oneDNN's layouts that it runs with JIT-compiled code on this CPU (found by
    asking it on a small shape): nChw8c on AVX2, both blocked ones on AVX-512.
    A blocked layout wider than the CPU's vectors runs oneDNN's reference code,
    hundreds of times slower, which would only flatter bnorm."""
    def jit(layout):
        return not run_json([onednn, "8x32x4x4", layout, "1"], env)["impl"].startswith(("ref", "bnorm_ref"))

    return ["plain"] + [layout for layout in ("nChw8c", "nChw16c") if jit(layout)]


def measure(bnorm, shapes, threads=2, repeats=3, iterations=50, stream_shapes=()):
    """Per shape: {peer: {key: median ms}} (bnorm's also has "gbps") and "ratios",
    the medians of per-repeat ratios (see repeat_ratios). For the shapes in
    stream_shapes, `bnorm bench stream` runs in each repeat too, just before bnorm."""
    onednn = build_onednn(os.path.dirname(os.path.abspath(bnorm)))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    it = str(iterations)
    peers = {
        "bnorm": lambda s: run_json([bnorm, "bench", "bn", "--shape", s, "--threads", str(threads),
                                     "--iterations", it, "--json"]),
        "PyTorch": lambda s: run_json(["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_bn.py"), "--shape", s,
                                       "--threads", str(threads), "--iterations", it]),
    }
    for layout in jit_layouts(onednn, env):
        peers[f"oneDNN {layout}"] = lambda s, layout=layout: run_json([onednn, s, layout, it], env)
    result = {}
    for shape in shapes:
        runs = {name: [] for name in peers}
        streams = []
        for _ in range(repeats):  # alternating, so a burst of load hits every peer alike
            if shape in stream_shapes:
                streams.append(stream_json(bnorm, threads))
            for name, peer in peers.items():
                runs[name].append(peer(shape))
        result[shape] = {name: {k: statistics.median(r[k] for r in rs) for k in KEYS + ("gbps",) if k in rs[0]}
                         for name, rs in runs.items()}
        result[shape]["ratios"] = repeat_ratios(runs, streams)
    return result


def repeat_ratios(runs, streams):
    """The machine's speed drifts between repeats, so each ratio is taken within
    one repeat, where the peers ran back to back, and the median over repeats
    is reported (> 1: bnorm is faster):
      torch_fwdbwd   PyTorch's forward+backward time over bnorm's;
      onednn_fwdbwd  oneDNN's, in the layout with the lower median, over bnorm's;
      infer          the fastest peer's inference time over bnorm's;
      stream_share   bnorm's forward+backward GB/s over STREAM copy's (if run)."""
    b = runs["bnorm"]
    onednn_layouts = tuple(name for name in runs if name.startswith("oneDNN"))
    layout = min(onednn_layouts,
                 key=lambda n: statistics.median(r["fwdbwd_train_ms"] for r in runs[n]))
    ratios = {
        "torch_fwdbwd": [t["fwdbwd_train_ms"] / m["fwdbwd_train_ms"] for t, m in zip(runs["PyTorch"], b)],
        "onednn_fwdbwd": [d["fwdbwd_train_ms"] / m["fwdbwd_train_ms"] for d, m in zip(runs[layout], b)],
        "infer": [min(runs[n][i]["infer_ms"] for n in ("PyTorch",) + onednn_layouts) /
                  b[i]["infer_ms"] for i in range(len(b))],
    }
    if streams:
        ratios["stream_share"] = [m["gbps"] / s["copy_gbps"] for m, s in zip(b, streams)]
        ratios["stream_copy_gbps"] = [s["copy_gbps"] for s in streams]
    return {k: statistics.median(v) for k, v in ratios.items()}


def print_table(result, threads, repeats, iterations):
    peers = [p for p in next(iter(result.values())) if p != "ratios"]
    print(f"{threads} threads, median of {repeats} runs of the median of {iterations} iterations; "
          "ms: train forward / train forward+backward / inference; speed-ups: median of the runs' own ratios")
    print("| shape | " + " | ".join(peers) + " | fwd+bwd speed-up vs PyTorch | vs best oneDNN |")
    print("|---" * (len(peers) + 3) + "|")
    for shape, med in result.items():
        cells = [" / ".join(f"{med[n][k]:.3g}" for k in KEYS) for n in peers]
        r = med["ratios"]
        print(f"| {shape} | " + " | ".join(cells) +
              f" | {r['torch_fwdbwd']:.2f}x | {r['onednn_fwdbwd']:.2f}x |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bnorm", default=os.path.join(ROOT, "build", "bnorm"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--shapes", default="256x4096,64x512,32x64x56x56,128x256x14x14")
    args = ap.parse_args()
    result = measure(args.bnorm, args.shapes.split(","), args.threads, args.repeats, args.iterations)
    print_table(result, args.threads, args.repeats, args.iterations)


if __name__ == "__main__":
    main()
