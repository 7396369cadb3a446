#!/usr/bin/env python3
"""Generates every PyTorch reference fixture the C++ tests compare against.

usage: /usr/bin/python3 python/gen_fixtures.py OUT_DIR

- op cases: each module of python/op_cases/ yields OpCase objects -> OUT_DIR/ops/<module>/<case>/
- every python/fixture_<name>.py module's generate(folder) -> OUT_DIR/<name>/

Regeneration is skipped when OUT_DIR/stamp matches a hash of python/ and the shared fixtures.
The modules run in parallel processes, one per core (NNX_FIXTURE_JOBS=N sets how many).
"""
import glob
import hashlib
import importlib
import os
import pkgutil
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def source_hash():
    h = hashlib.sha256()
    roots = [HERE, os.path.join(HERE, "..", "examples")]
    shared = os.path.join(HERE, "..", "..", "shared", "fixtures")
    files = []
    for root in roots + [shared]:
        for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
            if os.path.isfile(path) and "__pycache__" not in path:
                files.append(path)
    for path in files:
        h.update(os.path.relpath(path, HERE).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def run_task(task):
    """One unit of work, in a worker process: ("ops", module of op_cases/, None) or
    ("fixture", name, part): a fixture module's generate(folder), or generate(folder, part) for
    each part a module lists in PARTS."""
    kind, name, part, out = task
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.time()
    if kind == "ops":
        from op_cases import write_case

        module = importlib.import_module(f"op_cases.{name}")
        count = 0
        for case in module.cases():
            write_case(os.path.join(out, "ops"), name, case)
            count += 1
        return f"op cases: {name} ({count})", time.time() - start
    module = importlib.import_module(f"fixture_{name}")
    if part is None:
        module.generate(os.path.join(out, name))
        return f"fixtures: {name}", time.time() - start
    module.generate(os.path.join(out, name), part)
    return f"fixtures: {name}/{part}", time.time() - start


def main(out):
    digest = source_hash()
    stamp = os.path.join(out, "stamp")
    if os.path.exists(stamp) and open(stamp).read() == digest:
        print(f"fixtures in {out} are up to date")
        return 0
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    start = time.time()
    import op_cases

    tasks = [("ops", info.name, None, out) for info in pkgutil.iter_modules(op_cases.__path__)]
    for path in sorted(glob.glob(os.path.join(HERE, "fixture_*.py"))):
        name = os.path.basename(path)[len("fixture_"):-3]
        parts = getattr(importlib.import_module(f"fixture_{name}"), "PARTS", None)
        tasks += [("fixture", name, part, out) for part in parts or [None]]
    # The long ones first (train_parity's cases take 10-30 s each, export 15 s): one worker
    # then fills in with the short ones while the others run.
    tasks.sort(key=lambda t: t[0] != "fixture" or t[1] not in ("train_parity", "export"))
    # Each task seeds torch itself and writes its own folder, so they run in any order and in
    # several processes (one thread each; NNX_FIXTURE_JOBS, default: every core).
    jobs = int(os.environ.get("NNX_FIXTURE_JOBS", "0")) or os.cpu_count() or 1
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(max(1, min(jobs, len(tasks)))) as pool:
        for what, seconds in pool.imap_unordered(run_task, tasks):
            print(f"{what} in {seconds:.1f} s", flush=True)
    with open(stamp, "w") as f:
        f.write(digest)
    print(f"fixtures written to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
