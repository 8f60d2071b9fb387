"""Writes a brightened copy of the first examples of an IDX image directory.

Usage: brighten_idx.py SRC_DIR DST_DIR SHIFT TRAIN_COUNT TEST_COUNT

Every pixel gets SHIFT added (clipped to 0..255); labels are copied. The copy
is a covariate shift that leaves the classes alone: what fine-tuning with and
without frozen batch norm is tested on (tests/cli_finetune.sh).
"""

import gzip
import struct
import sys


def copy(src, dst, count, shift):
    with gzip.open(src, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    dims = (magic & 0xFF) - 1
    header = 8 + 4 * dims
    per = 1
    for k in range(dims):
        per *= struct.unpack(">I", data[8 + 4 * k:12 + 4 * k])[0]
    count = min(count, n)
    body = bytearray(data[header:header + count * per])
    if shift:
        table = bytes(min(255, max(0, v + shift)) for v in range(256))
        body = body.translate(table)
    with gzip.open(dst, "wb", compresslevel=1) as f:
        f.write(struct.pack(">II", magic, count) + data[8:header] + bytes(body))


def main():
    src, dst, shift, train, test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    for split, count in (("train", train), ("t10k", test)):
        copy(f"{src}/{split}-images-idx3-ubyte.gz", f"{dst}/{split}-images-idx3-ubyte.gz", count, shift)
        copy(f"{src}/{split}-labels-idx1-ubyte.gz", f"{dst}/{split}-labels-idx1-ubyte.gz", count, 0)


if __name__ == "__main__":
    main()
