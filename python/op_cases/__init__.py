"""Op parity cases: each module in this package defines `cases()`, yielding OpCase objects.

A case is one op, built in PyTorch, run on fixed inputs; `write_case` stores what the C++ test
(tests/ops/op_parity_test.cpp) needs to rebuild the same op from its constructor string and
compare: case.json, in<i>.npy, ref<i>.npy, param_<name>.npy.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import numpy as np
import torch


@dataclass
class OpCase:
    name: str            # unique within its module, used as a folder name
    call: str            # constructor string as a description would hold it
    fn: Callable         # fn(*inputs) -> tensor or tuple of tensors (a module in eval mode)
    inputs: List[torch.Tensor]
    params: Dict[str, torch.Tensor] = field(default_factory=dict)  # state-dict names -> values
    tol: float = 1e-4    # max|got-ref| / max(1, max|ref|)
    num_outputs: int = 1
    training: bool = False  # run in training mode (gradient cases: BatchNorm batch statistics)


def module_params(module):
    """A module's state dict as the op's parameters (names as PyTorch's state_dict gives)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def write_case(root, group, case):
    folder = os.path.join(root, group, case.name)
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad():
        out = case.fn(*case.inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for i, x in enumerate(case.inputs):
        np.save(os.path.join(folder, f"in{i}.npy"), x.detach().cpu().numpy())
    for i, y in enumerate(outs):
        np.save(os.path.join(folder, f"ref{i}.npy"), y.detach().cpu().float().numpy())
    for k, v in case.params.items():
        np.save(os.path.join(folder, f"param_{k}.npy"), v.detach().cpu().numpy())
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump({"call": case.call, "num_inputs": len(case.inputs), "num_outputs": len(outs),
                   "params": list(case.params.keys()), "tol": case.tol}, f, indent=2)


def seeded(seed=0):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
