"""Whole-network fixtures of the ops torchvision networks need (docs/FORMAT_EXTENSIONS.md):
a ConvNeXt block (Permute -> LayerNorm -> Linear on channels-last -> Permute, layer scale,
StochasticDepth) and a ShuffleNetV2 unit with squeeze-excitation and a classifier head (Split,
Cat, Reshape/Permute channel shuffle, Mean, Affine, Flatten -> Linear).

`generate(folder)` (called by gen_fixtures.py with <build>/fixtures/network_ops) writes one
sub-folder per case in the layout of fixture_models.py (case.json, model.json, model.pth,
in*.npy, ref*.npy). Each description declares, as channels, dim 1 of the tensor at each port
(the exporter's convention), so past a channels-last Permute it declares H. The references are
the reference executor's outputs, which are first checked here against the same network
written directly in PyTorch.
"""
import os

import torch
import torch.nn.functional as F

from fixture_models import Case, build, randomise, save_list, write_json

TOL = 1e-4


def convnext_arch(c, h):
    """A ConvNeXt block and a small head for C channels and H x H inputs."""
    return {
        "inputs_channels": [c],
        "outputs_channels": [10],
        "outputs": [[15, 0, 0]],
        "layers": [
            [f"Conv2d({c}, {c}, kernel_size=(7, 7), stride=(1, 1), padding=(3, 3), groups={c})",
             [[c], [c]], [[-1, 0]]],
            ["nnx.Permute(dims=(0, 2, 3, 1))", [[c], [h]], [[-1, 0]]],
            [f"torch.nn.modules.normalization.LayerNorm(({c},), eps=1e-06, "
             f"elementwise_affine=True)", [[h], [h]], [[-1, 0]]],
            [f"Linear(in_features={c}, out_features={4 * c}, bias=True)", [[h], [h]], [[-1, 0]]],
            ["GELU(approximate='none')", [[h], [h]], [[-1, 0]]],
            [f"Linear(in_features={4 * c}, out_features={c}, bias=True)", [[h], [h]], [[-1, 0]]],
            ["nnx.Permute(dims=(0, 3, 1, 2))", [[h], [c]], [[-1, 0]]],
            [f"Variable(torch.zeros(({c}, 1, 1), dtype=torch.float32))", [[], [1]], []],
            ["Mul(num=2)", [[c, 1], [c]], [[-2, 0], [-1, 0]]],
            ["nnx.StochasticDepth(p=0.1, mode=row)", [[c], [c]], [[-1, 0]]],
            ["Add(num=2)", [[c, c], [c]], [[0, 0], [-1, 0]]],
            ["nnx.Mean(dim=(2, 3), keepdim=False)", [[c], [c]], [[-1, 0]]],
            [f"LayerNorm(({c},), eps=1e-06, elementwise_affine=True)", [[c], [c]], [[-1, 0]]],
            ["Dropout(p=0.2, inplace=False)", [[c], [c]], [[-1, 0]]],
            [f"Linear(in_features={c}, out_features=10, bias=True)", [[c], [10]], [[-1, 0]]],
        ],
    }


def convnext_torch(ex, x):
    """The same network as torchvision's CNBlock computes it (eval mode)."""
    m = [ex.layer_module(layer.u) for layer in ex.graph.layers]
    y = m[0](x).permute(0, 2, 3, 1)
    y = F.layer_norm(y, m[2].normalized_shape, m[2].weight, m[2].bias, m[2].eps)
    y = F.linear(F.gelu(F.linear(y, m[3].weight, m[3].bias)), m[5].weight, m[5].bias)
    y = m[7].t * y.permute(0, 3, 1, 2)
    y = x + y
    y = y.mean((2, 3))
    y = F.layer_norm(y, m[12].normalized_shape, m[12].weight, m[12].bias, m[12].eps)
    return (F.linear(y, m[14].weight, m[14].bias),)


