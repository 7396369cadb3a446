#!/usr/bin/env python3
"""Exports every classification model of torchvision and tabulates the outcome.

usage: /usr/bin/python3 python/export_sweep.py [--out bench/results/export_sweep.md]
           [--max-params 150e6] [--timeout 600] [--update] [MODEL ...]

(--update reruns only the MODELs given and keeps the table's other rows; with no MODEL it
rewrites the table from the rows stored in it.)

For each model (torchvision's classification builders; random weights, nothing downloaded,
BatchNorm statistics calibrated on a random batch; input 1x3x224x224): its parameter count,
whether nnx-export exported it or which calls stopped it, the largest difference of the
runtime's outputs from PyTorch's (max|got-ref|/max(1,max|ref|), through `nnx run`: the `nnx`
on PATH, or $NNX_CLI), and the time the export took (tracing, mapping, writing,
verification). Each model runs in its own process, so a large one cannot take the others
down; models above --max-params are skipped (and listed as such), as is any model that runs
past --timeout.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

SHAPE = (1, 3, 224, 224)


def classification_models():
    """Names of torchvision's classification builders (list_models where it exists)."""
    import torchvision.models as models
    if hasattr(models, "list_models"):
        return sorted(models.list_models(module=models))
    # Older torchvision: the lowercase builder functions of the classification namespace
    # (subpackages such as detection and segmentation are modules, not functions).
    import inspect
    return sorted(name for name, obj in vars(models).items()
                  if inspect.isfunction(obj) and not name.startswith("_")
                  and name[0].islower() and name not in ("get_model", "get_weight",
                                                         "get_model_weights", "list_models",
                                                         "get_model_builder"))


# One small model of each family first: an interrupted sweep has covered every family.
FIRST = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s",
         "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2",
         "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18", "resnext50_32x4d",
         "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "swin_v2_t", "vgg11", "vit_b_16",
         "wide_resnet50_2"]


def sweep_order(names):
    first = [n for n in FIRST if n in names]
    return first + [n for n in names if n not in first]


def stopping_calls(faults):
    """'torch.roll x4, operator.getitem x2' from the fault lines of an ExportError."""
    counts = Counter()
    for line in faults:
        m = re.search(r"unsupported call (module '[^']*' \(([^)]*)\)|[\w.]+)", line)
        if m:
            counts[m.group(2) or m.group(1)] += 1
        elif "unsupported" in line:
            counts[line.split("unsupported:", 1)[-1].strip()[:60]] += 1
        else:
            counts[line[:80]] += 1
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.most_common())


def calibrate_batchnorm(model, seed=1):
    """BatchNorm statistics of a random batch: with PyTorch's defaults (mean 0, var 1) eval
    mode normalises nothing and deep models' outputs shrink to ~1e-10 or blow up, which would
    make the comparison with PyTorch say little."""
    import torch
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    for m in bns:
        m.momentum = 1.0                 # running stats := this batch's
    gen = torch.Generator().manual_seed(seed)
    batch = torch.randn((2,) + SHAPE[1:], generator=gen)
    model.train()
    try:
        with torch.no_grad():
            model(batch)
        return model.eval()
    except RuntimeError:
        # Training mode takes another path (inception_v3's auxiliary head needs 299x299):
        # the same statistics, taken in eval mode by a hook just before each BatchNorm runs.
        model.eval()

    def take_statistics(m, inputs):
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        m.running_mean.copy_(x.mean(dims))
        m.running_var.copy_(x.var(dims, unbiased=True))
    hooks = [m.register_forward_pre_hook(take_statistics) for m in bns]
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    return model


def oracle_difference(result):
    """The export run by nnx_ref (PyTorch executing the description) against the module: 0 or
    ~1e-7 when the description computes what the module does."""
    import nnx_ref
    from nnx_export.verify import compare
    outs = nnx_ref.load(result.json_path, result.pth_path)(*result.inputs)
    return compare([o.numpy() for o in outs], [r.numpy() for r in result.references])


