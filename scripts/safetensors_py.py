"""Minimal safetensors reader/writer shared by the bnorm helper scripts.

We deliberately avoid the third-party `safetensors` package: the fixtures and
model files must follow exactly the layout the C++ reader expects, and the
scripts should run anywhere numpy is installed.

Layout handled here:
  * 8-byte little-endian unsigned length of the JSON header,
  * the JSON header (UTF-8), padded with trailing spaces to a multiple of 8 so
    that the data section starts 8-byte aligned,
  * the data section: raw little-endian tensors packed back to back in header
    order; `data_offsets` are relative to the start of the data section.

The writer always produces this exact layout, and the reader insists on it
(no gaps, no overlaps, sizes consistent with shape and dtype) so that a file
that passes here is one the strict C++ reader should accept too.
"""

import json
import struct

import numpy as np

# Only little-endian dtypes: the format stores data little-endian regardless
# of the host, so spelling the byte order out keeps big-endian hosts correct.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
}

# Lookup by (kind, itemsize) so that a native-order array maps to its name
# whatever byte order numpy reports for it.
_NAME_BY_KIND = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items()}

METADATA_KEY = "__metadata__"

# Refuse absurd header lengths before trying to allocate or decode them; a
# corrupt length field otherwise turns into a confusing JSON error.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """Raised for any malformed file or unsupported tensor."""


def dtype_name(array):
    """Return the safetensors dtype name for a numpy array."""
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _NAME_BY_KIND:
        raise SafetensorsError(f"unsupported numpy dtype {array.dtype}")
    return _NAME_BY_KIND[key]


def serialize(tensors, metadata=None):
    """Encode tensors into safetensors bytes.

    `tensors` is a sequence of (name, array) pairs or an insertion-ordered
    dict; the given order is kept both in the header and in the data section
    so that output is reproducible byte for byte.  `metadata` maps strings to
    strings (the format allows nothing else there).
    """
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    header = {}
    chunks = []
    offset = 0
    for name, array in items:
        if name == METADATA_KEY:
            raise SafetensorsError(f"tensor name {METADATA_KEY!r} is reserved")
        if name in header:
            raise SafetensorsError(f"duplicate tensor name {name!r}")
        array = np.asarray(array)
        dname = dtype_name(array)
        # Convert to the canonical little-endian dtype and C order so that
        # tobytes() yields exactly what the data section must contain.
        raw = np.ascontiguousarray(array.astype(DTYPES[dname], copy=False)).tobytes()
        header[name] = {
            "dtype": dname,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SafetensorsError("__metadata__ must map strings to strings")
        header[METADATA_KEY] = dict(metadata)

    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write(path, tensors, metadata=None):
    """Write tensors (see serialize) to `path`."""
    data = serialize(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _reject_duplicates(pairs):
    # json.loads silently keeps the last duplicate key; a duplicated tensor
    # name would make the file ambiguous, so treat it as corruption.
    result = {}
    for key, value in pairs:
        if key in result:
            raise SafetensorsError(f"duplicate key {key!r} in header")
        result[key] = value
    return result


def parse(buf):
    """Decode safetensors bytes.

    Returns (tensors, metadata): tensors is a dict name -> numpy array in
    header order (arrays are writable copies, detached from `buf`), metadata
    is the __metadata__ dict ({} when absent).
    """
    buf = bytes(buf)
    if len(buf) < 8:
        raise SafetensorsError("file shorter than the 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", buf, 0)
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > len(buf):
        raise SafetensorsError(f"header length {header_len} exceeds file size {len(buf)}")
    try:
        header = json.loads(
            buf[8 : 8 + header_len].decode("utf-8"), object_pairs_hook=_reject_duplicates
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"bad JSON header: {exc}") from exc
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")

    data = memoryview(buf)[8 + header_len :]
    metadata = header.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SafetensorsError("__metadata__ must map strings to strings")

    tensors = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise SafetensorsError(f"{name}: entry is not an object")
        dname = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if dname not in DTYPES:
            raise SafetensorsError(f"{name}: unsupported dtype {dname!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SafetensorsError(f"{name}: bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= len(data)
        ):
            raise SafetensorsError(f"{name}: bad data_offsets {offsets!r}")
        dtype = DTYPES[dname]
        count = int(np.prod(shape, dtype=np.int64))
        begin, end = offsets
        if end - begin != count * dtype.itemsize:
            raise SafetensorsError(
                f"{name}: {end - begin} bytes do not match shape {shape} of {dname}"
            )
        array = np.frombuffer(data[begin:end], dtype=dtype, count=count)
        tensors[name] = array.reshape(shape).copy()
        spans.append((begin, end, name))

    # Require the data section to be covered exactly: this is what our writer
    # produces, and a gap or overlap almost always means a corrupt file.
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SafetensorsError(f"{name}: data starts at {begin}, expected {position}")
        position = end
    if position != len(data):
        raise SafetensorsError(f"{len(data) - position} trailing bytes after the last tensor")
    return tensors, metadata


def read(path):
    """Read a safetensors file; see parse() for the return value."""
    with open(path, "rb") as f:
        return parse(f.read())
