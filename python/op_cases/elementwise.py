"""Parity cases for the elementwise ops, activations, softmax, structure ops, constants and
pruners (ops/elementwise, activation, softmax, structure, constant, pruner).

The package's own ops (Add/Sub/Mul, Cat, Identity, Constant/Variable, Pruner,
AllOrNothingPruner) are written here from ARCH_FORMAT.md section 8, in plain PyTorch; the
torch.nn ones are the modules themselves in eval mode.
"""
import functools

import torch
from torch import nn

from . import OpCase


# ---- the package's ops, per ARCH_FORMAT.md section 8

def fold(op):
    """Add/Sub/Mul: left fold over all inputs with broadcasting; one input passes through."""
    return lambda *xs: functools.reduce(op, xs)


def cat(dim):
    return lambda *xs: torch.cat(xs, dim=dim)


def identity(*xs):
    return xs[0] if len(xs) == 1 else tuple(xs)


def constant(t):
    return lambda: t.clone()


def pruner(w, threshold=0.75):
    return lambda x: x * torch.sigmoid(100 * w - 86) * w * (w > threshold)


def legacy_pruner(w):
    return lambda x: x * torch.sigmoid(100 * w - 86) * w ** 2


def all_or_nothing_pruner(w, threshold=0.75):
    m = w.mean()
    return lambda x: x * torch.sigmoid(100 * m - 86) * w * (m > threshold)


# ---- inputs

def randn(*shape, scale=1.0):
    return torch.randn(*shape) * scale


def activation_input(*shape):
    """Normal values, with some of large magnitude to test numerical stability."""
    x = torch.randn(*shape) * 4
    flat = x.view(-1)
    extremes = torch.tensor([30.0, -30.0, 90.0, -90.0, 20.5, -20.5, 19.5, 0.0, -3.0, 3.0, 6.0,
                             -1e-3, 1e-3, 100.0, -100.0])
    flat[: extremes.numel()] = extremes
    return x


def gate_weights(ch):
    """Pruner weights on both sides of the threshold (0.75) and across the gate's slope."""
    base = torch.tensor([0.5, 0.74, 0.76, 0.84, 0.86, 0.88, 0.95, 1.2, -0.3, 0.8, 0.9, 1.0])
    return base[:ch].reshape(1, ch, 1, 1).clone()


def eval_module(module):
    return module.eval()


