#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus into fuzz/corpus/<target>/ (checked in;
rerun after a format change). Seeds are small valid inputs plus a few near
misses, so the fuzzer starts from the format's structure instead of noise.
Only the standard library: runs wherever python3 does."""

import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def bn(c, momentum=0.1, affine=True, running=True):
    return {"type": "batchnorm", "num_features": c, "eps": 1e-5, "momentum": momentum,
            "affine": affine, "track_running_stats": running, "unbiased_running_var": True}


def lin(i, o, bias):
    return {"type": "linear", "in_features": i, "out_features": o, "bias": bias}


ARCHS = {
    "mlp_bn_before": {"input_shape": [4], "layers": [lin(4, 3, False), bn(3), {"type": "relu"}, lin(3, 2, True)]},
    "mlp_bn_after": {"input_shape": [4], "layers": [lin(4, 3, True), {"type": "tanh"}, bn(3, None), lin(3, 2, True)]},
    "mlp_plain": {"input_shape": [4], "layers": [lin(4, 2, True), {"type": "sigmoid"}]},
    "bn_no_affine": {"input_shape": [3], "layers": [bn(3, 0.3, False, False)]},
}


def tensors_for(arch):
    """The state_dict bnorm's Model would list, as (name, dtype, shape, bytes)."""
    t = []
    for i, layer in enumerate(arch["layers"]):
        if layer["type"] == "linear":
            o, n = layer["out_features"], layer["in_features"]
            t.append((f"{i}.weight", "F32", [o, n], struct.pack(f"<{o*n}f", *[0.1 * k for k in range(o * n)])))
            if layer["bias"]:
                t.append((f"{i}.bias", "F32", [o], struct.pack(f"<{o}f", *[0.0] * o)))
        elif layer["type"] == "batchnorm":
            c = layer["num_features"]
            if layer["affine"]:
                t.append((f"{i}.weight", "F32", [c], struct.pack(f"<{c}f", *[1.0] * c)))
                t.append((f"{i}.bias", "F32", [c], struct.pack(f"<{c}f", *[0.0] * c)))
            if layer["track_running_stats"]:
                t.append((f"{i}.running_mean", "F32", [c], struct.pack(f"<{c}f", *[0.0] * c)))
                t.append((f"{i}.running_var", "F32", [c], struct.pack(f"<{c}f", *[1.0] * c)))
                t.append((f"{i}.num_batches_tracked", "I64", [], struct.pack("<q", 3)))
    return t


def safetensors(metadata, tensors):
    header, offset, data = {}, 0, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def model_file(arch, norm=None):
    norm = norm or {"mode": "global", "mean": [0.5], "std": [0.25]}
    meta = {"format": "bnorm-model", "version": "1", "architecture": json.dumps(arch),
            "input_normalization": json.dumps(norm), "training": json.dumps({"epochs": 1})}
    return safetensors(meta, tensors_for(arch))


