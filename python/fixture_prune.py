"""Channel-pruning fixtures: the original package's pruning cases, gates set to channel masks.
`generate(folder)` writes one sub-folder per case (as fixture_models.Case does: model.json,
model.pth, in0.npy, ref0.npy = the gated network's output from nnx_ref) plus prune.json:
{"convs": [[in, out], ...]} the Conv2d channels expected after `gates` pruning, in node order.
"""
import json
import os

import torch
from torch import nn

from fixture_models import Case, build, save_list, write_json
import nnx_ref.ops as ops

P = "nn_executor.models."


def conv(cin, cout, k=3, src=None):
    pad = k // 2
    call = f"torch.nn.Conv2d({cin}, {cout}, {k}, padding={pad})"
    return [call, [[cin], [cout]]] + [[src if src else [-1, 0]]]


def gate(ch, prunable=True, src=None):
    return [P + f"Pruner({ch}, prunable={prunable})", [[ch], [ch]]] + [[src if src else [-1, 0]]]


def one(call, ch, src=None):
    return [call, [[ch], [ch]]] + [[src if src else [-1, 0]]]


def add(ch, a, b):
    return [P + "Add(num=2)", [[ch, ch], [ch]], [a, b]]


def arch(cin, cout, layers):
    return {"inputs_channels": [cin], "outputs_channels": [cout], "layers": layers,
            "outputs": [[-1, 0, 0]]}


def randomise(ex, masks, seed):
    """BatchNorm gets informative statistics, biases are non-zero, gates are the masks (in
    Pruner order)."""
    gen = torch.Generator().manual_seed(seed)
    pruners = [m for m in ex.children() if isinstance(m, ops.Pruner)]
    assert len(pruners) == len(masks), (len(pruners), len(masks))
    with torch.no_grad():
        for m in ex.children():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.5)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)
        for m, mask in zip(pruners, masks):
            m.weight.copy_(torch.tensor(mask, dtype=torch.float32).reshape(1, -1, 1, 1))


def add_case(root, name, a, masks, convs, cin, seed):
    c = Case(root, name)
    write_json(c.path("model.json"), a)
    ex = build(a, seed)
    randomise(ex, masks, seed)
    save_list(ex, c.path("model.pth"))
    x = torch.randn((2, cin, 8, 8), generator=torch.Generator().manual_seed(seed))
    c.finish("model.json", "model.pth", [x], tol=1e-5)
    write_json(c.path("prune.json"), {"convs": convs})


def generate(folder):
    os.makedirs(folder, exist_ok=True)
    bn = lambda ch, src=None: one(f"torch.nn.BatchNorm2d({ch})", ch, src)
    relu = lambda ch, src=None: one("torch.nn.ReLU()", ch, src)

    # conv - gate - conv - non-prunable gate
    add_case(folder, "chain", arch(5, 5, [conv(5, 3), gate(3), conv(3, 5), gate(5, False)]),
             [[1, 1, 0], [1] * 5], [[5, 3 - 1], [2, 5]], 5, 1)

    # Residual blocks. 1-3: x. 4-7: gate after BN+ReLU (zeros leave). 8-12: gate before BN
    # (constants leave into a 1x1 conv's bias). 13-17: a branch gated off entirely: its last
    # conv becomes a constant that the Add keeps, and a zero-padded conv follows.
    m1 = [1, 0, 1, 0, 1, 1, 0, 1]
    m2 = [0, 1, 1, 1, 0, 1, 1, 0]
    layers = [conv(4, 8), bn(8), relu(8),                                   # 1-3
              conv(8, 8), bn(8), relu(8), gate(8), conv(8, 8), add(8, [3, 0], [-1, 0]),  # 4-9
              conv(8, 8), gate(8), bn(8), relu(8), conv(8, 8, 1), add(8, [9, 0], [-1, 0]),  # 10-15
              conv(8, 8), gate(8), conv(8, 8), bn(8), add(8, [15, 0], [-1, 0]),  # 16-20
              conv(8, 6)]                                                   # 21
    add_case(folder, "residual", arch(4, 6, layers), [m1, m2, [0] * 8],
             [[4, 8], [8, 5], [5, 8], [8, 5], [5, 8], [8, 6]], 4, 2)

    # Nested residual stacks: the trunk is gated (and so is every branch end that joins it),
    # f = a + ((a + b) + d).
    t = [1, 1, 0, 1, 0, 1, 1, 1]
    layers = [conv(4, 8), gate(8),                                         # 1-2 a
              conv(8, 8), relu(8), gate(8), conv(8, 8), gate(8),           # 3-7 b
              add(8, [2, 0], [7, 0]),                                      # 8 c
              conv(8, 8), relu(8), gate(8), conv(8, 8), gate(8),           # 9-13 d
              add(8, [8, 0], [13, 0]),                                     # 14 e
              add(8, [2, 0], [14, 0]),                                     # 15 f
              conv(8, 3)]                                                  # 16
    add_case(folder, "nested_residual", arch(4, 3, layers),
             [t, m1, t, m2, t], [[4, 6], [6, 5], [5, 6], [6, 5], [5, 6], [6, 3]], 4, 3)

    # Parallel branches merged by Cat (offsets per input), then BN, ReLU and a 1x1 conv (the
    # constants BN makes of gated channels fold into its bias).
    layers = [conv(3, 4), gate(4),
              conv(3, 6, src=[0, 0]), gate(6),
              [P + "Cat(dim=1)", [[4, 6], [10]], [[2, 0], [4, 0]]],
              bn(10), relu(10), conv(10, 5, 1)]
    add_case(folder, "cat", arch(3, 5, layers), [[1, 0, 1, 1], [0, 1, 1, 0, 1, 1]],
             [[3, 3], [3, 4], [7, 5]], 3, 4)

    # Every channel gated off: one zero channel stays so that the output keeps its size.
    layers = [conv(3, 4), gate(4), conv(4, 4), gate(4), conv(4, 2)]
    add_case(folder, "all_off", arch(3, 2, layers), [[0] * 4, [0] * 4],
             [[3, 1], [1, 1], [1, 2]], 3, 5)

    # Gates that are not 0/1 fold into BN through ReLU and MaxPool; a gate on the network input
    # (which is never pruned) becomes a Mul; a channel owns 4x4 features of the Linear.
    layers = [gate(3), conv(3, 6), bn(6), relu(6), gate(6),
              one("torch.nn.MaxPool2d(2)", 6), ["torch.nn.Flatten()", [[6], [96]], [[-1, 0]]],
              ["torch.nn.Linear(96, 5)", [[96], [5]], [[-1, 0]]]]
    add_case(folder, "fold_flatten_linear", arch(3, 5, layers),
             [[0.9, 0, 1], [0.9, 0, 1.1, 0.8, 0, 1]], [[3, 4]], 3, 6)

    # An AllOrNothingPruner turns a residual branch off: its 1x1 conv becomes a constant.
    aon = "nn_executor.pruning.pruners.AllOrNothingPruner(4, prunable=True)"
    layers = [conv(3, 8), bn(8), relu(8),
              conv(8, 4), one(aon, 4), conv(4, 8, 1), add(8, [3, 0], [-1, 0]), conv(8, 2)]
    add_case(folder, "all_or_nothing", arch(3, 2, layers), [[0.5, 0.9, 0.6, 0.7]],
             [[3, 8], [8, 2]], 3, 7)