def shufflenet_arch(c, h):
    """A ShuffleNetV2 unit (2c channels, H x H), a squeeze-excitation-like scale
    x.mean((2, 3)) / 6 + 0.5, and a pooled classifier head."""
    half, pooled = c, 2 * c * 9
    return {
        "inputs_channels": [2 * c],
        "outputs_channels": [5, 2 * c],
        "outputs": [[17, 0, 0], [11, 0, 1]],
        "layers": [
            [f"nnx.Split(sizes=[{half}, {half}], dim=1)", [[2 * c], [half, half]], [[-1, 0]]],
            [f"Conv2d({half}, {half}, kernel_size=(1, 1), stride=(1, 1), bias=False)",
             [[half], [half]], [[-1, 1]]],
            [f"BatchNorm2d({half})", [[half], [half]], [[-1, 0]]],
            ["ReLU(inplace=True)", [[half], [half]], [[-1, 0]]],
            [f"Conv2d({half}, {half}, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
             f"groups={half}, bias=False)", [[half], [half]], [[-1, 0]]],
            [f"Conv2d({half}, {half}, kernel_size=(1, 1), stride=(1, 1))", [[half], [half]],
             [[-1, 0]]],
            ["Hardswish()", [[half], [half]], [[-1, 0]]],
            ["Cat(dim=1)", [[half, half], [2 * c]], [[1, 0], [-1, 0]]],
            [f"nnx.Reshape(shape=(0, 2, {half}, {h}, {h}))", [[2 * c], [2]], [[-1, 0]]],
            ["nnx.Permute(dims=(0, 2, 1, 3, 4))", [[2], [half]], [[-1, 0]]],
            [f"nnx.Reshape(shape=(0, -1, {h}, {h}))", [[half], [2 * c]], [[-1, 0]]],
            ["nnx.Mean(dim=(-1, -2), keepdim=True)", [[2 * c], [2 * c]], [[-1, 0]]],
            ["nnx.Affine(scale=0.16666666666666666, shift=0.5)", [[2 * c], [2 * c]], [[-1, 0]]],
            ["Mul(num=2)", [[2 * c, 2 * c], [2 * c]], [[-3, 0], [-1, 0]]],
            ["AdaptiveAvgPool2d(output_size=(3, 3))", [[2 * c], [2 * c]], [[-1, 0]]],
            ["Flatten(start_dim=1, end_dim=-1)", [[2 * c], [pooled]], [[-1, 0]]],
            [f"Linear(in_features={pooled}, out_features=5, bias=True)", [[pooled], [5]],
             [[-1, 0]]],
        ],
    }


def shufflenet_torch(ex, x):
    m = [ex.layer_module(layer.u) for layer in ex.graph.layers]
    a, b = x.chunk(2, dim=1)
    b = F.hardswish(m[5](m[4](F.relu(m[2](m[1](b))))))
    y = torch.cat((a, b), dim=1)
    n, ch, hh, ww = y.shape
    y = y.view(n, 2, ch // 2, hh, ww).transpose(1, 2).contiguous().view(n, -1, hh, ww)
    s = y.mean((2, 3), keepdim=True) / 6 + 0.5
    z = torch.flatten(F.adaptive_avg_pool2d(y * s, (3, 3)), 1)
    return (F.linear(z, m[16].weight, m[16].bias), y)


def add_case(root, name, arch, torch_fn, x, seed):
    c = Case(root, name)
    write_json(c.path("model.json"), arch)
    ex = build(arch, seed)
    randomise(ex, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # LayerNorm's ones and zeros would hide a swapped weight and bias
        for module in ex.children():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    save_list(ex, c.path("model.pth"))
    outs = c.finish("model.json", "model.pth", [x], tol=TOL)
    with torch.no_grad():
        expected = torch_fn(ex, x)
    for got, want in zip(outs, expected):
        err = (got - want).abs().max() / max(1.0, float(want.abs().max()))
        if not err <= 1e-5:
            raise AssertionError(f"fixture {name}: nnx_ref and PyTorch differ by {err}")


def generate(folder):
    os.makedirs(folder, exist_ok=True)
    gen = torch.Generator().manual_seed(5)
    # H == C: a Linear on the channels-last tensor sees in_features as dim 1 and must not
    # take it for its features.
    add_case(folder, "convnext_block_h_equals_c", convnext_arch(8, 8), convnext_torch,
             torch.randn((2, 8, 8, 8), generator=gen), 1)
    add_case(folder, "convnext_block", convnext_arch(16, 6), convnext_torch,
             torch.randn((2, 16, 6, 6), generator=gen), 2)
    add_case(folder, "shufflenet_unit_se", shufflenet_arch(8, 6), shufflenet_torch,
             torch.randn((2, 16, 6, 6), generator=gen), 3)
