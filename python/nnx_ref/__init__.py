"""nnx_ref: the PyTorch reference executor for NN-Executor model descriptions.

It is the oracle the C++ runtime is tested against, written for clarity and exactness
rather than speed. See /work/shared/spec/ARCH_FORMAT.md for the format and python/README.md
for how to run it.

    import nnx_ref
    net = nnx_ref.load("model.json", weights="model.pth", user_ops={"own_module.YOLO": YOLO})
    out0, out1 = net(x)            # eval mode, no grad; a CHW x gets a batch dim of 1
    faults = nnx_ref.check("bad.json")   # every fault, [] when valid
"""
from .errors import NNXRefError
from .executor import Executor, check, default_inputs, load
from .description import parse_description
from .calls import parse_call, eval_channels
from . import jsonc, ops

__all__ = ["NNXRefError", "Executor", "load", "check", "default_inputs", "parse_description",
           "parse_call", "eval_channels", "jsonc", "ops"]