def cases():
    torch.manual_seed(0)
    add, sub, mul = torch.add, torch.sub, torch.mul

    # -- Add / Sub / Mul with broadcasting
    a, b = randn(2, 3, 4, 5), randn(2, 3, 4, 5)
    yield OpCase("add_same", "nn_executor.models.Add(num=2)", fold(add), [a, b])
    c11 = randn(2, 3, 1, 1)
    yield OpCase("add_nc11_first", "Add(num=2)", fold(add), [c11, a])
    yield OpCase("add_nc11_second", "nn_executor.models.Add(num=2)", fold(add), [a, c11])
    yield OpCase("add_1c11", "Add(2)", fold(add), [a, randn(1, 3, 1, 1)])
    yield OpCase("add_scalarish", "Add(num=2)", fold(add), [randn(1, 1, 1, 1), a])
    yield OpCase("add_three", "nn_executor.models.Add(num=3)", fold(add),
                 [a, c11, randn(1, 1, 4, 5)])
    yield OpCase("add_outer_broadcast", "Add(num=2)", fold(add),
                 [randn(2, 1, 4, 1), randn(1, 3, 1, 5)])
    yield OpCase("add_rank_mismatch", "Add(num=2)", fold(add), [randn(5), a])
    yield OpCase("add_one_input", "nn_executor.models.Add(num=1)", fold(add), [a])
    yield OpCase("add_four_mixed", "Add()", fold(add),
                 [randn(3, 1, 5), randn(2, 3, 4, 5), randn(1, 3, 1, 1), randn(4, 1)])
    yield OpCase("sub_same", "nn_executor.models.Sub(num=2)", fold(sub), [a, b])
    yield OpCase("sub_nc11_first", "Sub(num=2)", fold(sub), [c11, a])
    yield OpCase("sub_nc11_second", "Sub(num=2)", fold(sub), [a, c11])
    yield OpCase("sub_three", "nn_executor.models.Sub(num=3)", fold(sub),
                 [randn(1, 3, 1, 1), a, randn(2, 3, 4, 1)])
    yield OpCase("mul_same", "nn_executor.models.Mul(num=2)", fold(mul), [a, b])
    yield OpCase("mul_nc11_first", "Mul(num=2)", fold(mul), [c11, a])
    yield OpCase("mul_three", "Mul(num=3)", fold(mul), [a, randn(1, 3, 1, 1), randn(1, 1, 1, 1)])
    yield OpCase("mul_one_input", "Mul()", fold(mul), [a])
    big = randn(2, 16, 32, 40)  # above the kernels' grain: split across the pool
    yield OpCase("add_big_nc11", "Add(num=2)", fold(add), [big, randn(2, 16, 1, 1)])
    yield OpCase("sub_big_same", "Sub(num=2)", fold(sub), [big, randn(2, 16, 32, 40)])
    yield OpCase("mul_big_three", "Mul(num=3)", fold(mul),
                 [randn(2, 16, 1, 1), big, randn(1, 1, 32, 40)])

    # -- activations
    x = activation_input(2, 3, 8, 8)
    acts = [
        ("relu", "torch.nn.ReLU()", nn.ReLU()),
        ("relu_inplace", "torch.nn.modules.activation.ReLU(inplace=True)", nn.ReLU()),
        ("relu_short", "ReLU()", nn.ReLU()),
        ("relu_nn", "nn.ReLU(True)", nn.ReLU()),
        ("leaky_relu", "torch.nn.LeakyReLU(negative_slope=0.01)", nn.LeakyReLU()),
        ("leaky_relu_02", "LeakyReLU(negative_slope=0.2)", nn.LeakyReLU(0.2)),
        ("leaky_relu_pos", "torch.nn.LeakyReLU(0.3, True)", nn.LeakyReLU(0.3)),
        ("leaky_relu_int", "LeakyReLU(negative_slope=1)", nn.LeakyReLU(1)),
        ("relu6", "torch.nn.ReLU6()", nn.ReLU6()),
        ("relu6_inplace", "ReLU6(inplace=True)", nn.ReLU6()),
        ("sigmoid", "torch.nn.Sigmoid()", nn.Sigmoid()),
        ("tanh", "torch.nn.modules.activation.Tanh()", nn.Tanh()),
        ("silu", "torch.nn.SiLU()", nn.SiLU()),
        ("silu_inplace", "SiLU(inplace=True)", nn.SiLU()),
        ("hardswish", "torch.nn.Hardswish()", nn.Hardswish()),
        ("hardswish_inplace", "Hardswish(inplace=True)", nn.Hardswish()),
        ("hardsigmoid", "torch.nn.Hardsigmoid()", nn.Hardsigmoid()),
        ("elu", "torch.nn.ELU(alpha=1.0)", nn.ELU()),
        ("elu_05", "ELU(alpha=0.5, inplace=True)", nn.ELU(0.5)),
        ("elu_int", "ELU(2)", nn.ELU(2.0)),
        ("gelu", "torch.nn.GELU(approximate='none')", nn.GELU()),
        ("gelu_default", "GELU()", nn.GELU()),
        ("gelu_tanh", "torch.nn.GELU(approximate='tanh')", nn.GELU(approximate="tanh")),
        ("hardtanh", "torch.nn.Hardtanh(min_val=-1.0, max_val=1.0)", nn.Hardtanh()),
        ("hardtanh_args", "Hardtanh(min_val=-2.0, max_val=3.0, inplace=True)",
         nn.Hardtanh(-2.0, 3.0)),
        ("hardtanh_positional", "Hardtanh(0, 6)", nn.Hardtanh(0.0, 6.0)),
        ("hardtanh_deprecated", "Hardtanh(min_value=-0.5, max_value=2.5)",
         nn.Hardtanh(-0.5, 2.5)),
        ("softplus", "torch.nn.Softplus(beta=1, threshold=20)", nn.Softplus()),
        ("softplus_args", "Softplus(beta=2, threshold=10)", nn.Softplus(2, 10)),
        ("softplus_frac", "Softplus(0.5, 5.5)", nn.Softplus(0.5, 5.5)),
        ("mish", "torch.nn.Mish()", nn.Mish()),
        ("mish_inplace", "Mish(inplace=True)", nn.Mish()),
    ]
    for name, call, module in acts:
        yield OpCase(name, call, eval_module(module), [x])
    xb = activation_input(2, 16, 32, 32)
    yield OpCase("sigmoid_big", "Sigmoid()", nn.Sigmoid(), [xb])
    # 105 values: the vector forms' masked tail, with infinities, NaN and values whose
    # exponential is subnormal or zero.
    xt = activation_input(1, 3, 5, 7)
    xt.view(-1)[-9:] = torch.tensor([float("inf"), float("-inf"), float("nan"), -87.5, -95.0,
                                     -104.5, 88.0, 1e-30, -1e-30])
    yield OpCase("sigmoid_tail_special", "Sigmoid()", nn.Sigmoid(), [xt])
    yield OpCase("silu_tail_special", "SiLU()", nn.SiLU(), [xt])
    yield OpCase("gelu_big", "GELU()", nn.GELU(), [xb])

    # -- softmax
    s4 = randn(2, 5, 3, 4, scale=20)
    s4.view(-1)[:4] = torch.tensor([500.0, -500.0, 80.0, -80.0])
    for name, call, dim in [("softmax_dim1", "torch.nn.Softmax(dim=1)", 1),
                            ("softmax_dim_last", "Softmax(dim=-1)", -1),
                            ("softmax_dim0", "Softmax(0)", 0),
                            ("softmax_dim2", "torch.nn.modules.activation.Softmax(dim=2)", 2),
                            ("softmax_none_4d", "Softmax(dim=None)", None),
                            ("softmax_noarg_4d", "torch.nn.Softmax()", None)]:
        yield OpCase(name, call, nn.Softmax(dim), [s4])
    yield OpCase("softmax_none_3d", "Softmax(dim=None)", nn.Softmax(None), [randn(4, 3, 5)])
    yield OpCase("softmax_none_2d", "Softmax()", nn.Softmax(None), [randn(4, 7, scale=10)])
    yield OpCase("softmax_none_1d", "Softmax()", nn.Softmax(None), [randn(9, scale=10)])
    yield OpCase("softmax_wide_inner", "Softmax(dim=1)", nn.Softmax(1),
                 [randn(2, 6, 20, 30, scale=5)])  # inner of 600: several blocks
    yield OpCase("softmax_big", "Softmax(dim=1)", nn.Softmax(1), [randn(2, 16, 32, 32, scale=5)])
    yield OpCase("softmax_big_last", "Softmax(dim=-1)", nn.Softmax(-1),
                 [randn(64, 1024, scale=5)])
    for name, call, dim in [("log_softmax_dim1", "torch.nn.LogSoftmax(dim=1)", 1),
                            ("log_softmax_last", "LogSoftmax(dim=-1)", -1),
                            ("log_softmax_none", "LogSoftmax()", None)]:
        yield OpCase(name, call, nn.LogSoftmax(dim), [s4])
    yield OpCase("log_softmax_none_3d", "LogSoftmax(dim=None)", nn.LogSoftmax(None),
                 [randn(4, 3, 5, scale=30)])

    # -- Cat
    c1 = [randn(2, 3, 4, 5), randn(2, 5, 4, 5), randn(2, 1, 4, 5)]
    yield OpCase("cat_dim1", "nn_executor.models.Cat(dim=1)", cat(1), c1)
    yield OpCase("cat_default", "Cat()", cat(1), c1[:2])
    yield OpCase("cat_dim2", "Cat(dim=2)", cat(2),
                 [randn(2, 3, 4, 5), randn(2, 3, 2, 5), randn(2, 3, 1, 5)])
    yield OpCase("cat_dim_last", "Cat(dim=-1)", cat(-1),
                 [randn(2, 3, 4, 5), randn(2, 3, 4, 2), randn(2, 3, 4, 7)])
    yield OpCase("cat_dim0", "Cat(0)", cat(0), [randn(1, 3, 2, 2), randn(3, 3, 2, 2)])
    yield OpCase("cat_one", "Cat(dim=1)", cat(1), [randn(2, 3, 4, 5)])
    yield OpCase("cat_big", "Cat(dim=1)", cat(1), [randn(2, 16, 32, 32), randn(2, 8, 32, 32)])

    # -- Identity, Flatten, Unflatten, Dropout
    i0, i1, i2 = randn(2, 3, 4, 5), randn(1, 2, 3, 3), randn(4, 6)
    yield OpCase("identity_torch", "torch.nn.Identity()", nn.Identity(), [i0])
    yield OpCase("identity_torch_args", "torch.nn.Identity(54, unused_argument1=0.1)",
                 nn.Identity(54, unused_argument1=0.1), [i0])
    yield OpCase("identity_linear_module", "torch.nn.modules.linear.Identity()", nn.Identity(),
                 [i0])
    yield OpCase("identity_two", "nn_executor.models.Identity()", identity, [i0, i1],
                 num_outputs=2)
    yield OpCase("identity_three", "Identity()", identity, [i0, i1, i2], num_outputs=3)
    f = randn(2, 3, 4, 5)
    for name, call, module in [
            ("flatten", "torch.nn.Flatten(start_dim=1, end_dim=-1)", nn.Flatten()),
            ("flatten_short", "Flatten()", nn.Flatten()),
            ("flatten_0_2", "torch.nn.Flatten(0, 2)", nn.Flatten(0, 2)),
            ("flatten_start2", "Flatten(start_dim=2)", nn.Flatten(start_dim=2)),
            ("flatten_negative", "Flatten(-3, -2)", nn.Flatten(-3, -2)),
            ("flatten_single", "Flatten(1, 1)", nn.Flatten(1, 1)),
            ("unflatten", "torch.nn.Unflatten(dim=1, unflattened_size=(3, 2))",
             nn.Unflatten(1, (3, 2))),
            ("unflatten_infer", "Unflatten(-1, [-1, 2])", nn.Unflatten(-1, [-1, 2])),
            ("dropout", "torch.nn.Dropout(p=0.5, inplace=False)", nn.Dropout()),
            ("dropout_short", "Dropout(0.1, True)", nn.Dropout(0.1, True)),
            ("dropout2d", "torch.nn.modules.dropout.Dropout2d(p=0.2, inplace=False)",
             nn.Dropout2d(0.2)),
            ("dropout1d", "Dropout1d()", nn.Dropout1d()),
            ("dropout3d", "Dropout3d(p=0)", nn.Dropout3d(p=0))]:
        inp = randn(2, 6, 4) if name.startswith(("unflatten", "dropout1d")) else f
        yield OpCase(name, call, eval_module(module), [inp])

    # -- Constant and Variable (no inputs; "t" from the state dict or the literal)
    t15 = randn(1, 5)
    yield OpCase("constant_zeros_literal", "nn_executor.models.Constant(torch.zeros((1, 5),dtype=torch.float32))",
                 constant(t15), [], params={"t": t15})
    yield OpCase("constant_legacy_tuple", "Constant(torch.tensor((1, 5),dtype=torch.float32))",
                 constant(t15), [], params={"t": t15})
    yield OpCase("constant_keyword", "Constant(t=torch.zeros((1, 5), dtype=torch.float32))",
                 constant(t15), [], params={"t": t15})
    yield OpCase("constant_legacy_no_state", "Constant(torch.tensor((1, 5),dtype=torch.float32))",
                 constant(torch.zeros(1, 5)), [])
    yield OpCase("constant_ones_no_state", "Constant(torch.ones((1, 3, 2, 2)))",
                 constant(torch.ones(1, 3, 2, 2)), [])
    yield OpCase("constant_values_no_state", "Constant(torch.tensor([[1.5, -2.0, 3.25]]))",
                 constant(torch.tensor([[1.5, -2.0, 3.25]])), [])
    t4 = randn(2, 3, 4, 4)
    yield OpCase("variable", "nn_executor.models.Variable(torch.zeros((2, 3, 4, 4),dtype=torch.float32))",
                 constant(t4), [], params={"t": t4})
    yield OpCase("variable_legacy_tuple", "Variable(t=torch.tensor((2, 3, 4, 4), dtype=torch.float32))",
                 constant(t4), [], params={"t": t4})

    # -- Pruners
    px = randn(2, 8, 5, 5, scale=3)
    w = gate_weights(8)
    yield OpCase("pruner", "nn_executor.models.Pruner(ch=8, prunable=False, activated=True, threshold=0.75, num_of_appearances=1)",
                 pruner(w), [px], params={"pruner_weight": w})
    yield OpCase("pruner_short", "Pruner(8)", pruner(w), [px], params={"pruner_weight": w})
    yield OpCase("pruner_threshold", "Pruner(ch=8, prunable=True, threshold=0.85)",
                 pruner(w, 0.85), [px], params={"pruner_weight": w})
    yield OpCase("pruner_literal_self",
                 "Pruner(ch=8, prunable=True, activated=True, threshold={self.threshold}, num_of_appearances={self.num_of_appearances})",
                 pruner(w), [px], params={"pruner_weight": w})
    yield OpCase("pruner_inactive", "Pruner(ch=8, prunable=True, activated=False)",
                 lambda t: t, [px], params={"pruner_weight": w})
    yield OpCase("pruner_legacy", "Pruner(ch=8, prunable=True, activated=True)",
                 legacy_pruner(w), [px], params={"weights": w})
    yield OpCase("pruner_legacy_short", "nn_executor.models.Pruner(8)",
                 legacy_pruner(w), [px], params={"weights": w})
    w16 = gate_weights(12).repeat(1, 2, 1, 1)[:, :16].clone()
    yield OpCase("pruner_big", "Pruner(ch=16)", pruner(w16), [randn(2, 16, 40, 40)],
                 params={"pruner_weight": w16})
    w_on = torch.tensor([0.80, 0.85, 0.90, 0.95, 0.86, 0.84, 0.88, 0.89]).reshape(1, 8, 1, 1)
    w_off = w_on - 0.2
    yield OpCase("all_or_nothing_on",
                 "nn_executor.pruning.pruners.AllOrNothingPruner(ch=8, prunable=True, activated=True, threshold=0.75, num_of_appearances=1)",
                 all_or_nothing_pruner(w_on), [px], params={"pruner_weight": w_on})
    yield OpCase("all_or_nothing_off", "AllOrNothingPruner(8)", all_or_nothing_pruner(w_off),
                 [px], params={"pruner_weight": w_off})
    yield OpCase("all_or_nothing_old_key", "AllOrNothingPruner(ch=8, prunable=True)",
                 all_or_nothing_pruner(w_on), [px], params={"weights": w_on})
    yield OpCase("all_or_nothing_threshold", "AllOrNothingPruner(ch=8, threshold=0.5)",
                 all_or_nothing_pruner(w_off, 0.5), [px], params={"pruner_weight": w_off})
