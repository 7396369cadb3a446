"""IDX files (MNIST's format) with the arrays they hold as .npy, for tests/train/data_test.cpp:
OUT/idx/<name>.idx (or .idx.gz) + <name>.npy, one per element type, plus images/labels in
MNIST's shapes (N,28,28 ubyte and N ubyte) written by numpy's big-endian encoding."""
import gzip
import os
import struct

import numpy as np

TYPES = {"u8": (0x08, np.uint8), "i8": (0x09, np.int8), "i16": (0x0B, np.int16),
         "i32": (0x0C, np.int32), "f32": (0x0D, np.float32), "f64": (0x0E, np.float64)}


def encode(array, code):
    head = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def generate(folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (code, dt) in TYPES.items():
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            a = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dt)
        else:
            a = rng.standard_normal((3, 4, 5)).astype(dt)
        with open(os.path.join(folder, f"{name}.idx"), "wb") as f:
            f.write(encode(a, code))
        np.save(os.path.join(folder, f"{name}.npy"), a)
    images = rng.integers(0, 255, size=(6, 28, 28), endpoint=True).astype(np.uint8)
    labels = rng.integers(0, 9, size=(6,), endpoint=True).astype(np.uint8)
    with open(os.path.join(folder, "images.idx.gz"), "wb") as f:
        f.write(gzip.compress(encode(images, 0x08)))
    with open(os.path.join(folder, "labels.idx"), "wb") as f:
        f.write(encode(labels, 0x08))
    np.save(os.path.join(folder, "images_scaled.npy"),
            (images.astype(np.float32) / np.float32(255))[:, None])
    np.save(os.path.join(folder, "labels.npy"), labels.astype(np.int64))
