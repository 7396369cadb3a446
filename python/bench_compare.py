#!/usr/bin/env python3
"""nnx against PyTorch and ONNX Runtime on the same files, measured in alternation in one run.

usage: /usr/bin/python3 python/bench_compare.py [--models seed,resnet18,mobilenet_v2,resnet50]
           [--device cpu|cuda] [--batch N] [--threads 2] [--iters 20] [--warmup 3] [--rounds 3]
           [--nnx PATH] [--nnx-export PATH] [--work DIR] [--json] [--plot FILE.png]
           [--markdown FILE.md]

For each model the script prepares one set of files and one input, and every runtime reads
those:
- the description + weights: the seed network from examples/seed/seed.json with weights that
  PyTorch's default initialisation makes (seeded) and saves; torchvision models as `nnx-export`
  writes them (random seeded weights; nothing is downloaded);
- PyTorch: the reference module of python/nnx_ref built from those files (eval, no_grad, 2
  threads, at its best: glibc keeps freed memory (mallopt) so large activations are not
  page-faulted anew on every run; OpenBLAS, which tools/setup.sh installs: the BLAS PyTorch
  called is reported, with a warning where it is not OpenBLAS);
- ONNX Runtime: that module exported with torch.onnx.export (opset 13), timed by
  ../shared/anchors/ort-bench.sh;
- nnx: `nnx bench --json` and `nnx run` on the files.

Each runtime runs in its own process (so peak RSS is its own: ru_maxrss from wait4), in
rounds: PyTorch, ONNX Runtime, nnx, PyTorch, ... Each process loads, runs once (the cold
start: load_ms + first_run_ms), warms up, and times --iters runs; the figure per runtime is the
median over rounds of each process's median. Outputs are compared on the same input with the
project's measure max|got - ref| / max(1, max|ref|), PyTorch as the reference.

The table goes to stdout (or one JSON object with --json); --markdown writes it with the
machine (processor model), date and command; --plot writes a bar chart (needs matplotlib).

--device cuda compares on the GPU instead: PyTorch eager and, where this PyTorch has it,
torch.compile(mode="reduce-overhead"), both fp32 with TF32 off, against `nnx bench --device
cuda` (inputs on the device, every run synchronised); ONNX Runtime (a CPU build) is left out,
and peak device memory is reported instead of RSS. --batch N replaces the batch of every model's
shape (the input file is made per batch). --precision tf32 (CUDA only) lets both use TF32 tensor
cores in convolutions and matrix products (PyTorch's allow_tf32 flags, nnx's --precision tf32);
fp16 and bf16 run PyTorch under torch.autocast and nnx with --precision fp16/bf16 (its
convolutions in that format, everything else fp32). --compile off leaves torch.compile out.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
sys.path.insert(0, HERE)
import torch_blas  # noqa: E402  (no torch import: which BLAS a PyTorch process called)

YOLO_SPEC = "own_module.YOLO=" + os.path.join(ROOT, "examples", "seed", "yolo.py") + ":YOLO"

# name -> (input shape, how the files are made)
MODELS = {
    "seed": ((1, 3, 480, 640), "seed"),
    "resnet18": ((1, 3, 224, 224), "torchvision.models:resnet18"),
    "mobilenet_v2": ((1, 3, 224, 224), "torchvision.models:mobilenet_v2"),
    "resnet50": ((1, 3, 224, 224), "torchvision.models:resnet50"),
    "mobilenet_v3_small": ((1, 3, 224, 224), "torchvision.models:mobilenet_v3_small"),
    "squeezenet1_1": ((1, 3, 224, 224), "torchvision.models:squeezenet1_1"),
    "vgg11": ((1, 3, 224, 224), "torchvision.models:vgg11"),
    "efficientnet_b0": ((1, 3, 224, 224), "torchvision.models:efficientnet_b0"),  # SiLU, SE
}


def log(*args):
    print("bench_compare:", *args, file=sys.stderr, flush=True)


# ---- the PyTorch worker (a subprocess of this script) -----------------------------------------

def torch_worker(args):
    """Loads the files into the reference module and times it; prints one JSON object."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, 0)          # M_MMAP_MAX: large blocks from the heap, not fresh mmaps
    libc.mallopt(-1, 2 ** 30)    # M_TRIM_THRESHOLD: keep freed memory instead of unmapping it
    t0 = time.perf_counter()
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    sys.path.insert(0, HERE)
    import nnx_ref
    from nnx_ref.cli import load_user_op
    import_ms = (time.perf_counter() - t0) * 1e3
    user_ops = dict(load_user_op(s) for s in args.user_op)
    cuda = args.device == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            print("bench_compare: PyTorch sees no CUDA device", file=sys.stderr)
            return 3
        # The precision nnx computes in on CUDA: fp32 without TF32 in convolutions and matrix
        # products, or with it (--precision tf32).
        tf32 = args.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    # fp16/bf16: PyTorch under autocast (convolutions and matrix products in that format with
    # fp32 accumulation), as nnx's --precision fp16/bf16 computes its convolutions.
    import contextlib
    autocast = (torch.autocast("cuda", dtype=torch.float16 if args.precision == "fp16" else
                               torch.bfloat16)
                if cuda and args.precision in ("fp16", "bf16") else contextlib.nullcontext())
    if args.compile == "worker" and not hasattr(torch, "compile"):
        print(json.dumps({"unavailable": f"torch {torch.__version__} has no torch.compile"}))
        return 0
    device = torch.device(args.device)
    x = [torch.from_numpy(np.load(p)).to(device) for p in args.input]
    t0 = time.perf_counter()
    net = nnx_ref.load(args.arch, weights=args.weights, strict=True, user_ops=user_ops)
    net = net.to(device)
    if args.compile == "worker":
        net = torch.compile(net, mode="reduce-overhead")
    load_ms = (time.perf_counter() - t0) * 1e3

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times = []
    with torch.no_grad(), autocast:
        t0 = time.perf_counter()
        outs = net(*x)
        sync()
        first_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(args.warmup):
            net(*x)
        sync()
        for _ in range(args.iters):
            t0 = time.perf_counter()
            net(*x)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for k, o in enumerate(outs):
            np.save(os.path.join(args.out, f"out{k}.npy"), o.float().cpu().numpy())
    times.sort()
    print(json.dumps({"median_ms": statistics.median(times), "p10_ms": _pct(times, 10),
                      "p90_ms": _pct(times, 90), "load_ms": load_ms, "first_run_ms": first_ms,
                      "import_ms": import_ms, "version": torch.__version__,
                      "peak_device_mb": torch.cuda.max_memory_allocated() / 2 ** 20
                      if cuda else None,
                      "device": torch.cuda.get_device_name() if cuda else "cpu",
                      "blas": torch_blas.blas_in_use()}))


