#!/usr/bin/env python3
"""Training step time, nnx against PyTorch, measured in alternation in one run.

usage: /usr/bin/python3 python/bench_train_compare.py [--models seed,resnet18] [--threads 2]
           [--iters 10] [--warmup 2] [--rounds 3] [--bench PATH] [--work DIR] [--json]
           [--markdown FILE.md] [--device cpu|cuda]

A step is forward + backward + SGD update (momentum 0.9, lr 0.01) on a fixed random batch, the
loss the sum over outputs of MSE against fixed random targets (train mode: BatchNorm uses batch
statistics and updates its running ones). The goal figures of the training issue:
- seed: the corrected seed network (examples/seed/seed.json, PyTorch's default
  initialisation), batch 16 x 3x128x160;
- resnet18: torchvision's ResNet-18 as nnx-export writes it, batch 32 x 3x64x64.
PyTorch runs the reference module of python/nnx_ref built from the same files, at its best
(2 threads, glibc keeps freed memory: mallopt as ../shared/anchors/README.md says; OpenBLAS,
which tools/setup.sh installs: the BLAS PyTorch called is reported, with a warning where it is
not OpenBLAS); nnx runs
bench/train_bench.cpp (`nnx_train_bench`). Each runs in its own process (peak RSS is its own),
rounds alternate PyTorch, nnx, PyTorch, ...; the figure is the median over rounds of each
process's median step.

--device cuda trains both on the GPU at equal precision (fp32, TF32 off in PyTorch as nnx's
cuDNN calls use no tensor cores), each step ending with a device synchronize; the table adds
each side's peak device memory (PyTorch's max_memory_allocated, nnx's caching allocator peak).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = {"seed": (16, 3, 128, 160), "resnet18": (32, 3, 64, 64)}
sys.path.insert(0, HERE)
import torch_blas  # noqa: E402  (no torch import: which BLAS a PyTorch process called)


def prepare(name, work):
    """Writes NAME.json + NAME.pth into work; returns the description's path."""
    sys.path.insert(0, HERE)
    import torch
    arch_path = os.path.join(work, f"{name}.json")
    # The seed network's description, or the one nnx-export wrote of the torchvision model
    # (bench/models; needs neither torchvision nor a tracer that knows this torch).
    committed = os.path.join(ROOT, "examples", "seed", "seed.json") if name == "seed" else \
        os.path.join(ROOT, "bench", "models", f"{name}.json")
    if os.path.exists(committed):
        import shutil
        import fixture_models as fm
        import nnx_ref
        shutil.copyfile(committed, arch_path)
        ex = fm.build(nnx_ref.jsonc.load(arch_path), seed=0, user_ops=fm.user_op_classes())
        fm.save_list(ex, os.path.join(work, f"{name}.pth"))
    else:
        import torchvision.models as models
        import nnx_export
        torch.manual_seed(0)
        model = getattr(models, name)().eval()
        nnx_export.export(model, [(1,) + MODELS[name][1:]], os.path.join(work, name),
                          verify=False)
    return arch_path