def float64_difference(model, inputs, references, got):
    """How far PyTorch's own float32 outputs (`references`) and the runtime's (`got`) are from
    float64 ones: how much float32 rounding alone moves this model's outputs (deep nets with
    random weights amplify it)."""
    import torch
    from nnx_export.verify import compare
    with torch.no_grad():
        out = model.double()(*[x.double() for x in inputs])
    model.float()
    outs = [o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]
    return (compare([r.double().numpy() for r in references], outs),
            compare([g.astype("float64") for g in got], outs))


def layout_difference(model, inputs, references):
    """PyTorch against itself: the same float32 model run channels-last (other summation
    orders) against the contiguous run that is the reference."""
    import torch
    from nnx_export.verify import compare
    with torch.no_grad():
        model = model.to(memory_format=torch.channels_last)
        out = model(*[x.to(memory_format=torch.channels_last) for x in inputs])
    model.to(memory_format=torch.contiguous_format)
    outs = out if isinstance(out, (tuple, list)) else [out]
    return compare([o.contiguous().numpy() for o in outs], [r.numpy() for r in references])


def run_one(name, max_params):
    """Exports one model in this process; returns the result row as a dict."""
    import torch
    import torchvision.models as models
    import nnx_export
    torch.manual_seed(0)
    row = {"model": name}
    start = time.time()
    model = getattr(models, name)().eval()
    row["params"] = sum(p.numel() for p in model.parameters())
    if row["params"] > max_params:
        row.update(status="skipped", notes=f"over {max_params / 1e6:.0f}M parameters: too "
                   f"large for the sweep's budget (2 cores, ~20 GB)")
        return row
    calibrate_batchnorm(model)
    from nnx_export.verify import VerifyError, compare, find_nnx, run_nnx
    with tempfile.TemporaryDirectory(prefix="nnx-sweep-") as tmp:
        try:
            # Written unverified, then run here: a difference above the tolerance is
            # recorded (with PyTorch's own float32-vs-float64 difference) instead of refused.
            result = nnx_export.export(model, [SHAPE], os.path.join(tmp, name), verify=False)
        except nnx_export.ExportError as e:
            row.update(status="unsupported", notes=stopping_calls(e.faults))
            row["seconds"] = time.time() - start
            return row
        row.update(tracing=result.tracing, layers=result.num_layers)
        nnx = find_nnx()
        if nnx is None:
            row.update(status="exported")
        else:
            try:
                got = run_nnx(nnx, result.json_path, result.pth_path,
                              [x.numpy() for x in result.inputs])
                row["max_error"] = compare(got, [r.numpy() for r in result.references])
                row["status"] = "exported" if row["max_error"] <= nnx_export.TOLERANCE \
                    else "above 1e-4"
            except VerifyError as e:
                row.update(status="failed", notes=str(e)[:300])
        row["seconds"] = time.time() - start        # the export, not the checks below
        if row["status"] == "above 1e-4":
            row["oracle_error"] = oracle_difference(result)
            row["layout_error"] = layout_difference(model, result.inputs, result.references)
            row["fp64_error"], row["nnx_fp64_error"] = float64_difference(
                model, result.inputs, result.references, got)
    return row


def run_isolated(name, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--one", name,
           "--max-params", str(args.max_params)]
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "skipped", "seconds": time.time() - start,
                "notes": f"over the {args.timeout} s budget"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": name, "status": "failed", "seconds": time.time() - start,
                "notes": tail[:300]}
    return json.loads(lines[-1])


