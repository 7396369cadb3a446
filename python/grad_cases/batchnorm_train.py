"""BatchNorm2d in training mode: normalises with the batch's statistics (the gradient flows
through them) and updates running_mean, running_var (unbiased) and num_batches_tracked.

Each case's module is in training mode; its params are the state before the forward, so a
generator must run the forward once on a module loaded with them (the buffers after that
forward are the after_<name> references).
"""
import torch
import torch.nn as nn

from op_cases import OpCase, module_params


def _case(name, module, shape=None, inputs=None, seed_stats=True):
    with torch.no_grad():
        if module.affine:
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
        if module.track_running_stats and seed_stats:
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(3)
    module.train()
    xs = inputs if inputs is not None else [torch.randn(*shape)]
    return OpCase(name, repr(module), module, xs, module_params(module), training=True)


def cases():
    B = nn.BatchNorm2d
    yield _case("bn_train_basic", B(3), (2, 3, 4, 5))
    yield _case("bn_train_fresh", B(4), (4, 4, 3, 3), seed_stats=False)
    yield _case("bn_train_batch1", B(4), (1, 4, 5, 5))
    yield _case("bn_train_1x1_planes", B(6), (5, 6, 1, 1))
    yield _case("bn_train_momentum_none", B(4, momentum=None), (3, 4, 3, 4))
    yield _case("bn_train_momentum_none_fresh", B(4, momentum=None), (3, 4, 3, 4),
                seed_stats=False)
    yield _case("bn_train_momentum_half", B(5, momentum=0.5), (2, 5, 4, 3))
    yield _case("bn_train_eps", B(3, eps=1e-3), (2, 3, 3, 3))
    yield _case("bn_train_no_affine", B(3, affine=False), (2, 3, 5, 4))
    yield _case("bn_train_no_stats", B(4, track_running_stats=False), (2, 4, 4, 4))
    yield _case("bn_train_no_stats_no_affine", B(3, affine=False, track_running_stats=False),
                (3, 3, 2, 5))
    x = torch.randn(2, 3, 6, 6) * 3 + 5  # offset data: the variance must be centred
    yield _case("bn_train_offset", B(3), inputs=[x])
    yield _case("bn_train_two_values", B(2), (2, 2, 1, 1))
    yield _case("bn_train_big", B(32), (8, 32, 16, 16))