def torch_worker(arch, shape, threads, iters, warmup, device="cpu"):
    """One PyTorch process: prints a JSON line with its median step and peak RSS."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, 0)          # M_MMAP_MAX
    libc.mallopt(-1, 2 ** 30)    # M_TRIM_THRESHOLD
    import resource
    import time
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    import fixture_models as fm
    import nnx_ref
    torch.set_num_threads(threads)
    net = nnx_ref.load(arch, arch[:-5] + ".pth", user_ops=fm.user_op_classes())
    cuda = device == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    net = net.to(device)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device)
    targets = None
    times = []
    for it in range(warmup + iters):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        outs = net(x)
        if targets is None:
            targets = [(torch.randn(o.shape, generator=gen) * 0.1).to(device) for o in outs]
        loss = sum(F.mse_loss(o, t) for o, t in zip(outs, targets))
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if it >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    result = {"median_ms": statistics.median(times),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "blas": torch_blas.blas_in_use()}
    if cuda:
        result["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        result["device"] = torch.cuda.get_device_name(0)
    print(json.dumps(result))


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="seed,resnet18")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "nnx_train_bench"))
    p.add_argument("--work")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--torch-worker", nargs=2, metavar=("ARCH", "SHAPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_worker:
        shape = tuple(int(v) for v in args.torch_worker[1].split(","))
        return torch_worker(args.torch_worker[0], shape, args.threads, args.iters, args.warmup,
                            args.device)
    work = args.work or tempfile.mkdtemp(prefix="nnx-train-bench-")
    os.makedirs(work, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        shape = MODELS[name]
        arch = prepare(name, work)
        shape_text = ",".join(map(str, shape))
        torch_runs, nnx_runs = [], []
        for _ in range(args.rounds):
            torch_runs.append(run_json([sys.executable, os.path.abspath(__file__),
                                        "--torch-worker", arch, shape_text,
                                        "--threads", str(args.threads), "--iters",
                                        str(args.iters), "--warmup", str(args.warmup),
                                        "--device", args.device]))
            nnx_runs.append(run_json([args.bench, arch, "--weights", arch[:-5] + ".pth",
                                      "--shape", shape_text, "--threads", str(args.threads),
                                      "--iters", str(args.iters), "--warmup",
                                      str(args.warmup), "--device", args.device]))
        t = statistics.median(r["median_ms"] for r in torch_runs)
        n = statistics.median(r["median_ms"] for r in nnx_runs)
        rows.append({"model": name, "batch": shape_text, "pytorch_ms": t, "nnx_ms": n,
                     "ratio": n / t,
                     "pytorch_peak_rss_mb": max(r["peak_rss_mb"] for r in torch_runs),
                     "nnx_peak_rss_mb": max(r["peak_rss_mb"] for r in nnx_runs),
                     "nnx_peak_activation_mb": nnx_runs[-1]["peak_activation_mb"],
                     "pytorch_blas": torch_runs[0].get("blas", "unknown")})
        if args.device == "cuda":
            rows[-1]["pytorch_device_peak_mb"] = max(r["device_peak_mb"] for r in torch_runs)
            rows[-1]["nnx_device_peak_mb"] = max(r["device_peak_mb"] for r in nnx_runs)
            rows[-1]["gpu"] = nnx_runs[-1].get("device", "")
            rows[-1]["nnx_cuda_graph"] = nnx_runs[-1].get("cuda_graph", "")
    blas = rows[0]["pytorch_blas"] if rows else "unknown"
    if args.device == "cpu" and not torch_blas.at_its_best(blas):
        print(torch_blas.warning(blas), file=sys.stderr)
    if args.json:
        print(json.dumps({"threads": args.threads, "pytorch_blas": blas, "rows": rows}))
    table = ["| network | batch | PyTorch ms | nnx ms | nnx / PyTorch | PyTorch peak RSS MB | "
             "nnx peak RSS MB | nnx peak activations MB |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['model']} | {r['batch']} | {r['pytorch_ms']:.1f} | {r['nnx_ms']:.1f} "
                     f"| {r['ratio']:.2f} | {r['pytorch_peak_rss_mb']:.0f} | "
                     f"{r['nnx_peak_rss_mb']:.0f} | {r['nnx_peak_activation_mb']:.0f} |")
    if args.device == "cuda":
        table += ["", "| network | GPU | PyTorch peak device MB | nnx peak device MB | "
                  "nnx CUDA graph |", "|---|---|---:|---:|---|"]
        for r in rows:
            table.append(f"| {r['model']} | {r['gpu']} | {r['pytorch_device_peak_mb']:.0f} | "
                         f"{r['nnx_device_peak_mb']:.0f} | {r['nnx_cuda_graph']} |")
    if not args.json:
        print("\n".join(table))
    if args.markdown:
        cpu = platform.processor()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        with open(args.markdown, "w") as f:
            f.write(f"# Training step time: nnx against PyTorch\n\n{datetime.date.today()}, {cpu}, "
                    f"{args.threads} threads, device {args.device}, PyTorch's BLAS {blas}"
                    + ("" if torch_blas.at_its_best(blas) else " (NOT at its best)")
                    + f"; `{' '.join(sys.argv)}`\n\n"
                    + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
