"""Which BLAS the PyTorch in this process calls, and whether that is PyTorch at its best.

Debian's python3-torch is built against the generic BLAS interface (BLAS_INFO=generic): it calls
whatever libblas.so.3 the alternatives system points at. Without libopenblas0-pthread that is
the reference BLAS, and PyTorch runs its matrix products and the convolutions it lowers to them
several times slower (MobileNetV2 at batch 1, 2 threads: 45-78 ms against 20-26 ms with
OpenBLAS on one machine). A comparison against that PyTorch is not a comparison against PyTorch
at its best (../shared/anchors/README.md), so the benchmark scripts report the library and warn.
"""
import os


def blas_in_use():
    """The path of the BLAS library mapped into this process (call after importing torch)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        paths = set()
    found = sorted(p for p in paths if "blas" in os.path.basename(p))
    # libopenblas.so.0 (or its pthread variant) is what libblas.so.3 resolves to under OpenBLAS.
    for p in found:
        if "openblas" in p:
            return p
    return found[0] if found else "unknown"


def at_its_best(blas):
    return "openblas" in blas or "mkl" in blas


def warning(blas):
    return (f"warning: PyTorch calls the BLAS in {blas}, not OpenBLAS: it is not at its best "
            "and the comparison flatters nnx (Debian: apt-get install libopenblas0-pthread; "
            "tools/setup.sh installs it)")
