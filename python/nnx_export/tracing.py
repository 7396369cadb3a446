"""From a PyTorch module to a torch.fx graph whose every node knows its concrete value.

Two tracers build the graph:

- `SymbolicTracer`: torch.fx's own symbolic tracing (values are proxies; the graph holds the
  model's Python-level shape arithmetic as nodes). Tried first.
- `ConcreteTracer`: the same fx machinery, but every node is also executed on the example
  input while it is recorded, so Python control flow, `len()`, iteration and unpacking of
  sizes see real values. Used where symbolic tracing fails or its graph computes something
  else than the module. Shapes are specialised to the example input; data-dependent values
  (`bool(tensor)`, `.item()`) are recorded as faults, never silently baked in.

Both record, for each node, where in the user's source it was made (`node.meta["location"]`,
the innermost frame outside torch and this package) and in which module (`"module_path"`).
`annotate_values` then runs the graph on the example inputs and stores each node's value in
`node.meta["value"]`: the mapper reads shapes, sizes and constants from there.
"""
import contextlib
import os
import sys

import torch
import torch.fx as fx
from torch import nn
from torch.fx.node import map_aggregate
from torch.fx.proxy import Attribute, Proxy

_ORIG_MODULE_CALL, _ORIG_MODULE_GETATTR = nn.Module.__call__, nn.Module.__getattr__
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Non-tensor results of these calls depend on shapes only: folding them specialises the
# export to the example's shapes, which is what an export for a given --shape is.
SHAPE_METHODS = {"size", "dim", "ndimension", "numel", "nelement", "type", "is_contiguous",
                 "get_device", "element_size"}
SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda", "layout", "requires_grad"}


class ExportError(Exception):
    """A fault of the model or the request; `faults` holds one line each."""

    def __init__(self, faults):
        self.faults = [faults] if isinstance(faults, str) else list(faults)
        super().__init__("\n".join(self.faults))


def user_location():
    """`file:line` of the innermost frame outside torch and this package ('?' if none)."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_TORCH_DIR) and not path.startswith(_OWN_DIR) \
                and not frame.f_code.co_filename.startswith("<"):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def contains_tensor(value):
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(contains_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(contains_tensor(v) for v in value.values())
    return False


class _LocatingTracer(fx.Tracer):
    """fx.Tracer that notes each node's source location and enclosing module path."""

    def __init__(self):
        super().__init__()
        # Not fx.Tracer's own module_stack (a dict in torch 2, which its call_module fills).
        self.nnx_module_paths = [""]

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        self.nnx_module_paths.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.nnx_module_paths.pop()

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None,
                     proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                     proxy_factory_fn)
        proxy.node.meta["location"] = user_location()
        proxy.node.meta["module_path"] = self.nnx_module_paths[-1]
        return proxy


class SymbolicTracer(_LocatingTracer):
    """torch.fx symbolic tracing with locations."""


class ConcreteProxy(Proxy):
    """A proxy that also holds the value its node computes on the example input."""

    @property
    def value(self):
        return self.node.meta["value"]

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        # fx's own __iter__ reads the caller's bytecode (and breaks on newer Pythons); the
        # value says how many items there are.
        return self.tracer.iter(self)

    def __getattr__(self, k):
        v = getattr(self.value, k)
        if callable(v) or isinstance(v, torch.Tensor):
            return Attribute(self, k)          # a method call (or tensor attribute): a node
        if k not in SHAPE_ATTRIBUTES:
            self.tracer.note_data_dependent(f"attribute '.{k}'")
        return v


@contextlib.contextmanager
def _plain_modules():
    """Module calls and attribute reads as they are outside tracing: fx patches
    nn.Module.__call__ and __getattr__ while it traces, which would trace the concrete
    evaluation of a leaf module too."""
    saved = nn.Module.__call__, nn.Module.__getattr__
    nn.Module.__call__, nn.Module.__getattr__ = _ORIG_MODULE_CALL, _ORIG_MODULE_GETATTR
    try:
        yield
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = saved


