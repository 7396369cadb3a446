"""Checking an export by running it through the C++ runtime (`nnx run`)."""
import os
import shutil
import subprocess
import tempfile

import numpy as np


def find_nnx():
    """The `nnx` command: $NNX_CLI (the launcher sets it to the `nnx` beside it), else PATH."""
    path = os.environ.get("NNX_CLI")
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return shutil.which("nnx")


def relative_error(got, ref):
    """The project's agreement measure: max|got - ref| / max(1, max|ref|)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf")
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))


class VerifyError(Exception):
    pass


def run_nnx(nnx, arch, weights, inputs):
    """Outputs of `nnx run` on `inputs` (numpy arrays)."""
    with tempfile.TemporaryDirectory(prefix="nnx-export-") as tmp:
        cmd = [nnx, "run", arch, "--weights", weights, "--out", os.path.join(tmp, "out")]
        for k, x in enumerate(inputs):
            path = os.path.join(tmp, f"in{k}.npy")
            np.save(path, np.ascontiguousarray(x, dtype=np.float32))
            cmd += ["--input", path]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise VerifyError("the runtime refused the export: " + (" | ".join(lines[-5:])
                                                                      or f"exit {proc.returncode}"))
        outputs = []
        k = 0
        while os.path.exists(os.path.join(tmp, "out", f"out{k}.npy")):
            outputs.append(np.load(os.path.join(tmp, "out", f"out{k}.npy")))
            k += 1
        return outputs


def compare(outputs, refs):
    """The largest relative error over all outputs (inf on a count or shape mismatch)."""
    if len(outputs) != len(refs):
        return float("inf")
    return max((relative_error(g, r) for g, r in zip(outputs, refs)), default=0.0)
