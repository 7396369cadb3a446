"""The NN-Executor package's own ops (ARCH_FORMAT.md §8), written from that table.

These are re-implementations for the oracle, not the package's code: each forward is the
formula of the spec, in the plainest PyTorch, so a reader can check it against the table.
State-dict keys match the package's (`t`, `pruner_weight`, legacy `weights`), because the
files it wrote must load unchanged.

At the end: this project's own `nnx.` ops (Reshape, Permute, Split, Mean, Affine,
StochasticDepth; docs/FORMAT_EXTENSIONS.md), resolved like the package's (PACKAGE_OPS).
"""
import torch
from torch import nn


class _Elementwise(nn.Module):
    """Left fold over all inputs with broadcasting: ((x0 op x1) op x2) ...

    `num` is informative only (the package recorded how many inputs it saw); one input
    passes through unchanged.
    """
    op = None

    def __init__(self, num=1):
        super().__init__()
        if type(num) is not int:
            raise TypeError(f"num must be an int, not {num!r}")
        self.num = num

    def extra_repr(self):
        return f"num={self.num}"

    def forward(self, *xs):
        if not xs:
            raise ValueError(f"{type(self).__name__} needs at least one input")
        y = xs[0]
        for x in xs[1:]:
            y = type(self).op(y, x)
        return y


class Add(_Elementwise):
    op = staticmethod(torch.add)


class Sub(_Elementwise):
    op = staticmethod(torch.sub)


class Mul(_Elementwise):
    op = staticmethod(torch.mul)


class Cat(nn.Module):
    """Concatenation of all inputs along `dim` (descriptions write `Cat(dim=1)`).

    The package's Cat stored `dim` but always concatenated along 1; every file it wrote says
    `dim=1`, so honouring the argument changes nothing for them.
    """

    def __init__(self, dim=1):
        super().__init__()
        if type(dim) is not int:
            raise TypeError(f"dim must be an int, not {dim!r}")
        self.dim = dim

    def extra_repr(self):
        return f"dim={self.dim}"

    def forward(self, *xs):
        if not xs:
            raise ValueError("Cat needs at least one input")
        return torch.cat(xs, dim=self.dim)


class Identity(nn.Module):
    """Passes its inputs through: k inputs -> the same k tensors as k outputs.

    Serves both `torch.nn.Identity()` and the package's several-input Identity.
    """

    def __init__(self):
        super().__init__()

    def forward(self, *xs):
        if not xs:
            raise ValueError("Identity needs at least one input")
        return xs[0] if len(xs) == 1 else tuple(xs)


class Constant(nn.Module):
    """No inputs; outputs the tensor `t` as stored (state key `t`, not trainable).

    `t` comes from the state dict; the literal in the constructor string only gives its
    initial value (and, through it, the shape the state dict must have).
    """
    trainable = False

    def __init__(self, t):
        super().__init__()
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be a tensor literal, not {t!r}")
        self.t = nn.Parameter(t.clone(), requires_grad=self.trainable)

    def extra_repr(self):
        # As the package wrote it: the literal gives the shape, the state dict the values.
        return f"t=torch.zeros({tuple(self.t.shape)},dtype={self.t.dtype})"

    def forward(self):
        return self.t


class Variable(Constant):
    """As Constant, but `t` is trainable (this matters for training, not for forward)."""
    trainable = True


def _gate(w):
    """The pruners' soft gate sigmoid(100 w - 86): about 1 for w near 1, about 0 below 0.8."""
    return torch.sigmoid(100.0 * w - 86.0)