class ConcreteTracer(_LocatingTracer):
    """fx tracing that runs every recorded call on the example inputs as it goes."""

    def __init__(self, inputs):
        super().__init__()
        self.inputs = list(inputs)
        self.faults = []

    def proxy(self, node):
        return ConcreteProxy(node, self)

    def note_data_dependent(self, what):
        self.faults.append(f"{user_location()}: unsupported: {what} depends on the input's "
                           f"values (the export would bake in the example's)")

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None,
                     proxy_factory_fn=None):
        value = self._evaluate(kind, target, args, kwargs)
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                     proxy_factory_fn)
        proxy.node.meta["value"] = value
        if kind in ("placeholder", "get_attr") or contains_tensor(value):
            return proxy
        # A non-tensor result (a size, a dtype) is handed back as a plain value, so Python
        # code around it runs normally; the mapper reports the ones computed from tensor data.
        return value

    def _evaluate(self, kind, target, args, kwargs):
        with _plain_modules():
            return self._evaluate_plainly(kind, target, args, kwargs)

    def _evaluate_plainly(self, kind, target, args, kwargs):
        def concrete(a):
            return a.node.meta["value"] if isinstance(a, Proxy) else a
        args = map_aggregate(args, concrete)
        kwargs = map_aggregate(kwargs, concrete)
        if kind == "placeholder":
            return self.inputs[len([n for n in self.graph.nodes if n.op == "placeholder"])]
        if kind == "get_attr":
            obj = self.root
            for part in target.split("."):
                obj = getattr(obj, part)
            return obj
        if kind == "call_function":
            return target(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if kind == "call_module":
            return self.root.get_submodule(target)(*args, **kwargs)
        raise AssertionError(kind)

    # Hooks fx's Proxy calls for Python constructs it cannot trace symbolically.
    def to_bool(self, obj):
        self.note_data_dependent("a condition on a tensor (data-dependent control flow)")
        return bool(obj.value)

    def iter(self, obj):
        return iter([obj[i] for i in range(len(obj.value))])

    def keys(self, obj):
        return obj.value.keys()


def describe_target(kind, target):
    """A readable name for a call: `torch.roll`, `Tensor.expand`, `operator.floordiv`."""
    if kind == "call_method":
        return f"Tensor.{target}"
    if kind == "call_function":
        module = getattr(target, "__module__", None) or ""
        name = getattr(target, "__name__", repr(target))
        if module in ("_operator", "operator"):
            module = "operator"
        elif module.startswith("torch._C._nn"):
            module = "torch._C._nn"
        elif module.startswith("torch._C") or module == "torch._VariableFunctionsClass" \
                or not module:
            module = "torch"
        return f"{module}.{name}"
    return str(target)


class _ValueRecorder(fx.Interpreter):
    """Runs a graph, storing every node's value in node.meta['value']."""

    def run_node(self, n):
        value = super().run_node(n)
        n.meta["value"] = value
        return value


def _clone_inputs(inputs):
    return [x.clone() for x in inputs]


def flatten_outputs(value):
    """The tensors of a module's (possibly nested) output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flatten_outputs(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_outputs(v)]
    return [value]          # a non-tensor output: the mapper reports it


def _same_outputs(got, ref):
    got, ref = flatten_outputs(got), flatten_outputs(ref)
    if len(got) != len(ref):
        return False
    for g, r in zip(got, ref):
        if isinstance(r, torch.Tensor):
            if not isinstance(g, torch.Tensor) or g.shape != r.shape:
                return False
            if not torch.allclose(g.float(), r.float(), rtol=1e-4, atol=1e-5, equal_nan=True):
                return False
    return True


def _debug_traceback(what):
    """NNX_EXPORT_DEBUG=1: the whole traceback of a tracer's failure, on stderr."""
    if os.environ.get("NNX_EXPORT_DEBUG"):
        import traceback
        print(f"nnx-export: {what} failed:", file=sys.stderr)
        traceback.print_exc()


def trace(module, inputs, reference_outputs):
    """A GraphModule of `module` (eval mode) with node values, and how it was traced
    ('symbolic' or 'concrete'). Raises ExportError when neither tracer manages."""
    with torch.no_grad():
        symbolic_error = None
        try:
            tracer = SymbolicTracer()
            graph = tracer.trace(module)
            gm = fx.GraphModule(tracer.root, graph)
            out = _ValueRecorder(gm).run(*_clone_inputs(inputs))
            if _same_outputs(out, reference_outputs):
                return gm, "symbolic", []
            symbolic_error = "its graph computes other outputs than the module"
        except Exception as e:  # fx raises many kinds; any means: trace concretely
            _debug_traceback("symbolic tracing")
            symbolic_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        try:
            tracer = ConcreteTracer(_clone_inputs(inputs))
            graph = tracer.trace(module)
            gm = fx.GraphModule(tracer.root, graph)
            out = _ValueRecorder(gm).run(*_clone_inputs(inputs))
        except ExportError:
            raise
        except Exception as e:
            _debug_traceback("tracing with the example input")
            raise ExportError(
                f"cannot trace the model: symbolic tracing failed ({symbolic_error}), and "
                f"tracing with the example input failed ({type(e).__name__}: {e})") from None
        if not tracer.faults and not _same_outputs(out, reference_outputs):
            raise ExportError("cannot trace the model: the traced graph computes other outputs "
                              "than the module (is it random at inference?)")
        return gm, "concrete", tracer.faults


