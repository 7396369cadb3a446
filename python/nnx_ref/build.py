"""From a parsed constructor string to a PyTorch module (ARCH_FORMAT.md §6).

Name resolution: the prefixes `torch.nn.`, `torch.nn.modules.<file>.`, `nn_executor.models.`,
`nn_executor.pruning.pruners.`, `nnx.` and no prefix name built-in ops: first the package's
ops (ops.py; its `Identity` serves `torch.nn.Identity` too), then `Upsample` (torch.nn's,
whatever the prefix: the package's was a thin subclass of it), then the classes of
`torch.nn`. Any other prefix names a user op, looked up by its qualified name in
the `user_ops` dict the caller passes (`{"own_module.YOLO": YOLO}`).
"""
import re

from torch import nn

from . import ops
from .calls import TensorLiteral

_BUILTIN_PREFIX = re.compile(
    r"^(|torch\.nn|torch\.nn\.modules\.[A-Za-z_]\w*|nn_executor\.models"
    r"|nn_executor\.pruning\.pruners|nnx)$")

# torch.nn names that are not layers a description can hold.
_NOT_LAYERS = {"Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList",
               "ParameterDict", "Container"}


def is_builtin_prefix(prefix):
    return bool(_BUILTIN_PREFIX.match(prefix))


def resolve_class(call, user_ops):
    """The class a call names; raises LookupError with a message naming it."""
    if not is_builtin_prefix(call.prefix):
        cls = (user_ops or {}).get(call.qualified)
        if cls is None:
            raise LookupError(f"unknown op '{call.qualified}': a user op that is not registered")
        return cls
    if call.name in ops.REFUSED:
        raise LookupError(f"unsupported op '{call.name}': a class of the original package "
                          f"this format does not accept")
    if call.name in ops.PACKAGE_OPS:
        return ops.PACKAGE_OPS[call.name]
    if call.name == "Upsample":
        return nn.Upsample
    cls = getattr(nn, call.name, None)
    if isinstance(cls, type) and issubclass(cls, nn.Module) and call.name not in _NOT_LAYERS:
        return cls
    raise LookupError(f"unknown op '{call.qualified}'")


def _materialise(value, shape_from_tuple):
    """Tensor literals -> tensors, recursively in tuples and lists."""
    if isinstance(value, TensorLiteral):
        return value.as_tensor(shape_from_tuple)
    if isinstance(value, tuple):
        return tuple(_materialise(v, shape_from_tuple) for v in value)
    if isinstance(value, list):
        return [_materialise(v, shape_from_tuple) for v in value]
    return value


def build_module(call, user_ops=None):
    """Constructs the module of `call`, in eval mode.

    In-place activations (`ReLU(inplace=True)`) are made out-of-place: a node's output may
    feed several nodes, and an in-place op would change what the others see. Numerically
    nothing else changes.
    """
    cls = resolve_class(call, user_ops)
    legacy_shape = cls in (ops.Constant, ops.Variable)
    args = [_materialise(a, legacy_shape) for a in call.args]
    kwargs = {k: _materialise(v, legacy_shape) for k, v in call.kwargs.items()}
    module = cls(*args, **kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(f"'{call.qualified}' did not construct a torch.nn.Module")
    for m in module.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return module.eval()
