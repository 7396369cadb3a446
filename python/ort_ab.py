#!/usr/bin/env python3
"""nnx against ONNX Runtime layer by layer, in alternating rounds, so that this VM's swings
(2x from minute to minute) fall on both alike.

usage: /usr/bin/python3 python/ort_ab.py DIR --rounds 6 [--iters 20] [--shape 1,3,224,224]
           [--nnx build/cpu/nnx] [--threads 2]

DIR holds NAME.json, NAME.pth and NAME.onnx for NAME = DIR's last component (what
python/bench_compare.py leaves in its --work folder). Each round runs `nnx bench --profile --json`
and python/ort_profile.py once each; convolution and Linear nodes are paired in execution order
(a following pooling or other node is added to the convolution before it, in both), which holds
where both fuse the same way: the ResNets (one node a convolution with its BatchNorm, ReLU and
Add), not MobileNetV2, whose inverted-residual blocks nnx runs as one node. Printed per round: the
summed times and their ratio; then the sum of each node's fastest time on either side (each at
its best) and per pair: each side's fastest time and the median over the rounds of the per-round
ratio nnx / ORT.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nnx_nodes(args, base, name):
    out = subprocess.run(
        [args.nnx, "bench", f"{base}/{name}.json", "--weights", f"{base}/{name}.pth", "--shape",
         args.shape, "--threads", str(args.threads), "--iters", str(args.iters), "--warmup", "3",
         "--profile", "--json"], capture_output=True, text=True, check=True).stdout
    rows = []
    for n in json.loads(out)["nodes"]:
        if n["op"].startswith("Conv2d") or n["op"].startswith("Linear"):
            rows.append([f'{n["index"]} {n["op"]} {n["shape"]}', n["ms"]])
        elif rows:
            rows[-1][1] += n["ms"]
    return rows


def ort_nodes(args, base, name):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "python", "ort_profile.py"), f"{base}/{name}.onnx",
         "--shape", args.shape, "--threads", str(args.threads), "--iters", str(args.iters),
         "--json"], capture_output=True, text=True, check=True).stdout
    rows = []
    for n in json.loads(out)["nodes"]:
        if n["op"] in ("Conv", "FusedConv", "Gemm", "MatMul"):
            rows.append([n["node"], n["ms"]])
        elif rows:
            rows[-1][1] += n["ms"]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--shape", default="1,3,224,224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nnx", default=os.path.join(ROOT, "build", "cpu", "nnx"))
    args = ap.parse_args()
    base = args.dir.rstrip("/")
    name = os.path.basename(base)
    mine, theirs, totals = [], [], []
    for r in range(args.rounds):
        a, b = nnx_nodes(args, base, name), ort_nodes(args, base, name)
        if len(a) != len(b):
            sys.exit(f"ort_ab: {len(a)} nnx nodes against {len(b)} ORT nodes: the graphs are not "
                     "fused alike, so they cannot be paired")
        mine.append(a)
        theirs.append(b)
        totals.append(sum(x[1] for x in a) / sum(y[1] for y in b))
        print(f"round {r + 1}: nnx {sum(x[1] for x in a):.2f} ms, ORT {sum(y[1] for y in b):.2f} "
              f"ms, ratio {totals[-1]:.3f}", flush=True)
    print(f"median of the rounds' ratios {statistics.median(totals):.3f}")
    best_mine = sum(min(m[i][1] for m in mine) for i in range(len(mine[0])))
    best_theirs = sum(min(t[i][1] for t in theirs) for i in range(len(theirs[0])))
    print(f"sum of each node's fastest time: nnx {best_mine:.2f} ms, ORT {best_theirs:.2f} ms, "
          f"ratio {best_mine / best_theirs:.3f}")
    for i, (label, _) in enumerate(mine[0]):
        n = min(m[i][1] for m in mine)
        o = min(t[i][1] for t in theirs)
        ratio = statistics.median(m[i][1] / t[i][1] for m, t in zip(mine, theirs))
        print(f"{label[:64]:64s} nnx {n:.3f} ORT {o:.3f} ratio {ratio:.2f}  ({theirs[0][i][0]})")


if __name__ == "__main__":
    main()
