#!/usr/bin/env python3
"""PyTorch autograd timings of the backward passes that bench/ops_bench.cpp's *_Backward cases
time (input, weight and bias gradients of one forward, the graph kept between runs), and of the
forward and backward of ResNet-18's training convolutions (BM_ResNet18Train*: batch 32, 64x64).

usage: /usr/bin/python3 bench/train_ops_torch.py [--threads 2] [--iters 20] [--filter TEXT]
"""
import argparse
import ctypes
import time

import torch
import torch.nn as nn

CASES = [
    ("Conv3x3_64_Backward", lambda: nn.Conv2d(64, 64, 3, padding=1), (8, 64, 56, 56)),
    ("Conv1x1_64_256_Backward", lambda: nn.Conv2d(64, 256, 1), (8, 64, 56, 56)),
    ("Conv3x3_128_s2_Backward", lambda: nn.Conv2d(128, 128, 3, stride=2, padding=1),
     (8, 128, 28, 28)),
    ("Depthwise_Backward", lambda: nn.Conv2d(96, 96, 3, padding=1, groups=96), (8, 96, 56, 56)),
]
# in, out, kernel, stride, input size: the same list as ops_bench.cpp's resnet18_train_shapes.
RESNET18_TRAIN = [(3, 64, 7, 2, 64), (64, 64, 3, 1, 16), (64, 128, 3, 2, 16), (64, 128, 1, 2, 16),
                  (128, 128, 3, 1, 8), (128, 256, 3, 2, 8), (128, 256, 1, 2, 8),
                  (256, 256, 3, 1, 4), (256, 512, 3, 2, 4), (256, 512, 1, 2, 4),
                  (512, 512, 3, 1, 2)]
for args in RESNET18_TRAIN:
    cin, cout, k, stride, size = args
    CASES.append(("ResNet18Train/" + "/".join(map(str, args)),
                  lambda cin=cin, cout=cout, k=k, stride=stride: nn.Conv2d(
                      cin, cout, k, stride=stride, padding=k // 2, bias=False),
                  (32, cin, size, size)))


def median_ms(run, iters):
    for _ in range(3):
        run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * times[len(times) // 2], 1e3 * times[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--filter", default="", help="only the cases whose name holds this")
    args = parser.parse_args()
    # PyTorch at its best (../shared/anchors/README.md): freed blocks kept, not paged in anew.
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, 0)
    libc.mallopt(-1, 2**30)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, make, shape in CASES:
        if args.filter not in name:
            continue
        module = make()
        x = torch.randn(shape, requires_grad=True)
        y = module(x)
        g = torch.randn_like(y)
        wrt = [x] + list(module.parameters())
        backward, best = median_ms(lambda: torch.autograd.grad(y, wrt, g, retain_graph=True),
                                   args.iters)
        line = f"{name:32s} threads {args.threads}: backward median {backward:8.2f} ms, best {best:8.2f}"
        if name.startswith("ResNet18Train"):
            with torch.no_grad():
                forward, _ = median_ms(lambda: module(x), args.iters)
            line += f"; forward median {forward:8.2f} ms"
        print(line)


if __name__ == "__main__":
    main()
