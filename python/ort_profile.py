#!/usr/bin/env python3
"""ONNX Runtime's per-node CPU times for a model: the layer-by-layer counterpart of
`nnx bench --profile`, to see which layers the strongest CPU peer runs faster.

usage: /usr/bin/python3 python/ort_profile.py MODEL.onnx --shape 1,3,224,224 [--threads 2]
           [--iters 30] [--warmup 5] [--json]

ONNX Runtime comes from ../shared/anchors (its CPU build, installed offline from npm once by
ort-setup.sh), with the same session options as ort-bench.sh (sequential, all graph
optimisations, intra-op threads as given) plus its profiler on. Each node's time is its median
over the timed runs (the warm-up runs are left out); nodes are listed in execution order with
ORT's op type and output name (fused nodes carry the name of their last output), then the sum per
op type and over all nodes. The input is deterministic (a sine pattern), like ort-bench.sh's.
"""
import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

SCRIPT = r"""
const ort = require('onnxruntime-node');
async function main() {
  const [model, shapeText, threads, runs, prefix] = process.argv.slice(2);
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: +threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: prefix });
  const shape = shapeText.split(',').map(Number);
  const n = shape.reduce((a, b) => a * b, 1), d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = 0.5 * Math.sin(i);
  const feeds = {};
  feeds[sess.inputNames[0]] = new ort.Tensor('float32', d, shape);
  for (let i = 0; i < +runs; i++) await sess.run(feeds);
  sess.endProfiling();
}
main().catch(e => { console.error(`ort_profile: ${e.message}`); process.exit(1); });
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--shape", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    setup = os.path.join(SHARED, "anchors", "ort-setup.sh")
    if not os.path.exists(setup):
        sys.exit(f"ort_profile: {setup} not found (ONNX Runtime's offline installer)")
    modules = subprocess.run([setup], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as work:
        script = os.path.join(work, "profile.js")
        with open(script, "w") as f:
            f.write(SCRIPT)
        prefix = os.path.join(work, "ort")
        run = subprocess.run(["node", script, os.path.abspath(args.model), args.shape,
                              str(args.threads), str(args.warmup + args.iters), prefix],
                             env={**os.environ, "NODE_PATH": os.path.join(modules, "node_modules")},
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"ort_profile: node failed:\n{run.stderr}")
        traces = glob.glob(prefix + "*.json")
        if not traces:
            sys.exit("ort_profile: ONNX Runtime wrote no profile")
        with open(traces[0]) as f:
            events = json.load(f)
    times = collections.OrderedDict()
    ops = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        times.setdefault(node, []).append(e["dur"] / 1000.0)
        ops[node] = e.get("args", {}).get("op_name", "?")
    nodes = []
    for node, runs in times.items():
        timed = sorted(runs[args.warmup:] or runs)
        nodes.append({"node": node, "op": ops[node], "ms": timed[len(timed) // 2]})
    by_op = collections.defaultdict(float)
    for n in nodes:
        by_op[n["op"]] += n["ms"]
    total = sum(n["ms"] for n in nodes)
    if args.json:
        print(json.dumps({"model": os.path.basename(args.model), "threads": args.threads,
                          "nodes": nodes, "by_op": by_op, "total_ms": total}))
        return
    for i, n in enumerate(nodes):
        print(f"{i:<4} {n['op']:<20} {n['ms']:8.3f} ms  {n['node']}")
    print()
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"{op:<20} {ms:8.3f} ms  {100 * ms / total:5.1f} %")
    print(f"sum of node medians {total:.2f} ms over {len(nodes)} nodes "
          f"({args.threads} threads, {args.iters} runs)")


if __name__ == "__main__":
    main()
