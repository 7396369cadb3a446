#!/usr/bin/env python3
"""PyTorch autograd timings of the backward passes that bench/ops_bench.cpp's *_Backward cases
time (input, weight and bias gradients of one forward, the graph kept between runs).

usage: /usr/bin/python3 bench/train_ops_torch.py [--threads 2] [--iters 20]
"""
import argparse
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, make, shape in CASES:
        module = make()
        x = torch.randn(shape, requires_grad=True)
        y = module(x)
        g = torch.randn_like(y)
        wrt = [x] + list(module.parameters())
        for _ in range(3):
            torch.autograd.grad(y, wrt, g, retain_graph=True)
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            torch.autograd.grad(y, wrt, g, retain_graph=True)
            times.append(time.perf_counter() - start)
        times.sort()
        print(f"{name:28s} threads {args.threads}: median {1e3 * times[len(times) // 2]:8.2f} ms, "
              f"best {1e3 * times[0]:8.2f} ms")


if __name__ == "__main__":
    main()
