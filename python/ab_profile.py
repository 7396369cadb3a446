"""A/B comparison of nnx builds or settings that this VM's minute-to-minute noise does not swamp.

usage: /usr/bin/python3 python/ab_profile.py ARCH.json --weights W.pth --shape 1,3,224,224
           [--rounds 4] [--iters 10] [--threads 2] [--diff 0.05] [--plugin LIB.so] CONFIG...

A CONFIG is a label, then `=` and what distinguishes it: an nnx binary and/or environment
settings, comma-separated (`old=/tmp/nnx_old`, `off=NNX_CONV_CHANNELS_LAST=0`,
`new=build/cpu/nnx,NNX_SPIN_US=0`). The configurations run `nnx bench --profile` in alternation,
round after round, every other round in reverse order; for each one the script prints the
median of every round and the sum over nodes of each node's fastest time across the rounds,
which a slow minute in one round does not move. It then compares the second configuration
with the first by the median over the rounds of each round's ratio (the two runs of a round are
seconds apart), the measure to trust when the VM's speed swings: one fast round of one
configuration sets all of its fastest times. With --diff, the nodes whose fastest times or
median ratio differ by more than that fraction are listed (by node number: meaningful where
both configurations fuse the same nodes); read a node's ratio against those of nodes the
change cannot touch.
"""
import argparse
import collections
import os
import re
import statistics
import subprocess
import sys

NODE = re.compile(r"^(\d+)\s+(\S+)\s+(\[.*?\])\s+([\d.]+) ms")
MEDIAN = re.compile(r"^median ([\d.]+) ms")


def parse_config(text):
    label, _, spec = text.partition("=")
    if not spec:
        sys.exit(f"ab_profile: a configuration is LABEL=SPEC, found {text!r}")
    binary, env = "build/cpu/nnx", {}
    for part in spec.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            env[key] = value
        else:
            binary = part
    return label, binary, env


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arch")
    p.add_argument("--weights")
    p.add_argument("--shape", required=True)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--diff", type=float, default=0.0)
    p.add_argument("--plugin", action="append", default=[],
                   help="shared library of user ops (the seed network's YOLO), for every run")
    p.add_argument("configs", nargs="+")
    args = p.parse_args()
    configs = [parse_config(c) for c in args.configs]
    fastest = {label: collections.defaultdict(lambda: float("inf")) for label, _, _ in configs}
    names, medians = {}, {label: [] for label, _, _ in configs}
    # Each round's node times per configuration, for the ratios of runs next to each other.
    rounds = {label: [] for label, _, _ in configs}
    for round_index in range(args.rounds):
        # Every other round in reverse order: the process that runs second measured a few per
        # cent slower or faster on some evenings (the same binary as old and new: 6% apart).
        order = configs if round_index % 2 == 0 else configs[::-1]
        for label, binary, env in order:
            cmd = [binary, "bench", args.arch, "--shape", args.shape, "--threads",
                   str(args.threads), "--iters", str(args.iters), "--warmup", "3", "--profile"]
            if args.weights:
                cmd[3:3] = ["--weights", args.weights]
            for plugin in args.plugin:
                cmd += ["--plugin", plugin]
            run = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"ab_profile: {label}: {' '.join(cmd)} failed:\n{run.stderr}")
            rounds[label].append({})
            for line in run.stdout.splitlines():
                m = NODE.match(line)
                if m:
                    node = int(m.group(1))
                    fastest[label][node] = min(fastest[label][node], float(m.group(4)))
                    rounds[label][-1][node] = float(m.group(4))
                    names[node] = f"{m.group(2)} {m.group(3)}"
                m = MEDIAN.match(line)
                if m:
                    medians[label].append(float(m.group(1)))
    for label, _, _ in configs:
        print(f"{label}: sum of per-node fastest times {sum(fastest[label].values()):.3f} ms; "
              f"round medians {', '.join(f'{x:.2f}' for x in medians[label])} ms")
    if len(configs) < 2:
        return
    # The second configuration against the first, round by round: the two runs of a round are
    # seconds apart, so a slow minute moves both, where one fast round of one configuration sets
    # all its fastest times (a sum over nodes 30% apart for the same binary on a bad evening).
    a, b = configs[0][0], configs[1][0]

    def ratio(node=None):
        """Median of b/a over the rounds where both runs timed `node` (all nodes: None)."""
        pairs = [(ra.get(node) if node is not None else sum(ra.values()),
                  rb.get(node) if node is not None else sum(rb.values()))
                 for ra, rb in zip(rounds[a], rounds[b])]
        ratios = [y / x for x, y in pairs if x and y]
        return statistics.median(ratios) if ratios else float("nan")

    print(f"{b}/{a}: median over the rounds of each round's ratio, summed nodes {ratio():.3f}")
    if args.diff > 0:
        for node in sorted(fastest[a]):
            x, y = fastest[a][node], fastest[b].get(node, float("nan"))
            r = ratio(node)
            if abs(x - y) > args.diff * max(x, y) or abs(r - 1) > args.diff:
                print(f"  node {node} {names[node]}: {x:.3f} -> {y:.3f} ms, "
                      f"per-round ratio {r:.3f}")


if __name__ == "__main__":
    main()
