"""Minimal safetensors reader and writer (the `safetensors` package is not required).

The format: 8 bytes little-endian header length, a JSON header mapping each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets into the byte buffer that follows
the header) plus an optional "__metadata__" object of strings, then the raw little-endian,
C-order tensor bytes.
"""
import json
import struct

import numpy as np
import torch

from .errors import NNXRefError

_CODES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
          torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_DTYPES = {v: k for k, v in _CODES.items()}


def _raw_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def save(tensors, path, metadata=None):
    """Writes name -> tensor (sorted by name, each in its own aligned range)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        data = _raw_bytes(t)
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def load(path):
    """Reads a safetensors file into an ordered dict name -> tensor (file order)."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise NNXRefError(f"{path}: cannot read: {e.strerror}") from None
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        buf = memoryview(blob)[8 + n:]
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(info["shape"])
            raw = bytes(buf[begin:end])
            if dtype == torch.bfloat16:
                arr = np.frombuffer(raw, dtype="<i2").reshape(shape)
                out[name] = torch.from_numpy(arr.copy()).view(torch.bfloat16)
            else:
                np_dtype = torch.empty(0, dtype=dtype).numpy().dtype.newbyteorder("<")
                arr = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
                out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("=")))
        return out
    except (KeyError, ValueError, struct.error, TypeError) as e:
        raise NNXRefError(f"{path}: not a valid safetensors file ({e})") from None
