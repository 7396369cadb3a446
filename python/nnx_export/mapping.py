"""From a traced fx graph (nodes with values) to the model description's nodes and layers.

The walk goes through the fx nodes in order. Each node's result becomes one of:

- `Port(node, port)`: a tensor flowing in the description's graph (node 0 = network inputs);
- `Multi([Port, ...])`: the tuple of tensors a several-output layer makes (chunk/split);
- `Const(tensor)`: a tensor that does not depend on the inputs (parameters used directly,
  values computed from them). It becomes a `Variable`/`Constant` layer only where a layer
  takes it as an input; ops that take weights (layer_norm, conv2d, linear) absorb it;
- any other Python value (sizes, ints, dtypes): folded, specialising the export to the
  example's shapes;
- `Poison`: the result of a call that could not be mapped; its users are still walked, so
  every unsupported call is reported, not just the first.

The handlers of calls live in handlers.py; this module holds the bookkeeping they use.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch.fx.node import Node, map_aggregate

from .tracing import SHAPE_ATTRIBUTES, SHAPE_METHODS, contains_tensor, describe_target


class Unsupported(Exception):
    """A handler cannot express this call; the message says why (one line)."""


@dataclass(frozen=True)
class Port:
    node: int
    port: int


@dataclass
class Multi:
    ports: List[Port]


@dataclass
class Const:
    value: torch.Tensor
    trainable: bool = False          # a parameter of the model (-> Variable)


@dataclass
class Poison:
    value: object                    # what the unmapped call computed (for shapes)


@dataclass
class Layer:
    text: str                        # "module.Repr" constructor string
    state: "OrderedDict[str, torch.Tensor]"
    nodes: List[int]
    in_ch: List[int]
    out_ch: List[int]


def channels_of(t):
    """The channel count the description declares for a tensor: dim 1 (for 2-D tensors the
    feature count); 1 for tensors of fewer dims, which broadcast without changing it."""
    return int(t.shape[1]) if isinstance(t, torch.Tensor) and t.dim() >= 2 else 1


def is_tensor_ref(r):
    return isinstance(r, (Port, Const, Poison))


def module_text(m):
    """A torch.nn module as the description writes it: `type(m).__module__ + "." + repr(m)`."""
    return f"{type(m).__module__}.{m!r}"


def state_of(m):
    """A module's state dict, each tensor detached and in its own storage."""
    return OrderedDict((k, v.detach().clone().contiguous()) for k, v in m.state_dict().items())


@dataclass
class Fault:
    location: str
    message: str

    def line(self):
        return f"{self.location}: {self.message}"


