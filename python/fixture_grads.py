"""Gradient fixtures: every op case of python/op_cases/ and python/grad_cases/, differentiated by
PyTorch's autograd, for tests/train/op_grad_test.cpp.

OUT/<module>/<case>/ holds in<i>.npy, param_<name>.npy (the state dict before the forward),
gout<i>.npy (a seeded random gradient per output), gin<i>.npy (the gradient of each float input),
gparam_<name>.npy (the gradient of each trainable parameter), after_<name>.npy (buffers after a
training forward: running statistics) and case.json.

Trainable parameters are a module's named_parameters(). The package's ops that op_cases writes as
plain functions closing over their weights (Pruner, AllOrNothingPruner, Constant, Variable) are
rebuilt as nnx_ref modules from the call and the state dict, so that their weights are
parameters (Variable's and the pruners' trainable, Constant's not).

Skipped, as nothing is differentiable: cases with neither a float input nor a trainable parameter
(Constant, integer-only inputs).
"""
import importlib
import json
import os
import pkgutil
import warnings
import zlib

import numpy as np
import torch
from torch import nn

import grad_cases
import op_cases

_REBUILT = {"Pruner", "AllOrNothingPruner", "Constant", "Variable"}


def _module_for(case):
    """The case's function as a module with its weights as parameters, or None for a plain
    function without weights."""
    if isinstance(case.fn, nn.Module):
        return case.fn
    if not case.params:
        return None
    from nnx_ref.build import build_module
    from nnx_ref.calls import parse_call
    call = parse_call(case.call)
    if call.name not in _REBUILT:
        raise ValueError(f"{case.name}: a plain function with parameters ({case.call}); "
                         "write it as a module")
    module = build_module(call)
    module.load_state_dict(case.params)
    return module


def _save(folder, name, t):
    np.save(os.path.join(folder, name + ".npy"), t.detach().cpu().numpy())


def write_grad_case(root, group, case):
    """Writes one case; returns False when it has nothing to differentiate."""
    module = _module_for(case)
    fn = case.fn if module is None else module
    if module is not None:
        module.train(case.training)
    trainable = dict(module.named_parameters()) if module is not None else {}
    trainable = {k: v for k, v in trainable.items() if v.requires_grad}
    float_in = [x.is_floating_point() for x in case.inputs]
    if not any(float_in) and not trainable:
        return False
    gen = torch.Generator().manual_seed(zlib.crc32(f"{group}/{case.name}".encode()))
    state_before = ({k: v.detach().clone() for k, v in module.state_dict().items()}
                    if module is not None else {})
    inputs = [x.detach().clone().requires_grad_(f) for x, f in zip(case.inputs, float_in)]
    for p in trainable.values():
        p.grad = None
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    gouts = [torch.randn(y.shape, generator=gen) for y in outs]
    pairs = [(y, g) for y, g in zip(outs, gouts) if y.requires_grad]
    wrt = [x for x, f in zip(inputs, float_in) if f] + list(trainable.values())
    grads = (torch.autograd.grad([y for y, _ in pairs], wrt, [g.to(y.dtype) for y, g in pairs],
                                 allow_unused=True) if pairs else [None] * len(wrt))
    # Unused inputs or parameters (an inactive Pruner's gate) get zeros, as the C++ ops write.
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]

    folder = os.path.join(root, group, case.name)
    os.makedirs(folder, exist_ok=True)
    k = 0
    for i, (x, f) in enumerate(zip(case.inputs, float_in)):
        _save(folder, f"in{i}", x)
        if f:
            _save(folder, f"gin{i}", grads[k].float())
            k += 1
    for name, g in zip(trainable, grads[k:]):
        _save(folder, f"gparam_{name}", g.float())
    for i, g in enumerate(gouts):
        _save(folder, f"gout{i}", g)
    params = dict(case.params)
    for name, v in params.items():
        _save(folder, f"param_{name}", v)
    after = []
    if case.training and module is not None:
        for name, v in module.state_dict().items():
            if name in trainable:
                continue
            _save(folder, f"after_{name}", v)
            after.append(name)
        # The C++ op must start from the same state, so the module's own values are written.
        for name, v in state_before.items():
            if name not in params:
                _save(folder, f"param_{name}", v)
                params[name] = v
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump({"call": case.call, "num_inputs": len(case.inputs), "num_outputs": len(outs),
                   "params": list(params.keys()), "trainable": list(trainable.keys()),
                   "after": after, "float_inputs": float_in, "training": case.training,
                   "tol": case.tol}, f, indent=2)
    return True


def generate(folder):
    torch.set_grad_enabled(True)
    warnings.filterwarnings("ignore", category=UserWarning)  # torch's deprecation notes
    count = skipped = 0
    for package in (op_cases, grad_cases):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            if not hasattr(module, "cases"):
                continue
            torch.manual_seed(0)
            for case in module.cases():
                if write_grad_case(folder, info.name, case):
                    count += 1
                else:
                    skipped += 1
    print(f"{count} gradient cases ({skipped} without anything to differentiate)")


if __name__ == "__main__":
    import sys
    generate(sys.argv[1])