def table(rows):
    out = ["| model | parameters | result | largest difference | time (s) | calls that stopped "
           "it / notes |", "|---|---:|---|---:|---:|---|"]
    for r in rows:
        params = f"{r['params'] / 1e6:.1f}M" if "params" in r else ""
        err = f"{r['max_error']:.2g}" if r.get("max_error") is not None else ""
        secs = f"{r['seconds']:.1f}" if "seconds" in r else ""
        notes = r.get("notes", "")
        if r["status"] in ("exported", "above 1e-4"):
            notes = f"{r['layers']} layers, {r['tracing']} tracing"
            if r.get("max_error") is None:
                notes += ", not verified (no nnx)"
            if r.get("fp64_error") is not None:
                notes += (f"; the description run by PyTorch (nnx_ref) differs by "
                          f"{r['oracle_error']:.2g}; PyTorch's own float32 outputs are "
                          f"{r['fp64_error']:.2g} from float64 ones")
            if r.get("nnx_fp64_error") is not None:
                notes += (f", nnx's {r['nnx_fp64_error']:.2g}; PyTorch run channels-last "
                          f"differs from PyTorch by {r['layout_error']:.2g}")
        out.append(f"| {r['model']} | {params} | {r['status']} | {err} | {secs} | "
                   f"{notes.replace('|', '/')} |")
    return "\n".join(out)


def previous_rows(path):
    """The rows a previous run left in its table (see write_table)."""
    if not os.path.exists(path):
        return []
    m = re.search(r"<!-- rows: (.*) -->", open(path).read())
    return json.loads(m.group(1)) if m else []


def write_table(path, rows, total, nnx, torch_version, torchvision_version):
    unique = {}
    for r in rows:                       # one row per model, the latest
        unique[r["model"]] = r
    rows = list(unique.values())
    seconds = sum(r.get("seconds", 0) for r in rows)
    exported = sum(r["status"] == "exported" for r in rows)
    above = sum(r["status"] == "above 1e-4" for r in rows)
    done = "" if len(rows) == total else f" (interrupted: {len(rows)} of {total} models run)"
    header = [
        "# nnx-export over torchvision's classification models",
        "",
        f"Generated by `python/export_sweep.py` (torch {torch_version}, torchvision "
        f"{torchvision_version}, runtime {'`nnx`' if nnx else 'not found'}; input "
        f"{'x'.join(map(str, SHAPE))}, random weights, BatchNorm statistics calibrated on a random batch; {seconds:.0f} s of "
        f"exports){done}: "
        f"{exported} of {len(rows)} exported and within 1e-4 of PyTorch; {above} more "
        f"exported, but with the runtime's outputs more than 1e-4 from PyTorch's (nnx-export "
        f"itself refuses those unless --no-verify; their notes give the description's "
        f"difference when PyTorch runs it, how far PyTorch's own float32 outputs and nnx's are "
        f"from float64 ones, and how far PyTorch's channels-last run is from its contiguous "
        f"one: float32 rounding alone, amplified by these deep random-weight networks).",
        "Time is the whole export of one model: loading, tracing, mapping, writing and the "
        "`nnx run` verification, on 2 cores shared with other work.",
        "",
    ]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(header) + "\n" + table(rows) + "\n")
        # The rows as data, for --update.
        f.write(f"\n<!-- rows: {json.dumps(rows)} -->\n")
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "export_sweep.md"))
    p.add_argument("--max-params", type=float, default=150e6)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--update", action="store_true",
                   help="rerun only the MODELs given, keeping the table's other rows")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.max_params)))
        return 0
    import torch
    import torchvision
    from nnx_export.verify import find_nnx
    names = args.models or ([] if args.update else sweep_order(classification_models()))
    rows, total = [], len(names)
    if args.update:             # rerun the models named, keep the other rows of the table
        rows = previous_rows(args.out)
        total = len(rows) + len([n for n in names if n not in {r["model"] for r in rows}])
        if not names:           # nothing to rerun: rewrite the table from its rows
            write_table(args.out, rows, total, find_nnx(), torch.__version__,
                        torchvision.__version__)
    for name in names:
        row = run_isolated(name, args)
        rows = [r for r in rows if r["model"] != name]
        rows.append(row)
        print(f"{name}: {row['status']} {row.get('max_error', '')} {row.get('notes', '')}",
              file=sys.stderr, flush=True)
        # Rewritten after every model: an interrupted sweep still leaves its table.
        if args.update:
            order = sweep_order(classification_models())
            rows.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else 0)
        write_table(args.out, rows, total, find_nnx(),
                    torch.__version__, torchvision.__version__)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