def _pct(sorted_times, p):
    i = min(len(sorted_times) - 1, max(0, round(p / 100 * (len(sorted_times) - 1))))
    return sorted_times[i]


# ---- running a process and reading its peak RSS -----------------------------------------------

def _run_here(cmd):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        return (os.waitstatus_to_exitcode(status), out.read().decode(errors="replace"),
                err.read().decode(errors="replace"), usage.ru_maxrss / 1024.0)


# Linux keeps a process's peak RSS (ru_maxrss) across fork and exec: a child of this script,
# once it has imported torch, would start at this script's few hundred MB. Commands therefore
# run from a launcher started before torch is imported (a plain Python of ~10 MB).
_launcher = None


def start_launcher():
    global _launcher
    _launcher = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                  "launcher"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)


def launcher_worker():
    for line in sys.stdin:
        rc, out, err, rss = _run_here(json.loads(line))
        print(json.dumps([rc, out, err, rss]), flush=True)


def run_measured(cmd, env=None):
    """Runs cmd; returns (exit status, stdout text, stderr text, peak RSS in MiB)."""
    if _launcher is None:
        return _run_here(cmd)
    _launcher.stdin.write(json.dumps(cmd) + "\n")
    _launcher.stdin.flush()
    return tuple(json.loads(_launcher.stdout.readline()))


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON object in the output:\n" + text[-2000:])


# ---- preparing the files ----------------------------------------------------------------------

