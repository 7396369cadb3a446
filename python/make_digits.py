#!/usr/bin/env python3
"""Writes the 8x8 handwritten digits set that ships inside Debian's python3-sklearn (1,797
images, 10 classes; no download) as .npy train/test splits for `nnx train`:

  OUT/digits_train_x.npy  float32 N,1,8,8, pixel values scaled from 0..16 to [0, 1]
  OUT/digits_train_y.npy  int64 N, class labels 0..9
  OUT/digits_test_x.npy, OUT/digits_test_y.npy   the same for the test split

usage: /usr/bin/python3 python/make_digits.py OUT [--test-fraction 0.25] [--seed 0]

The split is stratified and seeded: the same files on every machine.
"""
import argparse
import os

import numpy as np


def write_digits(out, test_fraction=0.25, seed=0):
    """Writes the four files into `out`; returns (training, test) sizes."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    os.makedirs(out, exist_ok=True)
    for name, array in (("train_x", x_train), ("train_y", y_train), ("test_x", x_test),
                        ("test_y", y_test)):
        path = os.path.join(out, f"digits_{name}.npy")
        tmp = path + ".tmp.npy"
        np.save(tmp, np.ascontiguousarray(array))
        os.replace(tmp, path)
    return len(y_train), len(y_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_train, n_test = write_digits(args.out, args.test_fraction, args.seed)
    print(f"digits: {n_train} training and {n_test} test images in {args.out}")


if __name__ == "__main__":
    main()
