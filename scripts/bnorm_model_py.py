"""The bnorm model file as PyTorch sees it, both ways.

A bnorm model file is safetensors whose tensors are the state_dict of the
equivalent torch.nn.Sequential ("<index>.weight", "<index>.running_mean",
...), with an "architecture" JSON in its metadata (include/bnorm/io/
model_file.hpp).  build_sequential turns that JSON into the module;
architecture_of and write_model go the other way.  Shared by
torch_check_model.py (bnorm -> PyTorch) and torch_to_bnorm.py (PyTorch ->
bnorm), so the mapping of layer types is written once.
"""

import json
import os
import tempfile

import numpy as np
import torch

import safetensors_py

MODEL_FORMAT = "bnorm-model"
MODEL_FORMAT_VERSION = "1"


class FormatError(Exception):
    """A model or module bnorm's file format cannot hold."""


def bn_scale_center(spec):
    """(learned gamma, learned beta) of a batch-norm layer config: PyTorch's
    "affine" (both or neither) or bnorm's separate "scale" and "center"."""
    if "affine" in spec:
        return spec["affine"], spec["affine"]
    return spec["scale"], spec["center"]


def fixed_bn_parameters(architecture):
    """The tensors a bnorm file lacks where PyTorch needs them.

    PyTorch's BatchNorm learns gamma and beta together (affine=True) or neither;
    it cannot learn one alone.  A bnorm layer with only scale (or only center)
    is loaded as affine=True with the missing tensor at its fixed value: bias 0
    (or weight 1).  The outputs are the same; training it further in PyTorch
    would also move the fixed one, which bnorm keeps fixed.
    """
    fixed = {}
    for index, spec in enumerate(architecture.get("layers", [])):
        if spec.get("type") != "batchnorm":
            continue
        scale, center = bn_scale_center(spec)
        if scale and not center:
            fixed[f"{index}.bias"] = torch.zeros(spec["num_features"])
        elif center and not scale:
            fixed[f"{index}.weight"] = torch.ones(spec["num_features"])
    return fixed


def build_sequential(architecture):
    """Translate the architecture description into a torch.nn.Sequential."""
    layers = []
    # Batch norm is BatchNorm2d on (N, C, H, W) data and BatchNorm1d after a
    # flatten or on an MLP, so follow the rank of the data through the list.
    spatial = len(architecture.get("input_shape", [])) == 3
    for index, spec in enumerate(architecture.get("layers", [])):
        kind = spec.get("type")
        if kind == "conv2d":
            layers.append(torch.nn.Conv2d(
                spec["in_channels"], spec["out_channels"], tuple(spec["kernel_size"]),
                stride=spec["stride"], padding=spec["padding"], bias=spec["bias"]))
        elif kind == "maxpool2d":
            layers.append(torch.nn.MaxPool2d(spec["kernel_size"], stride=spec["stride"]))
        elif kind == "avgpool2d":
            layers.append(torch.nn.AvgPool2d(spec["kernel_size"], stride=spec["stride"]))
        elif kind == "global_avgpool":
            layers.append(torch.nn.AdaptiveAvgPool2d(1))
        elif kind == "flatten":
            layers.append(torch.nn.Flatten())
            spatial = False
        elif kind == "dropout":
            layers.append(torch.nn.Dropout(spec["p"]))
        elif kind == "linear":
            layers.append(torch.nn.Linear(
                spec["in_features"], spec["out_features"], bias=spec["bias"]))
        elif kind == "batchnorm":
            # unbiased_running_var only changes how training updates the
            # running variance; eval mode ignores it.
            norm = torch.nn.BatchNorm2d if spatial else torch.nn.BatchNorm1d
            scale, center = bn_scale_center(spec)
            layers.append(norm(
                spec["num_features"],
                eps=spec["eps"],
                momentum=spec["momentum"],
                affine=scale or center,
                track_running_stats=spec["track_running_stats"]))
        elif kind == "groupnorm":
            layers.append(torch.nn.GroupNorm(
                spec["num_groups"], spec["num_channels"], eps=spec["eps"], affine=spec["affine"]))
        elif kind == "layernorm":
            # bnorm's LayerNorm normalizes an example's whole shape, which
            # the config names exactly as torch's normalized_shape.
            layers.append(torch.nn.LayerNorm(
                spec["normalized_shape"], eps=spec["eps"],
                elementwise_affine=spec["elementwise_affine"]))
        elif kind in ("relu", "tanh", "sigmoid"):
            layers.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[kind]())
        else:
            raise FormatError(f"layer {index}: unknown type {kind!r}")
    if not layers:
        raise FormatError("architecture has no layers")
    return torch.nn.Sequential(*layers)


def read_model(path):
    """(tensors, metadata, architecture) of a version 1 bnorm model file."""
    try:
        tensors, metadata = safetensors_py.read(path)
    except (OSError, safetensors_py.SafetensorsError) as exc:
        raise FormatError(f"cannot read model {path}: {exc}") from exc
    if metadata.get("format") != MODEL_FORMAT or metadata.get("version") != MODEL_FORMAT_VERSION:
        raise FormatError(f"{path}: not a version {MODEL_FORMAT_VERSION} {MODEL_FORMAT} file "
                          f"(format={metadata.get('format')!r}, version={metadata.get('version')!r})")
    return tensors, metadata, json_metadata(metadata, "architecture")


def json_metadata(metadata, key):
    if key not in metadata:
        raise FormatError(f"model metadata lacks {key!r}")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise FormatError(f"model metadata {key!r} is not valid JSON: {exc}") from exc