class Mapper:
    """Builds the description of a traced GraphModule; see the module docstring."""

    def __init__(self, gm, handlers):
        self.gm = gm
        self.handlers = handlers
        self.layers: List[Layer] = []
        self.node_inputs: Dict[int, List[Port]] = {}
        self.port_value: Dict[Port, torch.Tensor] = {}
        self.shared: Dict[int, Layer] = {}             # id(module) -> its layer
        self.const_ports: Dict[int, Port] = {}         # id(tensor) -> its Variable/Constant
        self.faults: List[Fault] = []
        self.env: Dict[Node, object] = {}
        self.inputs: List[torch.Tensor] = []
        self.outputs: List[Port] = []
        self.current: Optional[Node] = None

    # ------------------------------------------------------------------ helpers for handlers
    def value(self, r):
        """The example value of a tensor reference."""
        if isinstance(r, Port):
            return self.port_value[r]
        return r.value

    def shape(self, r):
        return tuple(self.value(r).shape)

    def rank(self, r):
        return len(self.shape(r))

    def out_value(self):
        return self.current.meta["value"]

    def as_port(self, r):
        """A Port for a tensor reference; a Const becomes a Variable (a parameter of the
        model) or Constant layer, once per tensor."""
        if isinstance(r, (Port, Poison)):
            return r
        if not isinstance(r, Const):
            raise Unsupported(f"expected a tensor, got {type(r).__name__} {r!r}")
        key = id(r.value)
        if key not in self.const_ports:
            t = r.value.detach()
            kind = "Variable" if r.trainable else "Constant"
            shape = repr(tuple(t.shape))
            text = f"nn_executor.models.{kind}(t=torch.zeros({shape},dtype={t.dtype}))"
            state = OrderedDict(t=t.clone().contiguous())
            self.const_ports[key] = self._add_node(text, state, [], [t])
        return self.const_ports[key]

    def add(self, text, state, inputs, key=None):
        """Adds a node running `text` on `inputs` (tensor references); its outputs are the
        current fx node's value. `key` (a module's id) makes later calls of the same module
        nodes of the same layer: shared weights. Returns a Port, or a Multi for a tuple."""
        ports = [self.as_port(r) for r in inputs]
        value = self.out_value()
        multi = isinstance(value, (tuple, list))
        outs = list(value) if multi else [value]
        if any(isinstance(p, Poison) for p in ports):
            return Poison(value)
        first = self._add_node(text, state, ports, outs, key)
        if not multi:
            return first
        return Multi([Port(first.node, k) for k in range(len(outs))])

    def _add_node(self, text, state, ports, outs, key=None):
        index = len(self.node_inputs) + 1
        self.node_inputs[index] = ports
        for k, t in enumerate(outs):
            self.port_value[Port(index, k)] = t
        in_ch, out_ch = [self.port_channels(p) for p in ports], [channels_of(t) for t in outs]
        layer = self.shared.get(key) if key is not None else None
        if layer is not None and layer.in_ch == in_ch and layer.out_ch == out_ch:
            layer.nodes.append(index)
        else:
            # A layer declares one set of channels for all its nodes: a module called on
            # tensors of other channel counts (resnet's one ReLU per block) gets a layer of
            # its own there (weights copied, so still equal).
            layer = Layer(text, state, [index], in_ch, out_ch)
            self.layers.append(layer)
            if key is not None and key not in self.shared:
                self.shared[key] = layer
        return Port(index, 0)

    def port_channels(self, p):
        return channels_of(self.port_value[p])

    # ------------------------------------------------------------------ the walk
    def run(self):
        for n in self.gm.graph.nodes:
            self.current = n
            if n.op == "placeholder":
                value = n.meta["value"]
                port = Port(0, len(self.inputs))
                self.inputs.append(value)
                self.port_value[port] = value
                self.env[n] = port
            elif n.op == "get_attr":
                value = n.meta["value"]
                self.env[n] = Const(value, isinstance(value, torch.nn.Parameter)) \
                    if isinstance(value, torch.Tensor) else value
            elif n.op == "output":
                self._outputs(n)
            else:
                self.env[n] = self._call(n)
        return self

    def _resolve(self, tree):
        return map_aggregate(tree, lambda a: self.env[a] if isinstance(a, Node) else a)

    def fault(self, message, node=None):
        node = node or self.current
        where = node.meta.get("location", "?")
        module = node.meta.get("module_path")
        suffix = f" (in module '{module}')" if module and node.op != "call_module" else ""
        self.faults.append(Fault(where, message + suffix))

    def _call(self, n):
        args, kwargs = self._resolve(n.args), self._resolve(n.kwargs)
        refs = []
        map_aggregate((args, kwargs), lambda a: refs.append(a)
                      if isinstance(a, (Port, Multi, Poison)) else None)
        value = n.meta["value"]
        what = describe_call(self.gm, n)
        if not contains_tensor(value):
            if refs and not is_shape_query(n):
                self.fault(f"unsupported: {what} gives a Python value computed from tensor "
                           f"data (the export would bake in the example's)")
            return value
        if not refs:                       # computed from parameters and constants only
            return map_aggregate(value, lambda v: Const(v) if isinstance(v, torch.Tensor)
                                 else v)
        handler = self.handlers.lookup(self.gm, n)
        if handler is None:
            self.fault(f"unsupported call {what}")
            return _poison(value)
        try:
            result = handler(self, *args, **kwargs)
        except Unsupported as e:
            self.fault(f"unsupported call {what}: {e}")
            return _poison(value)
        except TypeError as e:             # arguments the handler's signature does not take
            self.fault(f"unsupported call {what}: unexpected arguments ({e})")
            return _poison(value)
        return result

    def redirect_inplace(self, ref):
        """After an in-place call on the current node's first argument, later uses of that
        argument see the result (as they would in eager PyTorch)."""
        target = self.current.args[0] if self.current.args else None
        if isinstance(target, Node):
            self.env[target] = ref

    def _outputs(self, n):
        leaves = []

        def collect(v):
            if isinstance(v, (tuple, list)):
                for x in v:
                    collect(x)
            elif isinstance(v, dict):
                for x in v.values():
                    collect(x)
            else:
                leaves.append(v)
        collect(self._resolve(n.args[0]))
        for k, r in enumerate(leaves):
            if isinstance(r, Multi):
                self.outputs.extend(r.ports)
            elif isinstance(r, (Port, Const)):
                self.outputs.append(self.as_port(r))
            elif isinstance(r, Poison):
                self.outputs.append(r)
            else:
                self.fault(f"unsupported: network output {k} is not a tensor ({r!r})", n)
        if not self.outputs and not self.faults:
            self.fault("unsupported: the model has no tensor outputs", n)

    # ------------------------------------------------------------------ the result
    def description(self):
        """The description as the C++ writer writes it (key order included) and the list of
        per-layer state dicts."""
        connections = [[p.node, p.port, dst, i] for dst, ports in sorted(self.node_inputs.items())
                       for i, p in enumerate(ports)]
        outputs = [[p.node, p.port, k] for k, p in enumerate(self.outputs)]
        desc = OrderedDict([
            ("connections", connections),
            ("outputs", outputs),
            ("inputs_channels", [channels_of(x) for x in self.inputs]),
            ("outputs_channels", [channels_of(self.port_value[p]) for p in self.outputs]),
            ("layers", [[list(layer.nodes), layer.text, [list(layer.in_ch), list(layer.out_ch)]]
                        for layer in self.layers]),
        ])
        return desc, [layer.state for layer in self.layers]


def _poison(value):
    if isinstance(value, (tuple, list)):
        return Multi([Poison(v) for v in value])
    return Poison(value)


def is_shape_query(n):
    if n.op == "call_method":
        return n.target in SHAPE_METHODS
    if n.op == "call_function" and n.target is getattr:
        return n.args[1] in SHAPE_ATTRIBUTES
    return n.op == "call_function" and getattr(n.target, "__module__", "") in ("_operator",)


def describe_call(gm, n):
    """How a fault names the call: `torch.roll`, `Tensor.expand`, `module 'blocks.0.attn'
    (torch.nn.modules.activation.MultiheadAttention)`."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        return f"module '{n.target}' ({type(m).__module__}.{type(m).__name__})"
    return describe_target(n.op, n.target)