class Pruner(nn.Module):
    """Learned channel gate `w` of shape (1, ch, 1, 1).

    Current files (state key `pruner_weight`): y = x * sigmoid(100w - 86) * w * (w > threshold).
    Older files (state key `weights`):          y = x * sigmoid(100w - 86) * w^2.
    activated=False: y = x. `prunable` and `num_of_appearances` do not change the forward.

    Which generation a layer is follows from the key its state dict holds, so the switch
    happens when the state dict is loaded (`_load_from_state_dict`).

    Initial value without weights, as the package did: w = 1.0000008344650269 (gate ~ 1),
    then, when activated, w = 1 - U(0, 1) * 0.01.
    """

    def __init__(self, ch, prunable=False, activated=True, threshold=0.75, num_of_appearances=1):
        super().__init__()
        if type(ch) is not int or ch <= 0:
            raise TypeError(f"ch must be a positive int, not {ch!r}")
        for name, v in (("prunable", prunable), ("activated", activated)):
            if type(v) is not bool:
                raise TypeError(f"{name} must be True or False, not {v!r}")
        if type(threshold) not in (int, float):
            raise TypeError(f"threshold must be a number, not {threshold!r}")
        self.ch, self.prunable, self.activated = ch, prunable, activated
        self.threshold, self.num_of_appearances = float(threshold), num_of_appearances
        self.legacy = False
        w = torch.full((1, ch, 1, 1), 1.0000008344650269, dtype=torch.float32)
        if activated:
            w = 1 - torch.rand((1, ch, 1, 1), dtype=torch.float32) * 0.01
        self.pruner_weight = nn.Parameter(w)

    def extra_repr(self):
        return (f"ch={self.ch}, prunable={self.prunable}, activated={self.activated}, "
                f"threshold={self.threshold}, num_of_appearances={self.num_of_appearances}")

    @property
    def weight(self):
        return self.weights if self.legacy else self.pruner_weight

    def _become_legacy(self):
        self.legacy = True
        self.weights = self._parameters.pop("pruner_weight")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if not self.legacy and prefix + "weights" in state_dict \
                and prefix + "pruner_weight" not in state_dict:
            self._become_legacy()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def multiplier(self):
        w = self.weight
        if self.legacy:
            return _gate(w) * w * w
        return _gate(w) * w * (w > self.threshold).to(w.dtype)

    def forward(self, x):
        if not self.activated:
            return x
        return x * self.multiplier()


class AllOrNothingPruner(Pruner):
    """As Pruner, gated by the channel mean m = mean(w) (all channels kept or none):
    y = x * sigmoid(100m - 86) * w * (m > threshold)."""

    def multiplier(self):
        w = self.weight
        m = w.mean()
        return _gate(m) * w * (m > self.threshold).to(w.dtype)


PACKAGE_OPS = {cls.__name__: cls for cls in
               (Add, Sub, Mul, Cat, Identity, Constant, Variable, Pruner, AllOrNothingPruner)}

# Classes of the original package this format refuses (ARCH_FORMAT.md §8).
REFUSED = {"ModuleWithConstArgs", "MultiWithConst", "WithBatchNorm2d", "Parallel",
           "StaticPruner", "ResidualPruner", "YOLO", "YOLOAnchorMul", "ChannelsLogger",
           "InputLayer", "OutputLayer"}


# ---------------------------------------------------------------------------------------------
# This project's own ops (`nnx.` prefix, docs/FORMAT_EXTENSIONS.md): the tensor plumbing that
# torch.fx traces of real networks need (reshape, permute, split, mean, scalar arithmetic).


def _int_sequence(value, what, allow_int=False):
    """A tuple of ints from a tuple or list of ints (or one int where `allow_int`)."""
    if allow_int and type(value) is int:
        return (value,)
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise TypeError(f"{what} must be a tuple of ints, not {value!r}")
    return tuple(value)


def _number(value, what):
    if type(value) not in (int, float):
        raise TypeError(f"{what} must be a number, not {value!r}")
    return float(value)


class Reshape(nn.Module):
    """Reshape to `shape` (batch dim included): 0 copies the input's dim at that position,
    one -1 is inferred. `nnx.Reshape(shape=(0, -1))`."""

    def __init__(self, shape):
        super().__init__()
        self.shape = _int_sequence(shape, "shape")
        if not 1 <= len(self.shape) <= 8:
            raise ValueError(f"shape must have 1 to 8 dims, not {len(self.shape)}")
        if sum(1 for v in self.shape if v == -1) > 1:
            raise ValueError(f"shape {self.shape} has more than one -1")
        if any(v < -1 for v in self.shape):
            raise ValueError(f"shape {self.shape} has a negative size other than -1")

    def extra_repr(self):
        return f"shape={self.shape}"

    def forward(self, x):
        target = []
        for i, v in enumerate(self.shape):
            if v == 0:
                if i >= x.dim():
                    raise ValueError(f"shape {self.shape}: 0 at dim {i} of a rank-{x.dim()} "
                                     f"input")
                v = x.shape[i]
            target.append(v)
        return x.reshape(target)


