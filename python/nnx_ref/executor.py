"""The reference executor: a description's graph run node by node with PyTorch modules.

`Executor` is an `nn.Module` whose children are the unique layers, named
`layer_{u:03}_type_{Class}`, so that its own `state_dict()` is the flat-key weights form of
ARCH_FORMAT.md §1. A module used at several nodes is one child: weights are shared.

`forward(*inputs)` runs every node once, in a deterministic topological order (smallest
ready node index first), in eval mode, and returns the network outputs as a tuple. A CHW
input gets a batch dimension of 1 (and the outputs keep it).

Validation (§9) happens at three moments: the graph's structure when the description is
parsed (description.py), the state dicts when they are loaded, and channel counts while
running, since real channel counts are what the ops produce. `check()` runs all three in a
collecting mode and returns every fault found, the way the C++ tools report them.
"""
from typing import Dict, List, Optional

import torch
from torch import nn

from . import ops
from .build import build_module
from .description import Graph, parse_description
from .errors import NNXRefError
from .weights import read_arch, read_weights


def _expected_in_channels(module):
    """The input channel count an op needs, where the op defines one (for a clear message
    before PyTorch's own, and because Pruner would silently broadcast a 1-channel input)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, ops.Pruner):
        return module.ch
    return None


class Executor(nn.Module):
    def __init__(self, graph: Graph, user_ops: Optional[Dict[str, type]] = None,
                 faults: Optional[List[str]] = None):
        """Builds the modules of `graph` (in description order, so a seeded default
        initialisation is reproducible). With `faults` given, faults are appended to it
        instead of raised (checking mode)."""
        super().__init__()
        collect = faults is not None
        faults = faults if collect else []
        faults.extend(graph.faults)
        self.graph = graph
        self.names = {}          # layer u -> child name
        for layer in graph.layers:
            if layer.call is None:
                continue
            try:
                module = build_module(layer.call, user_ops)
            except LookupError as e:
                faults.append(f"{layer.label()}: {e.args[0]}")
                continue
            except Exception as e:  # a constructor refusing its arguments
                faults.append(f"{layer.label()}: bad arguments: {type(e).__name__}: {e}")
                continue
            name = f"layer_{layer.u:03d}_type_{layer.call.name}"
            self.add_module(name, module)
            self.names[layer.u] = name
        if faults and not collect:
            raise NNXRefError(faults)
        self.eval()

    def layer_module(self, u):
        name = self.names.get(u)
        return None if name is None else getattr(self, name)

    # ---------------------------------------------------------------- weights
    def load_layer_state_dicts(self, per_layer, strict=True, stray=(), source="weights",
                               faults=None):
        """Loads one state dict per description. `stray`: flat keys that matched no
        description (unexpected keys). Shapes must always agree; missing and unexpected
        keys are faults only when `strict`."""
        collect = faults is not None
        faults = faults if collect else []
        layers = self.graph.layers
        if len(per_layer) != len(layers):
            faults.append(f"{source}: {len(per_layer)} state dicts for {len(layers)} layer "
                          f"descriptions (there must be exactly one per description)")
        elif strict and stray:
            faults.append(f"{source}: unexpected keys {sorted(stray)} match no layer")
        if not faults:
            for layer, sd in zip(layers, per_layer):
                module = self.layer_module(layer.u)
                if module is None:
                    continue
                if not isinstance(sd, dict):
                    faults.append(f"{layer.label()}: its state dict is not a dict")
                    continue
                try:
                    module.load_state_dict(sd, strict=strict)
                except RuntimeError as e:
                    msg = str(e).replace("\n\t", " ").replace("\n", " ")
                    faults.append(f"{layer.label()}: {msg}")
        if faults and not collect:
            raise NNXRefError(faults)

    # ---------------------------------------------------------------- running
    def forward(self, *inputs):
        return tuple(self._run(inputs, None))

    def _run(self, inputs, faults):
        """Runs the graph. With `faults` (a list), faults are collected and nodes whose
        inputs are unavailable are skipped; else the first fault raises."""
        g = self.graph

        def fault(msg):
            if faults is None:
                raise NNXRefError(msg)
            faults.append(msg)

        xs = []
        if len(inputs) != len(g.inputs_channels):
            fault(f"the network has {len(g.inputs_channels)} inputs (inputs_channels "
                  f"{g.inputs_channels}), {len(inputs)} given")
        for k, (x, ch) in enumerate(zip(inputs, g.inputs_channels)):
            x = torch.as_tensor(x)
            if x.dim() == 3:
                x = x.unsqueeze(0)
            if x.dim() != 4:
                fault(f"network input {k}: expected NCHW or CHW, got shape {tuple(x.shape)}")
                x = None
            elif x.shape[1] != ch:
                fault(f"network input {k}: inputs_channels says {ch} channels, "
                      f"the input has {x.shape[1]}")
                x = None
            xs.append(x)

        # A faulty input is left unbound: in checking mode its users are skipped.
        values = {(0, k): x for k, x in enumerate(xs) if x is not None}
        # Eval mode runs without autograd; train mode (training parity fixtures) keeps it.
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            for node in g.order:
                layer = g.node_layer[node]
                module = self.layer_module(layer.u)
                label = layer.label(node)
                args = [values.get(g.feeds.get((node, i))) for i in range(len(layer.in_ch))]
                if module is None or any(a is None for a in args):
                    if faults is None:
                        raise NNXRefError(f"{label}: cannot run (unbuilt layer or unfed input)")
                    continue
                need = _expected_in_channels(module)
                bad = [(i, a.shape[1]) for i, a in enumerate(args)
                       if need is not None and a.dim() >= 2 and a.shape[1] != need]
                if bad:
                    i, got = bad[0]
                    fault(f"{label}: expected {need} input channels, found {got} "
                          f"(input {i}, from node {g.feeds[(node, i)][0]})")
                    continue
                try:
                    out = module(*args)
                except Exception as e:
                    fault(f"{label}: {type(e).__name__}: {e}")
                    continue
                outs = list(out) if isinstance(out, (tuple, list)) else [out]
                if len(outs) != len(layer.out_ch):
                    fault(f"{label}: declares {len(layer.out_ch)} outputs, the op gives "
                          f"{len(outs)}")
                    continue
                for k, (y, ch) in enumerate(zip(outs, layer.out_ch)):
                    if ch >= 0 and y.dim() >= 2 and y.shape[1] != ch:
                        fault(f"{label}: declares {ch} channels for output {k}, the op "
                              f"gives {y.shape[1]}")
                    values[(node, k)] = y

        results = []
        for k, src in enumerate(g.outputs):
            y = values.get(src) if src is not None else None
            if y is None:
                if faults is None:
                    raise NNXRefError(f"network output {k} was not computed")
                results.append(None)
                continue
            if k < len(g.outputs_channels) and y.dim() >= 2 and \
                    y.shape[1] != g.outputs_channels[k]:
                fault(f"outputs_channels says {g.outputs_channels[k]} channels for network "
                      f"output {k}, it has {y.shape[1]} (node {src[0]} output {src[1]})")
            results.append(y)
        return results


def _class_names(graph):
    return [layer.call.name if layer.call is not None else None for layer in graph.layers]


def load(arch_path, weights=None, strict=True, user_ops=None, seed=0):
    """Loads a model in any form of §1 and returns its Executor (eval mode).

    `weights`: path of a weights file for a .json architecture (or to override a one-file
    model's own state dicts); None: a one-file model's own, else PyTorch's default
    initialisation after `torch.manual_seed(seed)` (modules are built in description order).
    """
    arch, embedded = read_arch(arch_path)
    graph = parse_description(arch, str(arch_path))
    if seed is not None:
        torch.manual_seed(seed)
    ex = Executor(graph, user_ops)
    if weights is not None:
        per_layer, stray = read_weights(weights, _class_names(graph))
        ex.load_layer_state_dicts(per_layer, strict, stray, str(weights))
    elif embedded is not None:
        ex.load_layer_state_dicts(embedded, strict, (), str(arch_path))
    return ex


def default_inputs(graph, height=32, width=32, batch=1, seed=0):
    """Deterministic random inputs of the declared channel counts."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand((batch, c, height, width), generator=gen) for c in graph.inputs_channels]


def check(arch_path, weights=None, strict=True, user_ops=None, inputs=None):
    """Every fault of a model, as a list of messages (empty: the model is valid).

    Runs the description, the state dicts and a forward pass on `inputs` (default:
    `default_inputs`) in collecting mode: a node that fails is reported and its users are
    skipped, so independent faults are all found.
    """
    faults = []
    try:
        arch, embedded = read_arch(arch_path)
        graph = parse_description(arch, str(arch_path))
    except NNXRefError as e:
        return e.faults
    torch.manual_seed(0)
    ex = Executor(graph, user_ops, faults)
    try:
        if weights is not None:
            per_layer, stray = read_weights(weights, _class_names(graph))
            ex.load_layer_state_dicts(per_layer, strict, stray, str(weights), faults)
        elif embedded is not None:
            ex.load_layer_state_dicts(embedded, strict, (), str(arch_path), faults)
    except NNXRefError as e:
        faults.extend(e.faults)
    if inputs is None:
        inputs = default_inputs(graph)
    ex._run(list(inputs), faults)
    return faults