def _pair(value, what, index):
    """An int, or a tuple of two equal ints, as one int (bnorm has one value for both directions)."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise FormatError(f"layer {index}: {what} {value!r} differs between the two directions; bnorm has one value")


def _layer_config(index, module, shape):
    """bnorm's config for one module on examples of `shape`, or None for a module that vanishes."""
    nn = torch.nn
    name = f"layer {index} ({type(module).__name__})"
    if isinstance(module, nn.Linear):
        return {"type": "linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or _pair(module.dilation, "dilation", index) != 1:
            raise FormatError(f"{name}: grouped or dilated convolutions are not in bnorm")
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise FormatError(f"{name}: padding {module.padding!r} ({module.padding_mode}); bnorm pads with zeros by a number")
        return {"type": "conv2d", "in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel_size": list(module.kernel_size), "stride": _pair(module.stride, "stride", index),
                "padding": _pair(module.padding, "padding", index), "bias": module.bias is not None}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if len(shape) not in (1, 3):
            raise FormatError(f"{name}: normalizes examples of shape {tuple(shape)}; bnorm's batch norm holds "
                              "(C) or (C, H, W)")
        return {"type": "batchnorm", "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats, "unbiased_running_var": True}
    if isinstance(module, nn.GroupNorm):
        return {"type": "groupnorm", "num_groups": module.num_groups, "num_channels": module.num_channels,
                "eps": module.eps, "affine": module.affine}
    if isinstance(module, nn.LayerNorm):
        if tuple(module.normalized_shape) != tuple(shape):
            raise FormatError(f"{name}: normalizes over {tuple(module.normalized_shape)}; bnorm's LayerNorm "
                              f"normalizes a whole example, here {tuple(shape)}")
        return {"type": "layernorm", "normalized_shape": list(module.normalized_shape), "eps": module.eps,
                "elementwise_affine": module.elementwise_affine}
    for cls, kind in ((nn.ReLU, "relu"), (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid")):
        if isinstance(module, cls):
            return {"type": kind}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if _pair(module.padding, "padding", index) != 0 or module.ceil_mode:
            raise FormatError(f"{name}: padded or ceil_mode pooling is not in bnorm")
        if isinstance(module, nn.MaxPool2d) and _pair(module.dilation, "dilation", index) != 1:
            raise FormatError(f"{name}: dilated pooling is not in bnorm")
        kind = "maxpool2d" if isinstance(module, nn.MaxPool2d) else "avgpool2d"
        return {"type": kind, "kernel_size": _pair(module.kernel_size, "kernel_size", index),
                "stride": _pair(module.stride, "stride", index)}
    if isinstance(module, nn.AdaptiveAvgPool2d):
        if _pair(module.output_size, "output_size", index) != 1:
            raise FormatError(f"{name}: only output size 1 (global average pooling) is in bnorm")
        return {"type": "global_avgpool"}
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise FormatError(f"{name}: bnorm flattens from dim 1 to the end only")
        return {"type": "flatten"} if len(shape) > 1 else None
    if isinstance(module, nn.Dropout):
        return {"type": "dropout", "p": module.p}
    if isinstance(module, nn.Identity):
        return None
    raise FormatError(f"{name}: not a layer bnorm has")


def architecture_of(sequential, input_shape):
    """(architecture JSON, [(bnorm index, module)]) of an nn.Sequential on examples of input_shape.

    The example shapes are followed with a forward pass of one zero example
    in eval mode, so that a module in a place bnorm cannot hold is named.
    """
    if not isinstance(sequential, torch.nn.Sequential):
        raise FormatError(f"expected a torch.nn.Sequential, got {type(sequential).__name__}")
    layers, kept = [], []
    x = torch.zeros(2, *input_shape)  # two: a batch norm without running statistics needs more than one value
    was_training = sequential.training
    sequential.eval()
    with torch.no_grad():
        for index, module in enumerate(sequential):
            config = _layer_config(index, module, tuple(x.shape[1:]))
            try:
                x = module(x)
            except RuntimeError as exc:
                raise FormatError(f"layer {index} ({type(module).__name__}) does not fit its input: {exc}") from exc
            if config is not None:
                layers.append(config)
                kept.append(module)
    sequential.train(was_training)
    if not layers:
        raise FormatError("the Sequential has no layer bnorm can hold")
    return {"input_shape": list(input_shape), "layers": layers}, kept, tuple(x.shape[1:])


def write_model(path, sequential, input_shape, classify=False, training=None):
    """Write `sequential` as a bnorm model file, atomically (a temporary file renamed over path).

    Inputs are taken raw (no input normalization).  Without classify the
    outputs are raw values too: a regression whose target normalization is
    the identity, as `bnorm import` writes.
    """
    architecture, kept, output_shape = architecture_of(sequential, input_shape)
    tensors = []
    for index, module in enumerate(kept):
        for name, value in module.state_dict().items():
            array = value.detach().cpu().numpy()
            array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
            if array.dtype == np.float32 and not np.all(np.isfinite(array)):
                raise FormatError(f"{index}.{name} holds a non-finite value")
            tensors.append((f"{index}.{name}", array))
    outputs = int(np.prod(output_shape))
    metadata = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "architecture": json.dumps(architecture),
        "input_normalization": json.dumps({"mode": "none", "divisor": 1.0, "mean": [], "std": []}),
        "task": json.dumps({"kind": "classify" if classify else "regress"}),
        "training": json.dumps(training or {}),
    }
    if not classify:
        metadata["target_normalization"] = json.dumps({"mean": [0.0] * outputs, "std": [1.0] * outputs})
    directory = os.path.dirname(os.path.abspath(path))
    # Named as bnorm's own atomic writes name theirs (.NAME.tmp-XXXXXX).
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(safetensors_py.serialize(tensors, metadata))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return architecture
