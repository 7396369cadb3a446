#!/usr/bin/env python3
"""Generates every PyTorch reference fixture the C++ tests compare against.

usage: /usr/bin/python3 python/gen_fixtures.py OUT_DIR

- op cases: each module of python/op_cases/ yields OpCase objects -> OUT_DIR/ops/<module>/<case>/
- every python/fixture_<name>.py module's generate(folder) -> OUT_DIR/<name>/

Regeneration is skipped when OUT_DIR/stamp matches a hash of python/ and the shared fixtures.
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


def main(out):
    import torch
    from op_cases import write_case

    digest = source_hash()
    stamp = os.path.join(out, "stamp")
    if os.path.exists(stamp) and open(stamp).read() == digest:
        print(f"fixtures in {out} are up to date")
        return 0
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    torch.set_num_threads(1)
    start = time.time()
    import op_cases
    count = 0
    for info in pkgutil.iter_modules(op_cases.__path__):
        module = importlib.import_module(f"op_cases.{info.name}")
        torch.manual_seed(0)
        for case in module.cases():
            write_case(os.path.join(out, "ops"), info.name, case)
            count += 1
    print(f"{count} op cases")
    for path in sorted(glob.glob(os.path.join(HERE, "fixture_*.py"))):
        name = os.path.basename(path)[len("fixture_"):-3]
        module = importlib.import_module(f"fixture_{name}")
        torch.manual_seed(0)
        module.generate(os.path.join(out, name))
        print(f"fixtures: {name}")
    with open(stamp, "w") as f:
        f.write(digest)
    print(f"fixtures written to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