def prepare(name, work, args):
    """Makes NAME.json + NAME.pth, the input, PyTorch's outputs and the .onnx; returns a dict."""
    import numpy as np
    import torch
    sys.path.insert(0, HERE)
    import nnx_ref
    from nnx_ref.cli import load_user_op

    shape, source = MODELS[name]
    if args.batch:
        shape = (args.batch,) + tuple(shape[1:])
    folder = os.path.join(work, name)
    os.makedirs(folder, exist_ok=True)
    arch = os.path.join(folder, name + ".json")
    weights = os.path.join(folder, name + ".pth")
    user_ops, user_op_specs = {}, []
    # The seed network's description, or the one nnx-export wrote of a torchvision model where
    # bench/models has it (then neither torchvision nor a tracer that knows this torch is needed).
    committed = os.path.join(ROOT, "examples", "seed", "seed.json") if source == "seed" else \
        os.path.join(ROOT, "bench", "models", name + ".json")
    if source == "seed":
        user_op_specs = [YOLO_SPEC]
        user_ops = dict(load_user_op(s) for s in user_op_specs)
    if os.path.exists(committed):
        if not os.path.exists(weights):
            shutil.copyfile(committed, arch)
            net = nnx_ref.load(arch, weights=None, user_ops=user_ops, seed=0)
            torch.save(net.state_dict(), weights)   # the flat-key form nnx reads
    elif not os.path.exists(weights):
        cmd = [args.nnx_export, source, "--shape", ",".join(map(str, shape)),
               "--out", os.path.join(folder, name), "--no-verify"]
        log("exporting", name, ":", " ".join(cmd))
        rc, out, err, _ = run_measured(cmd)
        if rc != 0:
            raise RuntimeError(f"nnx-export {source} failed ({rc}):\n{err}")
    x = os.path.join(folder, "input.npy" if shape[0] == 1 else f"input_b{shape[0]}.npy")
    if not os.path.exists(x):
        g = torch.Generator().manual_seed(1234)
        np.save(x, torch.randn(*shape, generator=g).numpy())
    onnx = os.path.join(folder, name + (".onnx" if shape[0] == 1 else f"_b{shape[0]}.onnx"))
    if not os.path.exists(onnx) and args.device == "cpu":
        net = nnx_ref.load(arch, weights=weights, user_ops=user_ops).eval()
        example = torch.from_numpy(np.load(x))
        with torch.no_grad():
            torch.onnx.export(net, (example,), onnx, opset_version=13)
    return {"name": name, "folder": folder, "arch": arch, "weights": weights, "input": x,
            "onnx": onnx, "shape": shape, "user_ops": user_op_specs}


# ---- one measurement per runtime --------------------------------------------------------------

def measure_torch(m, args, out_dir=None, compile=False):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "torch", "--arch", m["arch"],
           "--weights", m["weights"], "--input", m["input"], "--threads", str(args.threads),
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--device", args.device,
           "--precision", args.precision]
    if compile:
        cmd += ["--compile", "worker"]
    for spec in m["user_ops"]:
        cmd += ["--user-op", spec]
    if out_dir:
        cmd += ["--out", out_dir]
    rc, out, err, rss = run_measured(cmd)
    if rc != 0:
        raise RuntimeError(f"PyTorch worker failed on {m['name']}:\n{err}")
    r = last_json_line(out)
    r["peak_rss_mb"] = rss
    return r


def measure_ort(m, args, out_dir=None):
    cmd = [os.path.join(SHARED, "anchors", "ort-bench.sh"), m["onnx"], "--input", m["input"],
           "--threads", str(args.threads), "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--json"]
    if out_dir:
        cmd += ["--out", out_dir]
    rc, out, err, rss = run_measured(cmd)
    if rc != 0:
        raise RuntimeError(f"ONNX Runtime failed on {m['name']}:\n{err}")
    r = last_json_line(out)
    r["peak_rss_mb"] = rss
    return r


def nnx_model_args(m):
    """The seed's YOLO head reaches the nnx command as a plugin (examples/embed/yolo_plugin.cpp)."""
    return ["--plugin", args_global.nnx_plugin] if m["user_ops"] else []


