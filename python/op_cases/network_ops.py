"""Parity cases of the ops that torchvision networks traced with torch.fx need: this project's
own `nnx.` ops (Reshape, Permute, Split, Mean, Affine, StochasticDepth; docs/FORMAT_EXTENSIONS.md)
and torch.nn.LayerNorm, plus the existing ops in the forms those networks use them (Linear on a
channels-last tensor, pooling heads, squeeze-excitation broadcasts, layer-scale Variables).

Shapes come from the networks (ResNet, MobileNet, ShuffleNetV2, ConvNeXt, EfficientNet), scaled
down where the size does not matter. Every reference is what PyTorch itself computes for the
expression the exporter replaces (`x.permute(...)`, `torch.split(...)`, `x / 6`, ...).
"""
import torch
from torch import nn

from . import OpCase, module_params


def randn(*shape, scale=1.0, offset=0.0):
    return torch.randn(*shape) * scale + offset


def _module_case(name, module, inputs, call=None):
    module.eval()
    return OpCase(name, call if call is not None else repr(module), module, inputs,
                  module_params(module))


def _reshape_cases():
    def reshape(*shape):
        def fn(x):
            target = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return x.reshape(target)
        return fn

    # ResNet/MobileNet heads as traced: torch.flatten(x, 1) exported as a reshape.
    yield OpCase("reshape_flatten", "nnx.Reshape(shape=(0, -1))", reshape(0, -1),
                 [randn(2, 64, 1, 1)])
    # ShuffleNetV2 channel shuffle: (N, C, H, W) -> (N, 2, C/2, H, W) ... -> (N, C, H, W).
    yield OpCase("reshape_shuffle_groups", "nnx.Reshape(shape=(0, 2, 58, 7, 7))",
                 reshape(0, 2, 58, 7, 7), [randn(2, 116, 7, 7)])
    yield OpCase("reshape_shuffle_back", "nnx.Reshape(shape=(0, -1, 7, 7))",
                 reshape(0, -1, 7, 7), [randn(2, 58, 2, 7, 7)])
    yield OpCase("reshape_zero_copies", "nnx.Reshape(shape=(0, 0, -1))", reshape(0, 0, -1),
                 [randn(2, 24, 5, 6)])
    yield OpCase("reshape_tokens", "nnx.Reshape(shape=(-1, 49, 96))", reshape(-1, 49, 96),
                 [randn(2, 7, 7, 96)])
    yield OpCase("reshape_explicit", "nnx.Reshape(shape=[3, 8, 10])", reshape(3, 8, 10),
                 [randn(3, 2, 4, 10)])
    yield OpCase("reshape_rank8", "nnx.Reshape(shape=(0, 1, 2, 1, 3, 1, 2, -1))",
                 reshape(0, 1, 2, 1, 3, 1, 2, -1), [randn(2, 12, 2)])
    yield OpCase("reshape_rank1", "Reshape(shape=(-1,))", reshape(-1), [randn(3, 4)])


def _permute_cases():
    def permute(*dims):
        return lambda x: x.permute(*dims).contiguous()

    # ConvNeXt block: channels-last for LayerNorm and the MLP, and back.
    yield OpCase("permute_nhwc", "nnx.Permute(dims=(0, 2, 3, 1))", permute(0, 2, 3, 1),
                 [randn(2, 96, 14, 14)])
    yield OpCase("permute_nchw", "nnx.Permute(dims=(0, 3, 1, 2))", permute(0, 3, 1, 2),
                 [randn(2, 14, 14, 96)])
    yield OpCase("permute_negative", "nnx.Permute(dims=(0, -1, 1, 2))", permute(0, -1, 1, 2),
                 [randn(2, 7, 9, 24)])
    # ShuffleNetV2 channel shuffle: transpose of the group and channel dims of a 5-d view.
    yield OpCase("permute_shuffle_5d", "nnx.Permute(dims=(0, 2, 1, 3, 4))",
                 permute(0, 2, 1, 3, 4), [randn(2, 2, 58, 7, 7)])
    yield OpCase("permute_3d", "nnx.Permute(dims=(0, 2, 1))", permute(0, 2, 1),
                 [randn(2, 96, 49)])
    yield OpCase("permute_2d", "nnx.Permute(dims=[1, 0])", permute(1, 0), [randn(33, 17)])
    yield OpCase("permute_identity", "nnx.Permute(dims=(0, 1, 2, 3))", permute(0, 1, 2, 3),
                 [randn(1, 3, 4, 5)])
    yield OpCase("permute_reverse_6d", "nnx.Permute(dims=(5, 4, 3, 2, 1, 0))",
                 permute(5, 4, 3, 2, 1, 0), [randn(2, 3, 1, 4, 2, 5)])
    yield OpCase("permute_big", "Permute(dims=(0, 2, 3, 1))", permute(0, 2, 3, 1),
                 [randn(2, 64, 32, 40)])


