"""The export itself: trace, map, write, verify (the package docstring has the overview)."""
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from .handlers import Handlers
from .loading import load_model
from .mapping import Mapper, Poison
from .tracing import ExportError, flatten_outputs, trace  # noqa: F401 (flatten_outputs: API)
from .verify import VerifyError, compare, find_nnx, run_nnx
from .writing import PendingFiles

TOLERANCE = 1e-4



@dataclass
class ExportResult:
    json_path: str
    pth_path: str
    tracing: str                     # "symbolic" or "concrete"
    num_layers: int
    num_nodes: int
    inputs: List[torch.Tensor] = field(default_factory=list)
    references: List[torch.Tensor] = field(default_factory=list)
    max_error: Optional[float] = None  # against the runtime's outputs; None: not verified


def example_inputs(shapes, seed=0):
    """Deterministic example inputs (standard normal) of the given shapes."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(s), generator=gen) for s in shapes]


def describe(model, inputs):
    """(description, state dicts, references, tracing) for `model` on `inputs`.
    Raises ExportError listing every call that cannot be mapped."""
    model = model.eval()
    with torch.no_grad():
        try:
            references = model(*[x.clone() for x in inputs])
        except Exception as e:  # the model refuses these inputs: a fault of the request
            shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
            raise ExportError(f"the model fails on inputs of shapes {shapes}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                              ) from None
    refs = flatten_outputs(references)
    gm, how, faults = trace(model, inputs, references)
    mapper = Mapper(gm, Handlers()).run()
    lines = faults + [f.line() for f in mapper.faults]
    if any(isinstance(p, Poison) for p in mapper.outputs) and not lines:
        lines.append("?: an output depends on a call that could not be mapped")
    if lines:
        raise ExportError(lines)
    for k, x in enumerate(inputs):
        if x.dim() != 4:
            raise ExportError(f"input {k}: the runtime takes NCHW inputs, got shape "
                              f"{tuple(x.shape)}")
    desc, states = mapper.description()
    return desc, states, [r.detach().float() for r in refs], how


def export(model, shapes, out_prefix, verify=None, nnx=None, seed=0, log=None):
    """Exports `model` (a module or a MODEL string) for inputs of `shapes` to
    `out_prefix`.json/.pth. `verify`: None = when an `nnx` command is found, True = required,
    False = never. Returns an ExportResult; raises ExportError (bad input or unsupported, or
    a failed verification) with one line per fault."""
    nnx = (nnx or find_nnx()) if verify is not False else None
    if verify and nnx is None:          # the environment's fault, not the model's: exit 3
        raise RuntimeError("--verify: no `nnx` command found (not beside nnx-export, not on "
                           "PATH, NNX_CLI unset)")
    if verify is None:
        verify = nnx is not None
        if not verify and log:
            log("no `nnx` command found: the export is not verified")
    if isinstance(model, str):
        torch.manual_seed(seed)
        model = load_model(model)
    inputs = example_inputs(shapes, seed)
    desc, states, refs, how = describe(model, inputs)
    with PendingFiles(out_prefix) as files:
        files.write(desc, states)
        result = ExportResult(files.json_path, files.pth_path, how, len(desc["layers"]),
                              len({i for layer in desc["layers"] for i in layer[0]}),
                              inputs, refs)
        if verify:
            start = time.time()
            try:
                got = run_nnx(nnx, files.tmp_json, files.tmp_pth, [x.numpy() for x in inputs])
            except VerifyError as e:
                raise ExportError(str(e)) from None
            result.max_error = compare(got, [r.numpy() for r in refs])
            if log:
                log(f"verified with {nnx} in {time.time() - start:.1f} s: largest difference "
                    f"{result.max_error:.3g} (max|got-ref|/max(1,max|ref|))")
            if not result.max_error <= TOLERANCE:
                raise ExportError(f"verification failed: the runtime's outputs differ from "
                                  f"PyTorch's by {result.max_error:.3g} (tolerance "
                                  f"{TOLERANCE:g})")
        files.commit()
    return result
