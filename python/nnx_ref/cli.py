"""Command line of the reference executor (python -m nnx_ref ...).

    run   ARCH [--weights W] [--input X.npy]... [--shape N,C,H,W]... [--no-strict]
          [--user-op NAME=FILE.py:Class]... [--seed S] --out DIR
          writes DIR/out0.npy, out1.npy, ... (float32) and prints each output's shape;
          without --input, deterministic random inputs of --shape (default 1,C,224,224).
    check ARCH [--weights W] [--no-strict] [--user-op ...] [--shape ...]
          prints every fault of the model, one per line, and exits 1 if there is any.

Exit status as the C++ tools (CLI.md): 0 success, 1 bad input, 2 usage.
"""
import argparse
import importlib.util
import os
import sys

import numpy as np
import torch

from .errors import NNXRefError
from .executor import check, load
from .weights import read_arch


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"nnx_ref: error: {message}", file=sys.stderr)
        sys.exit(2)


def load_user_op(spec):
    """NAME=FILE.py:Class -> (NAME, class), e.g. own_module.YOLO=examples/seed/yolo.py:YOLO."""
    try:
        name, rest = spec.split("=", 1)
        path, cls = rest.rsplit(":", 1)
    except ValueError:
        raise NNXRefError(f"--user-op '{spec}': expected NAME=FILE.py:Class") from None
    module_spec = importlib.util.spec_from_file_location(f"_nnx_user_{abs(hash(path))}", path)
    if module_spec is None or not os.path.isfile(path):
        raise NNXRefError(f"--user-op: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    # Registered under its name, as an import would: torch.compile's tracer imports the module
    # of each function it meets by that name.
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    if not hasattr(module, cls):
        raise NNXRefError(f"--user-op: {path} has no class {cls}")
    return name, getattr(module, cls)


def _shape(text):
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape '{text}'") from None
    if len(dims) not in (3, 4) or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"bad shape '{text}': N,C,H,W or C,H,W")
    return dims


def _inputs(args, inputs_channels):
    if args.input:
        xs = []
        for path in args.input:
            try:
                a = np.load(path)
            except (OSError, ValueError) as e:
                raise NNXRefError(f"{path}: cannot read as .npy: {e}") from None
            xs.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
        return xs
    gen = torch.Generator().manual_seed(args.seed)
    shapes = args.shape or []
    xs = []
    for k, c in enumerate(inputs_channels):
        shape = shapes[k] if k < len(shapes) else (1, c, 224, 224)
        xs.append(torch.rand(shape, generator=gen))
    return xs


def _common(p):
    p.add_argument("arch")
    p.add_argument("--weights")
    p.add_argument("--no-strict", action="store_true")
    p.add_argument("--user-op", action="append", default=[])
    p.add_argument("--shape", action="append", type=_shape)
    p.add_argument("--input", action="append")
    p.add_argument("--seed", type=int, default=0)


def main(argv=None):
    parser = _Parser(prog="python -m nnx_ref", description="PyTorch reference executor")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_p = sub.add_parser("run", help="run a model and write its outputs")
    _common(run_p)
    run_p.add_argument("--out", required=True)
    check_p = sub.add_parser("check", help="list every fault of a model")
    _common(check_p)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    try:
        user_ops = dict(load_user_op(s) for s in args.user_op)
        arch, embedded = read_arch(args.arch)
        inputs_channels = arch.get("inputs_channels") or []
        xs = _inputs(args, inputs_channels)
        if args.command == "check":
            faults = check(args.arch, args.weights, not args.no_strict, user_ops, xs)
            for f in faults:
                print(f"nnx_ref: error: {args.arch}: {f}", file=sys.stderr)
            if not faults:
                print(f"{args.arch}: valid")
            return 1 if faults else 0
        if args.weights is None and embedded is None:
            print(f"nnx_ref: note: no weights: PyTorch default initialisation, seed "
                  f"{args.seed}", file=sys.stderr)
        net = load(args.arch, args.weights, not args.no_strict, user_ops, seed=args.seed)
        outs = net(*xs)
        os.makedirs(args.out, exist_ok=True)
        for k, y in enumerate(outs):
            final = os.path.join(args.out, f"out{k}.npy")
            tmp = final + ".tmp.npy"
            np.save(tmp, y.detach().float().cpu().numpy())
            os.replace(tmp, final)
            print(f"out{k}: {tuple(y.shape)}")
        return 0
    except NNXRefError as e:
        for f in e.faults:
            print(f"nnx_ref: error: {f}", file=sys.stderr)
        return 1