def measure_nnx(m, args):
    shape = ",".join(map(str, m["shape"]))
    cmd = [args.nnx, "bench", m["arch"], "--weights", m["weights"], "--shape", shape,
           "--threads", str(args.threads), "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--device", args.device, "--precision", args.precision,
           "--json"] + nnx_model_args(m)
    rc, out, err, rss = run_measured(cmd)
    if rc != 0:
        raise RuntimeError(f"nnx bench failed on {m['name']}:\n{err}")
    r = last_json_line(out)
    r["peak_rss_mb_wait4"] = rss
    return r


def nnx_outputs(m, args, out_dir):
    cmd = [args.nnx, "run", m["arch"], "--weights", m["weights"], "--input", m["input"],
           "--threads", str(args.threads), "--device", args.device, "--precision", args.precision,
           "--out", out_dir] + nnx_model_args(m)
    rc, out, err, _ = run_measured(cmd)
    if rc != 0:
        raise RuntimeError(f"nnx run failed on {m['name']}:\n{err}")


def max_difference(dir_a, dir_ref):
    import numpy as np
    worst, k = 0.0, 0
    while os.path.exists(os.path.join(dir_ref, f"out{k}.npy")):
        ref = np.load(os.path.join(dir_ref, f"out{k}.npy")).astype(np.float64)
        path = os.path.join(dir_a, f"out{k}.npy")
        if not os.path.exists(path):
            return float("inf")
        got = np.load(path).astype(np.float64)
        if got.shape != ref.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - ref).max() / max(1.0, np.abs(ref).max())))
        k += 1
    return worst


# ---- the run ----------------------------------------------------------------------------------

def processor_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


TIMES = ("median_ms", "p10_ms", "p90_ms", "load_ms", "first_run_ms")


def summarise(runs, keys):
    """The median over the rounds' runs of each key (None where no run has it), as
    {name: median of run[source]} for keys {name: source}, and the rounds' medians."""
    def med(key):
        vals = [x[key] for x in runs if x.get(key) is not None]
        return statistics.median(vals) if vals else None
    out = {name: med(source) for name, source in keys.items()}
    out["round_medians_ms"] = [x["median_ms"] for x in runs]
    return out


def compare_cuda(args):
    """PyTorch eager, torch.compile (where present) and nnx on the GPU, in alternation."""
    results = []
    for name in args.models:
        m = prepare(name, args.work, args)
        log(f"{name}: outputs on the same input (cuda)")
        dirs = {k: os.path.join(m["folder"], f"out_{k}_cuda") for k in ("torch", "nnx")}
        once = argparse.Namespace(**{**vars(args), "iters": 1, "warmup": 0})
        measure_torch(dict(m), once, dirs["torch"])
        nnx_outputs(m, args, dirs["nnx"])
        diff_nnx = max_difference(dirs["nnx"], dirs["torch"])
        rounds = {"torch": [], "torch_compile": [], "nnx": []}
        for r in range(args.rounds):
            log(f"{name}: round {r + 1}/{args.rounds}")
            rounds["torch"].append(measure_torch(m, args))
            if args.compile == "off":
                compiled = {"unavailable": "--compile off"}
            else:
                compiled = measure_torch(m, args, compile=True)
            if "unavailable" not in compiled:
                rounds["torch_compile"].append(compiled)
            elif r == 0:
                log(f"{name}: torch.compile left out: {compiled['unavailable']}")
            rounds["nnx"].append(measure_nnx(m, args))

        row = {"model": name, "shape": list(m["shape"]), "max_diff_nnx": diff_nnx,
               "device": rounds["torch"][0].get("device")}
        for rt in rounds:
            row[rt] = summarise(rounds[rt], {k: k for k in TIMES + ("peak_device_mb",)})
        row["nnx_over_torch"] = row["nnx"]["median_ms"] / row["torch"]["median_ms"]
        c = row["torch_compile"]["median_ms"]
        row["nnx_over_torch_compile"] = row["nnx"]["median_ms"] / c if c else None
        results.append(row)
        log(f"{name}: nnx {row['nnx']['median_ms']:.2f} ms, PyTorch eager "
            f"{row['torch']['median_ms']:.2f} ms")
    return results