class Permute(nn.Module):
    """Dimensions reordered as torch.permute (negative dims allowed), made contiguous.
    `nnx.Permute(dims=(0, 2, 3, 1))`."""

    def __init__(self, dims):
        super().__init__()
        self.dims = _int_sequence(dims, "dims")
        n = len(self.dims)
        if not 1 <= n <= 8 or sorted(d % n if -n <= d < n else n for d in self.dims) \
                != list(range(n)):
            raise ValueError(f"dims {self.dims} is not a permutation of {n} dims")

    def extra_repr(self):
        return f"dims={self.dims}"

    def forward(self, x):
        return x.permute(self.dims).contiguous()


class Split(nn.Module):
    """Splits along `dim` into pieces of the given sizes (as torch.split with a list):
    one output per size. `nnx.Split(sizes=[58, 58], dim=1)`."""

    def __init__(self, sizes, dim=0):
        super().__init__()
        self.sizes = list(_int_sequence(sizes, "sizes"))
        if not self.sizes or any(s < 0 for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty list of sizes >= 0, not {sizes!r}")
        if type(dim) is not int:
            raise TypeError(f"dim must be an int, not {dim!r}")
        self.dim = dim

    def extra_repr(self):
        return f"sizes={self.sizes}, dim={self.dim}"

    def forward(self, x):
        if sum(self.sizes) != x.shape[self.dim]:
            raise ValueError(f"sizes {self.sizes} sum to {sum(self.sizes)}, dim {self.dim} "
                             f"of the input has {x.shape[self.dim]}")
        outs = torch.split(x, self.sizes, dim=self.dim)
        return tuple(o.contiguous() for o in outs)


class Mean(nn.Module):
    """Mean over the dims listed (negative allowed). `nnx.Mean(dim=(2, 3), keepdim=False)`."""

    def __init__(self, dim, keepdim=False):
        super().__init__()
        self.dim = _int_sequence(dim, "dim", allow_int=True)
        if not self.dim:
            raise ValueError("dim must list at least one dim")
        if type(keepdim) is not bool:
            raise TypeError(f"keepdim must be True or False, not {keepdim!r}")
        self.keepdim = keepdim

    def extra_repr(self):
        return f"dim={self.dim}, keepdim={self.keepdim}"

    def forward(self, x):
        return x.mean(dim=self.dim, keepdim=self.keepdim)


class Affine(nn.Module):
    """y = x * scale + shift: tensor-scalar arithmetic (x/6 is scale=1/6, 3-x is scale=-1.0,
    shift=3.0). `nnx.Affine(scale=0.5, shift=3.0)`."""

    def __init__(self, scale=1.0, shift=0.0):
        super().__init__()
        self.scale = _number(scale, "scale")
        self.shift = _number(shift, "shift")

    def extra_repr(self):
        return f"scale={self.scale!r}, shift={self.shift!r}"

    def forward(self, x):
        return x * self.scale + self.shift


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth at inference: the identity.
    `nnx.StochasticDepth(p=0.1, mode=row)`."""

    def __init__(self, p, mode):
        super().__init__()
        _number(p, "p")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], not {p!r}")
        self.p = p  # printed as given, as torchvision does
        if mode not in ("row", "batch"):
            raise ValueError(f"mode must be row or batch, not {mode!r}")
        self.mode = mode

    def __repr__(self):
        return f"StochasticDepth(p={self.p!r}, mode={self.mode})"

    def forward(self, x):
        return x


NNX_OPS = {cls.__name__: cls for cls in (Reshape, Permute, Split, Mean, Affine, StochasticDepth)}
PACKAGE_OPS.update(NNX_OPS)
