"""nnx-export fixtures: torchvision models and a user-file model exported, with PyTorch's outputs.

`generate(folder)` (called by gen_fixtures.py with <build>/fixtures/export) writes one folder
per case, laid out as the network fixtures of fixture_models.py:

    <case>/<case>.json, <case>.pth   what nnx-export wrote
    <case>/in0.npy ...               the example inputs the export was traced with
    <case>/ref0.npy ...              the original PyTorch module's outputs on them
    <case>/case.json                 {"arch", "weights", "strict", "inputs", "refs", "tol",
                                      "user_ops", "model", "tracing"}

Each export is checked against the module's outputs through nnx_ref (the reference
executor) here; tests/export/ loads each with nnx::load and compares within `tol`, and checks
that saving it again (what `nnx convert` does) reproduces the description byte for byte and
the weights bit for bit. Weights are PyTorch's default initialisation after
torch.manual_seed(0), with BatchNorm statistics made informative; nothing is downloaded.
"""
import importlib.util
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import nnx_export  # noqa: E402
import nnx_ref  # noqa: E402
from nnx_export.verify import compare  # noqa: E402

TOL = 1e-4

# (case, MODEL as nnx-export takes it, input shapes). vgg11 is AdaptiveAvgPool'd: a smaller
# input keeps its convolutions cheap (its 133M weights are what they are).
CASES = [
    ("resnet18", "torchvision.models:resnet18", [(1, 3, 224, 224)]),
    ("resnet50", "torchvision.models:resnet50", [(1, 3, 224, 224)]),
    ("vgg11", "torchvision.models:vgg11", [(1, 3, 64, 64)]),
    ("mobilenet_v2", "torchvision.models:mobilenet_v2", [(1, 3, 224, 224)]),
    ("mobilenet_v3_small", "torchvision.models:mobilenet_v3_small", [(1, 3, 224, 224)]),
    ("squeezenet1_1", "torchvision.models:squeezenet1_1", [(1, 3, 224, 224)]),
    # SiLU after every kind of convolution (stem, depthwise on 112x112 to 7x7, 1x1), Sigmoid
    # gates, StochasticDepth.
    ("efficientnet_b0", "torchvision.models:efficientnet_b0", [(1, 3, 224, 224)]),
    ("two_branch", os.path.join(HERE, "export_cases", "two_branch.py") + ":TwoBranch",
     [(2, 3, 20, 24), (2, 2, 10, 12)]),
    ("inverted_residuals",
     os.path.join(HERE, "export_cases", "inverted_residuals.py") + ":Blocks", [(2, 3, 70, 66)]),
]


def informative_batchnorm(model, seed=1):
    """Random running statistics and affine parameters: with PyTorch's defaults (mean 0,
    var 1, weight 1, bias 0) BatchNorm is nearly the identity in eval mode and would hide
    mistakes in its mapping."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return model


def check_with_reference_executor(result):
    """The export run by nnx_ref (the format's PyTorch oracle) must give the module's own
    outputs: a fixture the C++ side fails on is then the runtime's fault, not the export's."""
    net = nnx_ref.load(result.json_path, result.pth_path)
    outs = net(*result.inputs)
    err = compare([o.numpy() for o in outs], [r.numpy() for r in result.references])
    if not err <= TOL:
        raise AssertionError(f"{result.json_path}: nnx_ref's outputs differ from the module's "
                             f"by {err:.3g}")


def export_case(root, name, spec, shapes):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    model = informative_batchnorm(nnx_export.load_model(spec))
    result = nnx_export.export(model, shapes, os.path.join(folder, name), verify=False)
    check_with_reference_executor(result)
    inputs, refs = [], []
    for k, x in enumerate(result.inputs):
        inputs.append(f"in{k}.npy")
        np.save(os.path.join(folder, inputs[-1]), x.numpy().astype(np.float32))
    for k, y in enumerate(result.references):
        refs.append(f"ref{k}.npy")
        np.save(os.path.join(folder, refs[-1]), y.numpy().astype(np.float32))
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump({"arch": f"{name}.json", "weights": f"{name}.pth", "strict": True,
                   "inputs": inputs, "refs": refs, "tol": TOL, "user_ops": [],
                   "model": spec if not spec.startswith(HERE) else os.path.relpath(spec, HERE),
                   "tracing": result.tracing}, f, indent=4)
        f.write("\n")
    return result


def generate(folder):
    os.makedirs(folder, exist_ok=True)
    if importlib.util.find_spec("torchvision") is None:
        # The C++ tests skip, saying why, rather than fail on a missing package.
        with open(os.path.join(folder, "SKIPPED"), "w") as f:
            f.write("torchvision is not installed for this Python (Debian: python3-torchvision)\n")
        print("  export fixtures skipped: no torchvision")
        return
    for name, spec, shapes in CASES:
        start = time.time()
        result = export_case(folder, name, spec, shapes)
        print(f"  export {name}: {result.num_layers} layers ({result.tracing} tracing) in "
              f"{time.time() - start:.1f} s")


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else "/tmp/nnx_fixture_export")
