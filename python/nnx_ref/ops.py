"""The NN-Executor package's own ops (ARCH_FORMAT.md §8), written from that table.

These are re-implementations for the oracle, not the package's code: each forward is the
formula of the spec, in the plainest PyTorch, so a reader can check it against the table.
State-dict keys match the package's (`t`, `pruner_weight`, legacy `weights`), because the
files it wrote must load unchanged.
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
