"""How each module, function and method call becomes a description layer.

A handler is called as `handler(mapper, *args, **kwargs)` with the call's own arguments,
tensors replaced by references (mapping.Port/Const/Poison) and everything else as concrete
values, so Python's argument binding applies each call's signature and defaults. It returns
the reference of the result (usually `mapper.add(...)`) or raises `Unsupported`.

Functionals become the equivalent torch.nn module (F.relu -> ReLU(), torch.flatten(x, 1) ->
Flatten(start_dim=1, end_dim=-1)); what torch.nn has no module for is written as an `nnx.`
op (Reshape, Permute, Split, Mean, Affine, StochasticDepth) or a package op (Add, Mul, Sub,
Cat, Variable, Constant).
"""
import operator
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .mapping import Const, Multi, Poison, Unsupported, is_tensor_ref, module_text, \
    state_of

# ---------------------------------------------------------------------------- modules
# torch.nn modules the runtime implements, written as their repr (with checks where a
# module can hold arguments the runtime lacks).
SUPPORTED_MODULES = (
    nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Sigmoid,
    nn.Tanh, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.ELU, nn.GELU, nn.Softplus,
    nn.Softmax, nn.LogSoftmax, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.LayerNorm,
    nn.Upsample)


def _module_layer(mapper, m, inputs, key=None):
    return mapper.add(_module_text_checked(m), state_of(m), inputs, key)


def _module_text_checked(m):
    if isinstance(m, nn.MaxPool2d) and m.return_indices:
        raise Unsupported("return_indices=True")
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)) and m.dim is None:
        raise Unsupported("an implicit softmax dim")
    if isinstance(m, nn.AvgPool2d):
        return _avg_pool_text(m)
    if isinstance(m, nn.Upsample):
        return _upsample_text(m)
    return module_text(m)


def _upsample_text(m):
    """PyTorch's Upsample repr leaves out align_corners and recompute_scale_factor; where they
    change the result (True; None and False compute the same) they are written after it."""
    text = module_text(m)[:-1]
    if m.align_corners:
        text += ", align_corners=True"
    if m.recompute_scale_factor:
        text += ", recompute_scale_factor=True"
    return text + ")"


def _avg_pool_text(m):
    """PyTorch's AvgPool2d repr leaves out ceil_mode, count_include_pad and divisor_override;
    where they differ from the defaults they are written after it, so they are not lost."""
    text = module_text(m)[:-1]
    if m.ceil_mode:
        text += ", ceil_mode=True"
    if not m.count_include_pad:
        text += ", count_include_pad=False"
    if m.divisor_override is not None:
        text += f", divisor_override={m.divisor_override}"
    return text + ")"


def call_module(mapper, m, *args, **kwargs):
    # The exact classes: a torch.nn subclass (MultiheadAttention's
    # NonDynamicallyQuantizableLinear) prints a name the runtime does not know.
    if type(m) not in SUPPORTED_MODULES or kwargs or len(args) != 1:
        raise Unsupported("no equivalent op in the runtime")
    result = _module_layer(mapper, m, list(args), key=id(m))
    if getattr(m, "inplace", False):
        mapper.redirect_inplace(result)
    return result


# ---------------------------------------------------------------------------- activations
def _activation(cls, *names):
    """A handler for a functional activation with positional parameters `names` (after the
    input); an `inplace` argument only changes which value later uses see."""
    def handler(mapper, input, *args, **kwargs):
        bound = dict(zip(names, args), **kwargs)
        if len(args) > len(names) or not set(bound) <= set(names) | {"inplace"}:
            raise Unsupported(f"arguments {args} {kwargs}")
        inplace = bound.pop("inplace", False)
        result = _module_layer(mapper, cls(**bound), [input])
        if inplace:
            mapper.redirect_inplace(result)
        return result
    return handler


def _inplace_method(handler):
    def method(mapper, *args, **kwargs):
        result = handler(mapper, *args, **kwargs)
        mapper.redirect_inplace(result)
        return result
    return method


def _softmax(cls):
    def handler(mapper, input, dim=None, _stacklevel=3, dtype=None):
        if dtype is not None:
            raise Unsupported("dtype")
        if dim is None:
            raise Unsupported("an implicit softmax dim")
        return _module_layer(mapper, cls(dim=dim), [input])
    return handler