def table_cuda(results):
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)
    lines = ["| model | nnx ms | PyTorch eager ms | torch.compile ms | nnx/eager | nnx/compile | "
             "peak device MB nnx / eager | max diff nnx |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['model']} {'x'.join(map(str, r['shape']))} | {num(r['nnx']['median_ms'], '.3f')}"
            f" | {num(r['torch']['median_ms'], '.3f')} | "
            f"{num(r['torch_compile']['median_ms'], '.3f')} | {num(r['nnx_over_torch'], '.2f')} | "
            f"{num(r['nnx_over_torch_compile'], '.2f')} | "
            f"{num(r['nnx']['peak_device_mb'], '.0f')} / {num(r['torch']['peak_device_mb'], '.0f')}"
            f" | {num(r['max_diff_nnx'], '.1e')} |")
    return "\n".join(lines)


def compare(args):
    results = []
    for name in args.models:
        m = prepare(name, args.work, args)
        log(f"{name}: outputs on the same input")
        dirs = {k: os.path.join(m["folder"], "out_" + k) for k in ("torch", "ort", "nnx")}
        measure_torch(dict(m), argparse.Namespace(**{**vars(args), "iters": 1, "warmup": 0}),
                      dirs["torch"])
        measure_ort(m, argparse.Namespace(**{**vars(args), "iters": 1, "warmup": 0}), dirs["ort"])
        nnx_outputs(m, args, dirs["nnx"])
        diff_nnx = max_difference(dirs["nnx"], dirs["torch"])
        diff_ort = max_difference(dirs["ort"], dirs["torch"])
        rounds = {"torch": [], "ort": [], "nnx": []}
        for r in range(args.rounds):
            log(f"{name}: round {r + 1}/{args.rounds}")
            rounds["torch"].append(measure_torch(m, args))
            rounds["ort"].append(measure_ort(m, args))
            rounds["nnx"].append(measure_nnx(m, args))

        row = {"model": name, "shape": list(m["shape"]), "max_diff_nnx": diff_nnx,
               "max_diff_ort": diff_ort}
        for rt in rounds:
            # nnx's peak RSS as wait4 measures it, like the others' (not its own report).
            rss = "peak_rss_mb_wait4" if rt == "nnx" else "peak_rss_mb"
            row[rt] = summarise(rounds[rt], {**{k: k for k in TIMES}, "peak_rss_mb": rss})
        row["torch"]["blas"] = rounds["torch"][0].get("blas")
        row["nnx_over_torch"] = row["nnx"]["median_ms"] / row["torch"]["median_ms"]
        row["nnx_over_ort"] = row["nnx"]["median_ms"] / row["ort"]["median_ms"]
        results.append(row)
        log(f"{name}: nnx {row['nnx']['median_ms']:.1f} ms, PyTorch "
            f"{row['torch']['median_ms']:.1f} ms, ORT {row['ort']['median_ms']:.1f} ms")
    return results