def checkpoint_file(arch):
    """A checkpoint of arch (no batch norm, so every F32 tensor is a parameter)
    after a few SGD steps: the model file's tensors plus optimizer.velocity and
    trainer.order, and the run's metadata."""
    tensors = tensors_for(arch)
    n = sum(len(raw) // 4 for _, dtype, _, raw in tensors if dtype == "F32")
    tensors.append(("optimizer.velocity", "F32", [n], struct.pack(f"<{n}f", *[0.01] * n)))
    tensors.append(("trainer.order", "I64", [6], struct.pack("<6q", 3, 1, 4, 0, 5, 2)))
    meta = {"format": "bnorm-checkpoint", "version": "1", "architecture": json.dumps(arch),
            "input_normalization": json.dumps({"mode": "global", "mean": [0.5], "std": [0.25]}),
            "training": json.dumps({"epochs": 2}), "config": json.dumps({"epochs": 2, "optimizer": "sgd"}),
            "optimizer": json.dumps({"name": "sgd", "steps": 3, "buffers": ["velocity"]}),
            "position": json.dumps({"epoch": 1, "batch": 3, "global_step": 3, "rng": "1 2 3", "loss_sum": 1.5,
                                    "correct": 2, "seen": 6, "skipped": 0})}
    return safetensors(meta, tensors)


def idx(type_code, dims, payload):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def npy(descr, shape, payload, major=1, fortran=False):
    """A .npy file as np.save writes it: header padded to a 64-byte boundary."""
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, fortran, dims)
    prefix = 10 if major == 1 else 12
    header += " " * (63 - (prefix + len(header)) % 64) + "\n"
    length = struct.pack("<H" if major == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([major, 0]) + length + header.encode() + payload


def main():
    for name, arch in ARCHS.items():
        out("fuzz_architecture", name + ".json", json.dumps(arch).encode())
        out("fuzz_model_file", name + ".safetensors", model_file(arch))
    out("fuzz_model_file", "checkpoint.ckpt", checkpoint_file(ARCHS["mlp_plain"]))
    out("fuzz_architecture", "not_object.json", b"[1,2,3]")
    out("fuzz_architecture", "bad_width.json", json.dumps(
        {"input_shape": [4], "layers": [lin(4, 0, True)]}).encode())
    out("fuzz_model_file", "pixel_norm.safetensors", model_file(
        ARCHS["mlp_plain"], {"mode": "pixel", "mean": [0.1, 0.2, 0.3, 0.4], "std": [1, 1, 1, 1]}))
    out("fuzz_model_file", "plain_safetensors.safetensors", safetensors({}, [("a", "F32", [2], struct.pack("<2f", 1, 2))]))
    images = idx(0x08, [3, 2, 2], bytes(range(12)))
    labels = idx(0x08, [3], bytes([0, 9, 4]))
    floats = idx(0x0D, [2, 2], struct.pack(">4f", 0.5, -1.0, 2.0, 3.5))
    for name, data in {"images": images, "labels": labels, "floats": floats}.items():
        out("fuzz_idx", name + ".idx", data)
        out("fuzz_idx", name + ".idx.gz", gzip.compress(data, mtime=0))
    out("fuzz_idx", "two_members.gz", gzip.compress(labels[:5], mtime=0) + gzip.compress(labels[5:], mtime=0))

    matrix = npy("<f4", [2, 3], struct.pack("<6f", 1.5, -2, 0.25, 3e10, 0, 7))
    out("fuzz_npy", "f4_matrix.npy", matrix)
    out("fuzz_npy", "f4_matrix.npy.gz", gzip.compress(matrix, mtime=0))
    out("fuzz_npy", "f8_v2.npy", npy("<f8", [3], struct.pack("<3d", 0.1, -1e300, 2.5), major=2))
    out("fuzz_npy", "u1_images.npy", npy("|u1", [2, 1, 2, 2], bytes(range(0, 240, 30))))
    out("fuzz_npy", "i4_v3.npy", npy("<i4", [2, 2], struct.pack("<4i", -1, 2, -(2 ** 31), 9), major=3))
    out("fuzz_npy", "i8_labels.npy", npy("<i8", [3], struct.pack("<3q", 0, 9, 4)))
    out("fuzz_npy", "empty.npy", npy("<f4", [0, 3], b""))
    out("fuzz_npy", "big_endian.npy", npy(">f4", [1], b"\0\0\0\0"))
    out("fuzz_npy", "fortran.npy", npy("<f4", [1, 1], b"\0\0\0\0", fortran=True))
    out("fuzz_npy", "truncated.npy", matrix[:-3])
    out("fuzz_npy", "zero_d.npy", npy("<i8", [], struct.pack("<q", 5)))

    iris = (b"sepal_length,sepal_width,petal_length,petal_width,species\n"
            b"5.1,3.5,1.4,0.2,setosa\n7.0,3.2,4.7,1.4,versicolor\n6.3,3.3,6.0,2.5,virginica\n")
    out("fuzz_csv", "iris.csv", iris)
    out("fuzz_csv", "iris.csv.gz", gzip.compress(iris, mtime=0))
    out("fuzz_csv", "quoted_crlf_bom.csv", b'\xef\xbb\xbf"name","note, with ""quotes""",x\r\n'
                                           b'"a","two\r\nlines",+7\r\n\r\nb, spaced ,-2.5e3\r\n')
    out("fuzz_csv", "non_finite.csv", b"x,y\nnan,1\n-Infinity,1e999\n0x10,.5\n")
    out("fuzz_csv", "ragged.csv", b"a,b,c\n1,2,3\n4,5\n")
    out("fuzz_csv", "unterminated.csv", b'a,b\n1,"2\n3,4\n')
    out("fuzz_csv", "header_only.csv", b"a,b,a\n")


if __name__ == "__main__":
    main()