def dropout(mapper, input, p=0.5, training=True, inplace=False):
    return _module_layer(mapper, nn.Dropout(p=p), [input])


def gelu(mapper, input, approximate="none"):
    return _module_layer(mapper, nn.GELU(approximate=approximate), [input])


def hardtanh(mapper, input, min_val=-1.0, max_val=1.0, inplace=False):
    result = _module_layer(mapper, nn.Hardtanh(min_val, max_val), [input])
    if inplace:
        mapper.redirect_inplace(result)
    return result


# ---------------------------------------------------------------------------- pooling
def max_pool2d(mapper, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    m = nn.MaxPool2d(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
    return _module_layer(mapper, m, [input])


def avg_pool2d(mapper, input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    m = nn.AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)
    return _module_layer(mapper, m, [input])


def adaptive_avg_pool2d(mapper, input, output_size):
    return _module_layer(mapper, nn.AdaptiveAvgPool2d(output_size), [input])


def interpolate(mapper, input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    if antialias:
        raise Unsupported("antialias=True")
    m = nn.Upsample(size, scale_factor, mode, align_corners, recompute_scale_factor)
    return _module_layer(mapper, m, [input])


# ---------------------------------------------------------------------------- weights ops
def _const(r, what):
    if r is None or isinstance(r, Const):
        return None if r is None else r.value.detach()
    raise Unsupported(f"{what} computed from the inputs")


def layer_norm(mapper, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    w, b = _const(weight, "weight"), _const(bias, "bias")
    m = nn.LayerNorm(tuple(normalized_shape), eps=eps, elementwise_affine=w is not None or
                     b is not None)
    with torch.no_grad():
        if m.elementwise_affine:
            m.weight.copy_(w if w is not None else torch.ones_like(m.weight))
            m.bias.copy_(b if b is not None else torch.zeros_like(m.bias))
    return _module_layer(mapper, m, [input])


def conv2d(mapper, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    w, b = _const(weight, "weight"), _const(bias, "bias")
    if w.dim() != 4:
        raise Unsupported(f"a weight of shape {tuple(w.shape)}")
    m = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding,
                  dilation, groups, bias=b is not None)
    with torch.no_grad():
        m.weight.copy_(w)
        if b is not None:
            m.bias.copy_(b)
    return _module_layer(mapper, m, [input])


def linear(mapper, input, weight, bias=None):
    w, b = _const(weight, "weight"), _const(bias, "bias")
    m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        m.weight.copy_(w)
        if b is not None:
            m.bias.copy_(b)
    return _module_layer(mapper, m, [input])


# ---------------------------------------------------------------------------- shapes
def _dim(d, rank):
    if not -rank <= d < max(rank, 1):
        raise Unsupported(f"dim {d} out of range for a tensor of {rank} dims")
    return d % rank if rank else 0


def _ints(values):
    if len(values) == 1 and isinstance(values[0], (tuple, list, torch.Size)):
        values = values[0]
    if not all(isinstance(v, int) for v in values):
        raise Unsupported(f"non-integer sizes {values!r}")
    return [int(v) for v in values]


def flatten(mapper, input, start_dim=0, end_dim=-1):
    return _module_layer(mapper, nn.Flatten(start_dim, end_dim), [input])


def reshape(mapper, input, *shape):
    """nnx.Reshape(shape=...): 0 copies the input's dim at that position (written for the
    batch, so the file works for any batch size); one -1 is inferred."""
    target = _ints(shape)
    in_shape = mapper.shape(input)
    if target and in_shape and target[0] == in_shape[0] and target[0] != -1:
        target[0] = 0
    return mapper.add(f"nnx.Reshape(shape={tuple(target)!r})", OrderedDict(), [input])


def reshape_function(mapper, input, shape):
    return reshape(mapper, input, shape)


def permute(mapper, input, *dims):
    rank = mapper.rank(input)
    dims = tuple(_dim(d, rank) for d in _ints(dims))
    return mapper.add(f"nnx.Permute(dims={dims!r})", OrderedDict(), [input])


def permute_function(mapper, input, dims):
    return permute(mapper, input, dims)


def transpose(mapper, input, dim0, dim1):
    rank = mapper.rank(input)
    dims = list(range(rank))
    a, b = _dim(dim0, rank), _dim(dim1, rank)
    dims[a], dims[b] = dims[b], dims[a]
    return mapper.add(f"nnx.Permute(dims={tuple(dims)!r})", OrderedDict(), [input])


def mean(mapper, input, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        raise Unsupported("dtype")
    rank = mapper.rank(input)
    if dim is None:
        dims = tuple(range(rank))
    else:
        dims = tuple(_dim(d, rank) for d in (dim if isinstance(dim, (tuple, list)) else [dim]))
    return mapper.add(f"nnx.Mean(dim={dims!r}, keepdim={bool(keepdim)!r})", OrderedDict(),
                      [input])


def _split_layer(mapper, input, dim):
    """nnx.Split with the sizes the call really produced (one output port per piece)."""
    out = mapper.out_value()
    d = _dim(dim, mapper.rank(input))
    sizes = [int(t.shape[d]) for t in out]
    return mapper.add(f"nnx.Split(sizes={sizes!r}, dim={d})", OrderedDict(), [input])


def chunk(mapper, input, chunks, dim=0):
    return _split_layer(mapper, input, dim)


def split(mapper, tensor, split_size_or_sections=None, dim=0, split_size=None):
    return _split_layer(mapper, tensor, dim)


def identity(mapper, input, *args, **kwargs):
    """contiguous(), clone(), detach(): nothing changes for the description."""
    return input


def convert(mapper, input, *args, **kwargs):
    """.to(...), .float(), .type_as(...): elided where they change nothing."""
    before, after = mapper.value(input), mapper.out_value()
    if not isinstance(after, torch.Tensor) or after.dtype != before.dtype:
        raise Unsupported(f"a conversion to {getattr(after, 'dtype', after)}")
    return input


def getitem(mapper, container, index):
    if isinstance(container, Multi):
        return container.ports[index]
    if isinstance(container, Poison) and isinstance(container.value, (tuple, list)):
        return Poison(container.value[index])
    raise Unsupported("indexing or slicing a tensor")


# ---------------------------------------------------------------------------- arithmetic
def _scalar(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Unsupported(f"an operand of type {type(v).__name__}")
    return float(v)


def _affine(mapper, input, scale, shift):
    return mapper.add(f"nnx.Affine(scale={float(scale)!r}, shift={float(shift)!r})",
                      OrderedDict(), [input])


_PACKAGE_OP = {"add": "Add", "sub": "Sub", "mul": "Mul"}


def _arith(kind):
    """x op y for op in add, sub, mul, div: tensor with tensor -> Add/Sub/Mul (broadcasting),
    tensor with a number -> nnx.Affine(scale, shift)."""
    def handler(mapper, a, b, alpha=1, rounding_mode=None):
        if alpha != 1 or rounding_mode is not None:
            raise Unsupported("alpha or rounding_mode")
        ta, tb = is_tensor_ref(a), is_tensor_ref(b)
        if ta and tb:
            if kind == "div":
                raise Unsupported("tensor / tensor (no Div op)")
            return mapper.add(f"nn_executor.models.{_PACKAGE_OP[kind]}(num=2)", OrderedDict(),
                              [a, b])
        if ta:
            s = _scalar(b)
            scale, shift = {"add": (1.0, s), "sub": (1.0, -s), "mul": (s, 0.0),
                            "div": (None if s == 0 else 1.0 / s, 0.0)}[kind]
            if scale is None:
                raise Unsupported("division by zero")
            return _affine(mapper, a, scale, shift)
        s = _scalar(a)
        if kind == "div":
            raise Unsupported("number / tensor")
        scale, shift = {"add": (1.0, s), "sub": (-1.0, s), "mul": (s, 0.0)}[kind]
        return _affine(mapper, b, scale, shift)
    return handler


def neg(mapper, input):
    return _affine(mapper, input, -1.0, 0.0)


def cat(mapper, tensors, dim=0):
    refs = []
    for t in tensors:
        refs.extend(t.ports if isinstance(t, Multi) else [t])
    d = _dim(dim, len(mapper.shape(refs[0])))
    return mapper.add(f"nn_executor.models.Cat(dim={d})", OrderedDict(), refs)


def stochastic_depth(mapper, input, p, mode, training=True):
    """Identity at inference; kept as a layer so the file says what the model had."""
    return mapper.add(f"nnx.StochasticDepth(p={float(p)!r}, mode={mode})", OrderedDict(),
                      [input])


# ---------------------------------------------------------------------------- tables
def _functions():
    table = {
        F.relu: _activation(nn.ReLU, "inplace"), torch.relu: _activation(nn.ReLU),
        torch.relu_: _inplace_method(_activation(nn.ReLU)),
        F.relu6: _activation(nn.ReLU6, "inplace"),
        F.hardswish: _activation(nn.Hardswish, "inplace"),
        F.hardsigmoid: _activation(nn.Hardsigmoid, "inplace"),
        F.silu: _activation(nn.SiLU, "inplace"), F.mish: _activation(nn.Mish, "inplace"),
        F.leaky_relu: _activation(nn.LeakyReLU, "negative_slope", "inplace"),
        F.elu: _activation(nn.ELU, "alpha", "inplace"),
        F.softplus: _activation(nn.Softplus, "beta", "threshold"),
        torch.sigmoid: _activation(nn.Sigmoid), F.sigmoid: _activation(nn.Sigmoid),
        torch.tanh: _activation(nn.Tanh), F.tanh: _activation(nn.Tanh),
        F.gelu: gelu, F.hardtanh: hardtanh,
        F.softmax: _softmax(nn.Softmax), torch.softmax: _softmax(nn.Softmax),
        F.log_softmax: _softmax(nn.LogSoftmax), torch.log_softmax: _softmax(nn.LogSoftmax),
        F.dropout: dropout,
        F.max_pool2d: max_pool2d, torch.max_pool2d: max_pool2d,
        F.avg_pool2d: avg_pool2d, torch._C._nn.avg_pool2d: avg_pool2d,
        F.adaptive_avg_pool2d: adaptive_avg_pool2d,
        torch._C._nn.adaptive_avg_pool2d: adaptive_avg_pool2d,
        F.interpolate: interpolate, F.layer_norm: layer_norm, F.conv2d: conv2d, F.linear: linear,
        torch.flatten: flatten, torch.reshape: reshape_function,
        torch.permute: permute_function, torch.transpose: transpose,
        torch.mean: mean, torch.chunk: chunk, torch.split: split,
        torch.cat: cat, torch.concat: cat,
        operator.add: _arith("add"), operator.iadd: _arith("add"), torch.add: _arith("add"),
        operator.sub: _arith("sub"), operator.isub: _arith("sub"), torch.sub: _arith("sub"),
        operator.mul: _arith("mul"), operator.imul: _arith("mul"), torch.mul: _arith("mul"),
        operator.truediv: _arith("div"), operator.itruediv: _arith("div"),
        torch.div: _arith("div"), operator.neg: neg, torch.neg: neg,
        operator.getitem: getitem,
    }
    try:
        import torchvision.ops
        table[torchvision.ops.stochastic_depth] = stochastic_depth
    except ImportError:
        pass
    return table


_METHODS = {
    "relu": _activation(nn.ReLU), "relu_": _inplace_method(_activation(nn.ReLU)),
    "sigmoid": _activation(nn.Sigmoid), "sigmoid_": _inplace_method(_activation(nn.Sigmoid)),
    "tanh": _activation(nn.Tanh), "tanh_": _inplace_method(_activation(nn.Tanh)),
    "softmax": _softmax(nn.Softmax), "log_softmax": _softmax(nn.LogSoftmax),
    "flatten": flatten, "view": reshape, "reshape": reshape, "permute": permute,
    "transpose": transpose, "mean": mean, "chunk": chunk, "split": split,
    "contiguous": identity, "clone": identity, "detach": identity,
    "to": convert, "float": convert, "type_as": convert,
    "add": _arith("add"), "add_": _inplace_method(_arith("add")),
    "sub": _arith("sub"), "sub_": _inplace_method(_arith("sub")),
    "mul": _arith("mul"), "mul_": _inplace_method(_arith("mul")),
    "div": _arith("div"), "div_": _inplace_method(_arith("div")),
    "neg": neg,
}


class Handlers:
    """Looks up the handler of an fx node (None: unsupported)."""

    def __init__(self):
        self.functions = _functions()

    def lookup(self, gm, n):
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            return lambda mapper, *args, **kwargs: call_module(mapper, m, *args, **kwargs)
        if n.op == "call_method":
            return _METHODS.get(n.target)
        if n.op == "call_function":
            try:
                return self.functions.get(n.target)
            except TypeError:          # an unhashable target
                return None
        return None