def _split_cases():
    def split(sizes, dim):
        return lambda x: tuple(t.contiguous() for t in torch.split(x, sizes, dim=dim))

    # ShuffleNetV2 unit: x.chunk(2, dim=1).
    yield OpCase("split_shufflenet", "nnx.Split(sizes=[58, 58], dim=1)", split([58, 58], 1),
                 [randn(2, 116, 14, 14)], num_outputs=2)
    yield OpCase("split_uneven_three", "nnx.Split(sizes=[16, 24, 8], dim=1)",
                 split([16, 24, 8], 1), [randn(2, 48, 5, 5)], num_outputs=3)
    yield OpCase("split_last_dim", "nnx.Split(sizes=[3, 4], dim=-1)", split([3, 4], -1),
                 [randn(2, 3, 5, 7)], num_outputs=2)
    yield OpCase("split_dim2", "nnx.Split(sizes=(1, 4, 2), dim=2)", split([1, 4, 2], 2),
                 [randn(2, 3, 7, 5)], num_outputs=3)
    yield OpCase("split_batch", "nnx.Split(sizes=[1, 2], dim=0)", split([1, 2], 0),
                 [randn(3, 4, 5)], num_outputs=2)
    yield OpCase("split_default_dim", "nnx.Split(sizes=[2, 2])", split([2, 2], 0),
                 [randn(4, 3)], num_outputs=2)
    yield OpCase("split_empty_piece", "nnx.Split(sizes=[0, 8, 0], dim=1)", split([0, 8, 0], 1),
                 [randn(2, 8, 3, 3)], num_outputs=3)
    yield OpCase("split_one_piece", "nnx.Split(sizes=[8], dim=1)", split([8], 1),
                 [randn(2, 8, 3, 3)], num_outputs=1)


def _mean_cases():
    def mean(dims, keepdim=False):
        return lambda x: x.mean(dim=dims, keepdim=keepdim)

    # EfficientNet/MobileNetV3 squeeze-excitation and pooling heads as x.mean((2, 3)).
    yield OpCase("mean_hw", "nnx.Mean(dim=(2, 3), keepdim=False)", mean((2, 3)),
                 [randn(2, 320, 7, 7)])
    yield OpCase("mean_hw_keepdim", "nnx.Mean(dim=(2, 3), keepdim=True)", mean((2, 3), True),
                 [randn(2, 40, 14, 14, offset=3.0)])
    yield OpCase("mean_negative", "nnx.Mean(dim=(-1, -2), keepdim=True)", mean((-1, -2), True),
                 [randn(2, 24, 9, 11)])
    yield OpCase("mean_channels", "nnx.Mean(dim=(1,), keepdim=False)", mean((1,)),
                 [randn(2, 8, 5, 5)])
    yield OpCase("mean_int_dim", "nnx.Mean(dim=2)", mean((2,)), [randn(2, 8, 5, 5)])
    yield OpCase("mean_non_adjacent", "nnx.Mean(dim=(1, 3), keepdim=False)", mean((1, 3)),
                 [randn(2, 6, 5, 7)])
    yield OpCase("mean_non_adjacent_keepdim", "nnx.Mean(dim=(0, 2, 3), keepdim=True)",
                 mean((0, 2, 3), True), [randn(3, 6, 4, 5)])
    yield OpCase("mean_tokens", "nnx.Mean(dim=(1,), keepdim=False)", mean((1,)),
                 [randn(2, 49, 96)])
    yield OpCase("mean_all", "nnx.Mean(dim=(0, 1, 2, 3), keepdim=False)", mean((0, 1, 2, 3)),
                 [randn(2, 3, 4, 5)])


def _affine_cases():
    x = randn(2, 16, 7, 7, scale=4.0)
    # (call, the expression torch.fx recorded)
    forms = [
        ("affine_div6", "nnx.Affine(scale=0.16666666666666666, shift=0.0)", lambda t: t / 6),
        ("affine_add3", "nnx.Affine(scale=1.0, shift=3.0)", lambda t: t + 3),
        ("affine_rsub", "nnx.Affine(scale=-1.0, shift=3.0)", lambda t: 3 - t),
        ("affine_half", "nnx.Affine(scale=0.5, shift=0.0)", lambda t: t * 0.5),
        ("affine_sub", "nnx.Affine(scale=1.0, shift=-0.5)", lambda t: t - 0.5),
        ("affine_both", "nnx.Affine(scale=1e-05, shift=0.1)", lambda t: t * 1e-05 + 0.1),
        ("affine_defaults", "nnx.Affine()", lambda t: t.clone()),
        ("affine_int_args", "Affine(scale=2, shift=1)", lambda t: t * 2 + 1),
    ]
    for name, call, fn in forms:
        yield OpCase(name, call, fn, [x])
    yield OpCase("affine_rank2", "nnx.Affine(scale=0.125, shift=0.0)", lambda t: t / 8,
                 [randn(4, 1000)])


def _stochastic_depth_cases():
    # torchvision.ops.StochasticDepth in eval mode returns its input unchanged.
    x = randn(2, 96, 7, 7)
    yield OpCase("stochastic_depth_row", "nnx.StochasticDepth(p=0.1, mode=row)",
                 lambda t: t.clone(), [x])
    yield OpCase("stochastic_depth_batch", "nnx.StochasticDepth(p=0.0125, mode='batch')",
                 lambda t: t.clone(), [x])


