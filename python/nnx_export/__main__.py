"""The nnx-export command (see CLI.md):

    nnx-export MODEL --shape N,C,H,W [--shape ...] --out DIR/NAME [--verify|--no-verify]

Exit status: 0 written (and verified where `nnx` was found), 1 bad input, unsupported calls or
a failed verification, 2 usage, 3 anything else.
"""
import argparse
import sys
import time


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write(f"nnx-export: error: {message}\n")
        sys.exit(2)


def _shape(text):
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not N,C,H,W") from None
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"'{text}' is not N,C,H,W (four positive sizes)")
    return dims


def parser():
    p = _Parser(prog="nnx-export", description="Export a PyTorch model to the nnx model "
                "description (NAME.json + NAME.pth).")
    p.add_argument("model", metavar="MODEL", help="package.module:factory, "
                   "path/to/file.py:ClassOrFactory, or a model saved with torch.save")
    p.add_argument("--shape", action="append", type=_shape, required=True,
                   metavar="N,C,H,W", help="shape of each input, in order")
    p.add_argument("--out", required=True, metavar="DIR/NAME",
                   help="writes DIR/NAME.json and DIR/NAME.pth (DIR is created)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--verify", dest="verify", action="store_true", default=None,
                   help="run the export through `nnx run` and compare (default when found)")
    v.add_argument("--no-verify", dest="verify", action="store_false")
    return p


def main(argv=None):
    args = parser().parse_args(argv)

    def log(message):
        sys.stderr.write(f"nnx-export: {message}\n")
    try:
        from . import ExportError, export
    except ImportError as e:
        sys.stderr.write(f"nnx-export: error: {e} (the Python running nnx-export needs torch)\n")
        return 3
    start = time.time()
    try:
        result = export(args.model, args.shape, args.out, verify=args.verify, log=log)
    except ExportError as e:
        for line in e.faults:
            sys.stderr.write(f"nnx-export: error: {line}\n")
        return 1
    except KeyboardInterrupt:
        return 3
    except Exception as e:  # a bug or an environment failure, not the user's input
        sys.stderr.write(f"nnx-export: error: {type(e).__name__}: {e}\n")
        return 3
    note = "" if result.max_error is None else f", largest difference {result.max_error:.3g}"
    print(f"wrote {result.json_path} and {result.pth_path}: {result.num_layers} layers, "
          f"{result.num_nodes} nodes ({result.tracing} tracing{note}) in "
          f"{time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
