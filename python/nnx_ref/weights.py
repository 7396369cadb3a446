"""Reading architectures and weights in every form of ARCH_FORMAT.md §1.

- `.json` architecture (the dialect of jsonc.py); weights from a separate file:
  - a `.pth` whose top object is a list: one state dict per layer description, in order;
  - a `.pth` whose top object is a flat state dict `layer_{u:03}_type_{Class}.{param}`
    (the executor's own `state_dict()`), or a `.safetensors` file with the same keys;
- one-file `.pth`: a dict holding the architecture keys (tuples for lists) plus
  `layers_state_dicts` (older: `unique_layers_state_dicts`).

Everything comes out as `(arch, per_layer)`: the architecture with tuples turned into lists,
and `per_layer`, None (no weights) or a list with one state dict per description.
"""
import os
import re
from collections import OrderedDict

import torch

from . import jsonc, safetensors_io
from .errors import NNXRefError

STATE_KEYS = ("layers_state_dicts", "unique_layers_state_dicts")
FLAT_KEY = re.compile(r"^layer_(\d+)_type_([^.]+)\.(.+)$")


def _listify(value):
    """Tuples -> lists, recursively (the package pickled channel lists as tuples)."""
    if isinstance(value, (list, tuple)):
        return [_listify(v) for v in value]
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    return value


def _torch_load(path):
    if not os.path.isfile(path):
        raise NNXRefError(f"{path}: weights file does not exist")
    try:
        return torch.load(path, map_location="cpu")
    except Exception as e:  # any unreadable file is a fault of the input
        raise NNXRefError(f"{path}: cannot read as a PyTorch file: {e}") from None


def flat_key(u, class_name, param):
    return f"layer_{u:03d}_type_{class_name}.{param}"


def split_flat(flat, class_names, path):
    """A flat state dict -> one state dict per description (keys without the prefix).

    A key whose description index is out of range or whose class is not the description's
    class is kept as an "unexpected" key of its own pseudo-layer and reported by
    `unexpected_flat`, so that strict loading can refuse it and non-strict loading ignore it.
    """
    per_layer = [OrderedDict() for _ in class_names]
    stray = []
    for key, value in flat.items():
        m = FLAT_KEY.match(key) if isinstance(key, str) else None
        if m is None:
            stray.append(key)
            continue
        u, cls, param = int(m.group(1)), m.group(2), m.group(3)
        if u >= len(class_names) or class_names[u] != cls:
            stray.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            raise NNXRefError(f"{path}: '{key}' is not a tensor")
        per_layer[u][param] = value
    return per_layer, stray


def read_arch(path):
    """(arch, embedded_per_layer_or_None) from a .json or a one-file .pth."""
    path = str(path)
    if path.endswith(".pth") or path.endswith(".pt"):
        obj = _torch_load(path)
        if not isinstance(obj, dict) or "inputs_channels" not in obj:
            raise NNXRefError(f"{path}: not a one-file model (a dict with the architecture keys)")
        state = None
        for k in STATE_KEYS:
            if k in obj:
                state = list(obj[k])
        arch = _listify({k: v for k, v in obj.items() if k not in STATE_KEYS})
        return arch, state
    return jsonc.load(path), None


def read_weights(path, class_names):
    """(per_layer, stray_keys) from a weights file given beside a JSON architecture."""
    path = str(path)
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise NNXRefError(f"{path}: weights file does not exist")
        return split_flat(safetensors_io.load(path), class_names, path)
    obj = _torch_load(path)
    if isinstance(obj, (list, tuple)):
        return list(obj), []
    if isinstance(obj, dict) and "inputs_channels" in obj:
        for k in STATE_KEYS:
            if k in obj:
                return list(obj[k]), []
        raise NNXRefError(f"{path}: a one-file model without state dicts")
    if isinstance(obj, dict):
        return split_flat(obj, class_names, path)
    raise NNXRefError(f"{path}: weights must be a list of state dicts or a flat state dict")