def _random_affine(module):
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.uniform_(0.5, 1.5)
        if getattr(module, "bias", None) is not None:
            module.bias.uniform_(-0.5, 0.5)
    return module


def _layernorm_cases():
    LN = nn.LayerNorm
    yield _module_case("layernorm_channels_last", _random_affine(LN(96, eps=1e-6)),
                       [randn(2, 14, 14, 96)])
    yield _module_case("layernorm_prefixed", _random_affine(LN(96, eps=1e-6)),
                       [randn(2, 7, 7, 96)],
                       call="torch.nn.modules.normalization.LayerNorm((96,), eps=1e-06, "
                            "elementwise_affine=True)")
    yield _module_case("layernorm_rank2", _random_affine(LN(768, eps=1e-6)), [randn(4, 768)])
    yield _module_case("layernorm_two_dims", _random_affine(LN((4, 5))), [randn(2, 3, 4, 5)])
    yield _module_case("layernorm_no_affine", LN(32, elementwise_affine=False),
                       [randn(2, 5, 32)])
    yield _module_case("layernorm_offset", _random_affine(LN(64)),
                       [randn(3, 64, scale=0.1, offset=10.0)])
    yield _module_case("layernorm_short", _random_affine(LN(96, eps=1e-6)),
                       [randn(1, 3, 3, 96)], call="LayerNorm(96, eps=1e-06)")
    yield _module_case("layernorm_list_shape", _random_affine(LN([6, 7])),
                       [randn(2, 6, 7)], call="LayerNorm([6, 7])")
    # Without a state dict: ones and zeros, as reset_parameters() leaves them.
    x = randn(2, 4, 4, 48)
    yield OpCase("layernorm_default_init", "LayerNorm((48,), eps=1e-06, elementwise_affine=True)",
                 LN(48, eps=1e-6).eval(), [x])


def _existing_ops_in_networks():
    # ConvNeXt MLP: Linear over the channels of an (N, H, W, C) tensor.
    lin = nn.Linear(96, 384)
    yield _module_case("linear_channels_last", lin, [randn(2, 14, 14, 96)])
    yield _module_case("linear_channels_last_down", nn.Linear(384, 96), [randn(2, 7, 7, 384)])
    # Heads and pools.
    yield _module_case("adaptive_avgpool_7", nn.AdaptiveAvgPool2d((7, 7)), [randn(2, 16, 10, 10)])
    yield _module_case("adaptive_avgpool_6_from_13", nn.AdaptiveAvgPool2d(6),
                       [randn(1, 8, 13, 13)])
    yield _module_case("maxpool_ceil_squeezenet",
                       nn.MaxPool2d(kernel_size=3, stride=2, dilation=1, ceil_mode=True),
                       [randn(1, 4, 55, 55)])
    yield _module_case("avgpool_ceil_resnet_d",
                       nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                       [randn(1, 4, 7, 7)],
                       call="AvgPool2d(kernel_size=2, stride=2, ceil_mode=True, "
                            "count_include_pad=False)")
    # MobileNet/EfficientNet blocks: grouped convs, squeeze-excitation scale, layer scale.
    yield _module_case("conv_depthwise_mobilenet", nn.Conv2d(32, 32, 3, 2, 1, groups=32,
                                                             bias=False), [randn(1, 32, 15, 15)])
    yield OpCase("mul_squeeze_excitation", "Mul(num=2)", torch.mul,
                 [randn(2, 24, 7, 7), torch.rand(2, 24, 1, 1)])
    gamma = randn(96, 1, 1, scale=1e-6)
    yield OpCase("variable_layer_scale",
                 "Variable(torch.zeros((96, 1, 1), dtype=torch.float32))",
                 lambda: gamma.clone(), [], params={"t": gamma})
    yield OpCase("mul_layer_scale", "Mul(num=2)", torch.mul, [gamma, randn(2, 96, 7, 7)])
    yield OpCase("cat_rank5_dim2", "Cat(dim=2)", lambda *xs: torch.cat(xs, 2),
                 [randn(2, 3, 4, 5, 2), randn(2, 3, 1, 5, 2)])
    yield OpCase("cat_rank2", "Cat(dim=1)", lambda *xs: torch.cat(xs, 1),
                 [randn(2, 3), randn(2, 5)])
    yield OpCase("softmax_last", "Softmax(dim=-1)", nn.Softmax(-1), [randn(2, 3, 49, 49)])
    yield _module_case("gelu_tanh_channels_last", nn.GELU(approximate="tanh"),
                       [randn(2, 7, 7, 32)])


def cases():
    torch.manual_seed(0)
    yield from _reshape_cases()
    yield from _permute_cases()
    yield from _split_cases()
    yield from _mean_cases()
    yield from _affine_cases()
    yield from _stochastic_depth_cases()
    yield from _layernorm_cases()
    yield from _existing_ops_in_networks()