def table(results):
    lines = ["| model | nnx ms | PyTorch ms | ORT ms | nnx/PyTorch | nnx/ORT | "
             "peak RSS MB nnx / PyTorch / ORT | cold start ms (load + first run) nnx / PyTorch "
             "/ ORT | max diff nnx / ORT |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def cold(rt):
            return f"{r[rt]['load_ms']:.0f} + {r[rt]['first_run_ms']:.0f}"
        lines.append(
            f"| {r['model']} {'x'.join(map(str, r['shape']))} | {r['nnx']['median_ms']:.2f} | "
            f"{r['torch']['median_ms']:.2f} | {r['ort']['median_ms']:.2f} | "
            f"{r['nnx_over_torch']:.2f} | {r['nnx_over_ort']:.2f} | "
            f"{r['nnx']['peak_rss_mb']:.0f} / {r['torch']['peak_rss_mb']:.0f} / "
            f"{r['ort']['peak_rss_mb']:.0f} | {cold('nnx')} / {cold('torch')} / {cold('ort')} | "
            f"{r['max_diff_nnx']:.1e} / {r['max_diff_ort']:.1e} |")
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("warning: --plot needs matplotlib (Debian: python3-matplotlib); no plot written")
        return
    names = [r["model"] for r in results]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(names), 4))
    width = 0.27
    for i, (rt, label) in enumerate((("nnx", "nnx"), ("torch", "PyTorch"), ("ort", "ONNX Runtime"))):
        vals = [r[rt]["median_ms"] for r in results]
        ax.bar([j + (i - 1) * width for j in range(len(names))], vals, width, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("median latency, ms (lower is better)")
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


args_global = None


def main(argv=None):
    global args_global
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=["torch", "launcher"], help=argparse.SUPPRESS)
    p.add_argument("--arch", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--input", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--user-op", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--compile", nargs="?", const="worker", default="on",
                   choices=["on", "off", "worker"],
                   help="--device cuda: also time torch.compile(mode='reduce-overhead') (on), or "
                        "not (off: each compile takes tens of seconds)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "tf32", "fp16", "bf16"], default="fp32")
    p.add_argument("--batch", type=int, default=0, help="replaces every model's batch")
    p.add_argument("--models", default="seed,resnet18,mobilenet_v2,resnet50")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nnx", default=os.path.join(ROOT, "build", "release", "nnx"))
    p.add_argument("--nnx-export", default=None)
    p.add_argument("--nnx-plugin", default=None,
                   help="shared library registering the seed's YOLO op for the nnx CLI")
    p.add_argument("--work", default=os.path.join(ROOT, "build", "bench-compare"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot")
    p.add_argument("--markdown")
    args = p.parse_args(argv)
    args_global = args
    if args.worker == "torch":
        return torch_worker(args)
    if args.worker == "launcher":
        return launcher_worker()
    if args.precision != "fp32" and args.device != "cuda":
        p.error(f"--precision {args.precision} is for --device cuda (the CPU runs fp32)")
    start_launcher()
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if args.nnx_export is None:
        args.nnx_export = os.path.join(os.path.dirname(args.nnx), "nnx-export")
    if args.nnx_plugin is None:
        args.nnx_plugin = os.path.join(os.path.dirname(args.nnx), "examples", "embed",
                                       "nnx_yolo.so")
    os.makedirs(args.work, exist_ok=True)
    started = time.time()
    cuda = args.device == "cuda"
    try:
        results = compare_cuda(args) if cuda else compare(args)
    except RuntimeError as e:  # a runtime that failed: its message, no traceback
        log(f"error: {e}")
        return 3
    blas = next((r["torch"].get("blas") for r in results if r.get("torch", {}).get("blas")),
                "unknown")
    if not cuda and not torch_blas.at_its_best(blas):
        log(torch_blas.warning(blas))
    machine = {"processor": processor_model(), "cores": os.cpu_count(), "device": args.device,
               "precision": args.precision, "pytorch_blas": blas,
               "gpu": results[0].get("device") if cuda and results else None,
               "date": datetime.date.today().isoformat(), "threads": args.threads,
               "iters": args.iters, "warmup": args.warmup, "rounds": args.rounds,
               "command": " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
               "seconds": round(time.time() - started)}
    report = {"machine": machine, "results": results}
    text = table_cuda(results) if cuda else table(results)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(text)
    if args.markdown:
        with open(args.markdown + ".tmp", "w") as f:
            what = ("PyTorch on CUDA" if cuda else "PyTorch and ONNX Runtime")
            where = (f"GPU {machine['gpu']}, host {machine['processor']}" if cuda else
                     f"{machine['processor']}, {machine['cores']} cores; {args.threads} threads "
                     f"each; PyTorch's BLAS {blas}"
                     + ("" if torch_blas.at_its_best(blas) else " (NOT at its best)"))
            f.write(f"# nnx against {what} ({machine['date']})\n\n"
                    f"Machine: {where}, batch {args.batch or 1}, {machine['precision']}; {args.rounds} rounds of "
                    f"{args.iters} timed runs after {args.warmup} warm-up runs, in alternation."
                    f"\n\nCommand: `/usr/bin/python3 {machine['command']}`\n\n{text}\n\n"
                    "```json\n" + json.dumps(report, indent=2) + "\n```\n")
        os.replace(args.markdown + ".tmp", args.markdown)
    if args.plot and not cuda:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
