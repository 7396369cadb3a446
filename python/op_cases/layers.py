"""Parity cases of the layer ops: Conv2d, Linear, BatchNorm2d, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d and Upsample (with UpsamplingNearest2d / UpsamplingBilinear2d).

Each case builds the PyTorch module, and gives the constructor string a description would hold:
PyTorch's own repr where `call` is None, else a hand-written short form of the same module.
"""
import torch
import torch.nn as nn

from op_cases import OpCase, module_params


def _case(name, module, *shapes, call=None, tol=1e-4, inputs=None):
    module.eval()
    xs = inputs if inputs is not None else [torch.randn(*s) for s in shapes]
    return OpCase(name, call if call is not None else repr(module), module, xs,
                  module_params(module), tol)


def _conv_cases():
    C = nn.Conv2d
    yield _case("conv_repr", C(3, 5, 3, padding=1), (2, 3, 8, 8))
    yield _case("conv_short", C(3, 64, 3, padding=1), (1, 3, 10, 10),
                call="torch.nn.Conv2d(3,64,3,padding=1)")
    yield _case("conv_kwargs_lists",
                C(in_channels=3, out_channels=4, kernel_size=[3, 3], stride=[1, 2],
                  padding=[1, 0]), (1, 3, 7, 8),
                call="Conv2d(in_channels=3, out_channels=4, kernel_size=[3, 3], stride=[1, 2], "
                     "padding=[1, 0])")
    yield _case("conv_factory_kwargs", C(3, 4, 3), (1, 3, 6, 6),
                call="Conv2d(3, 4, 3, device=None, dtype=torch.float32)")
    yield _case("conv_nopad_stride2", C(4, 6, 3, stride=2), (1, 4, 9, 11))
    yield _case("conv_rect_kernel", C(4, 6, (3, 5), stride=(2, 1), padding=(1, 2)), (2, 4, 7, 9))
    yield _case("conv_dilation", C(4, 6, 3, padding=2, dilation=2), (1, 4, 10, 10))
    yield _case("conv_dilation_rect", C(3, 5, (2, 3), padding=(1, 3), dilation=(2, 3)),
                (2, 3, 8, 11))
    yield _case("conv_stride_gt_kernel", C(3, 4, 1, stride=3), (1, 3, 10, 8))
    yield _case("conv_groups", C(8, 12, 3, padding=1, groups=4), (2, 8, 6, 6))
    yield _case("conv_groups_wide", C(64, 64, 3, padding=1, groups=2), (1, 64, 9, 9))
    yield _case("conv_depthwise", C(8, 8, 3, padding=1, groups=8, bias=False), (2, 8, 7, 7))
    yield _case("conv_depthwise_stride2", C(6, 6, 3, stride=2, padding=1, groups=6), (1, 6, 9, 10))
    yield _case("conv_depthwise_5x5_dil", C(4, 4, 5, padding=4, dilation=2, groups=4),
                (1, 4, 8, 8))
    # Depthwise layers on small planes (rows of at most 14 outputs) run 16 channels at a time
    # channels-last (AVX-512): channels off the 16 (37 = 2 x 16 + 5) over a batch with a 196-pixel
    # plane's last 4 outputs; input rows past 16 columns (27 -> 14 at stride 2); a 7x7 kernel
    # (49 taps) on a rectangular plane; an even kernel's uneven 'same' padding; a 3x5 kernel
    # at stride (1, 2).
    yield _case("conv_dw_small_tail", C(37, 37, 5, padding=2, groups=37), (3, 37, 14, 14))
    yield _case("conv_dw_small_wide_input", C(20, 20, 3, stride=2, padding=1, groups=20),
                (2, 20, 27, 28))
    yield _case("conv_dw_small_7x7", C(18, 18, 7, padding=3, groups=18, bias=False),
                (1, 18, 9, 12))
    yield _case("conv_dw_small_same_even", C(17, 17, 4, padding="same", groups=17), (1, 17, 9, 9))
    yield _case("conv_dw_small_rect", C(24, 24, (3, 5), stride=(1, 2), padding=(1, 2), groups=24),
                (2, 24, 8, 23))
    # And wider rows with 16+ channels (5x5 up to 56 outputs a row, 3x3 of stride 1 up to 28),
    # by the kernels for square 3x3 and 5x5 windows: runs of 8 outputs and every tail length,
    # stride 2 with uneven padding, padding past the kernel's reach, no padding.
    yield _case("conv_dw_cl_5x5_s1", C(20, 20, 5, padding=2, groups=20), (2, 20, 9, 25))
    yield _case("conv_dw_cl_5x5_s2", C(17, 17, 5, stride=2, padding=(1, 2), groups=17, bias=False),
                (1, 17, 13, 45))
    yield _case("conv_dw_cl_3x3_s1", C(33, 33, 3, padding=1, groups=33), (1, 33, 6, 18))
    yield _case("conv_dw_cl_3x3_big_pad", C(16, 16, 3, padding=3, groups=16), (1, 16, 5, 17))
    yield _case("conv_dw_cl_3x3_nopad", C(16, 16, 3, groups=16), (2, 16, 4, 30))
    # Stride-2 3x3 and 5x5 depthwise layers on rows of 48+ columns read their input in place
    # (AVX-512): an odd count of output rows (rows past the last block of 4), a tail vector,
    # odd widths, no padding, uneven padding.
    yield _case("conv_dw_s2_wide_3x3", C(5, 5, 3, stride=2, padding=1, groups=5), (2, 5, 23, 50))
    yield _case("conv_dw_s2_wide_5x5", C(3, 3, 5, stride=2, padding=2, groups=3, bias=False),
                (1, 3, 17, 67))
    yield _case("conv_dw_s2_wide_nopad", C(4, 4, 3, stride=2, groups=4), (1, 4, 12, 49))
    yield _case("conv_dw_s2_wide_rect_pad", C(4, 4, 3, stride=2, padding=(0, 1), groups=4),
                (1, 4, 9, 64))
    # Stride 1 the same: odd row counts, tail vectors, no padding, padding past the kernel's
    # reach (outputs wholly in it), uneven padding.
    yield _case("conv_dw_s1_wide_3x3", C(5, 5, 3, padding=1, groups=5), (2, 5, 23, 50))
    yield _case("conv_dw_s1_wide_5x5", C(3, 3, 5, padding=2, groups=3, bias=False), (1, 3, 11, 67))
    yield _case("conv_dw_s1_wide_nopad", C(4, 4, 3, groups=4), (1, 4, 12, 49))
    yield _case("conv_dw_s1_wide_big_pad", C(2, 2, 3, padding=3, groups=2), (1, 2, 6, 48))
    yield _case("conv_dw_s1_wide_rect_pad", C(4, 4, 5, padding=(0, 2), groups=4), (1, 4, 9, 64))
    yield _case("conv_depthwise_mult8", C(2, 16, 3, padding=1, groups=2), (1, 2, 6, 6))
    yield _case("conv_single_in_channel", C(1, 3, 3, padding=1), (2, 1, 6, 7))
    yield _case("conv_single_in_channel_wide", C(1, 8, 3), (1, 1, 6, 7))
    yield _case("conv_nobias", C(3, 5, 3, bias=False), (1, 3, 6, 6))
    # 3x3 stride-1 layers with enough channels and 1024+ tiles of 2x2 outputs take the Winograd
    # path: odd and even output sizes (partial tiles), every padding, batches, no bias, several
    # tile blocks.
    yield _case("conv_wino_pad1_odd", C(16, 24, 3, padding=1), (1, 16, 63, 67))
    yield _case("conv_wino_valid", C(20, 16, 3), (2, 20, 48, 47))
    yield _case("conv_wino_rect_pad", C(16, 16, 3, padding=(2, 0), bias=False), (1, 16, 61, 70))
    yield _case("conv_wino_same", C(32, 16, 3, padding="same"), (3, 32, 38, 38))
    yield _case("conv_wino_many_blocks", C(64, 96, 3, padding=1), (1, 64, 80, 104))
    yield _case("conv_wino_reflect", C(16, 16, 3, padding=1, padding_mode="reflect"),
                (1, 16, 64, 66))
    yield _case("conv_same_odd_kernel", C(3, 4, 3, padding="same"), (1, 3, 6, 7))
    yield _case("conv_same_even_kernel", C(3, 4, 4, padding="same"), (2, 3, 7, 6))
    yield _case("conv_same_rect", C(3, 4, (2, 5), padding="same", bias=False), (1, 3, 6, 8))
    yield _case("conv_same_dilated", C(3, 4, 2, padding="same", dilation=3), (1, 3, 7, 7))
    yield _case("conv_same_quoted", C(3, 4, 4, padding="same"), (1, 3, 5, 5),
                call="Conv2d(3, 4, 4, padding='same')")
    yield _case("conv_valid", C(3, 4, 3, padding="valid"), (1, 3, 6, 5))
    for mode in ("reflect", "replicate", "circular"):
        yield _case(f"conv_{mode}", C(3, 4, 3, padding=(1, 2), padding_mode=mode), (2, 3, 6, 7))
        yield _case(f"conv_{mode}_same_even", C(2, 3, 4, padding="same", padding_mode=mode),
                    (1, 2, 5, 6))
    yield _case("conv_reflect_stride_dil",
                C(3, 4, 3, stride=2, padding=2, dilation=2, padding_mode="reflect"), (1, 3, 9, 8))
    yield _case("conv_1x1", C(16, 8, 1), (2, 16, 5, 7))
    yield _case("conv_1x1_stride2", C(16, 8, 1, stride=2), (1, 16, 7, 7))
    yield _case("conv_1x1_padded", C(8, 8, 1, padding=1), (1, 8, 4, 5))
    yield _case("conv_1x1_grouped", C(16, 32, 1, groups=4), (1, 16, 6, 6))
    # Several output bands per image: exercises the im2col tiling.
    yield _case("conv_banded", C(32, 64, 3, padding=1), (1, 32, 24, 20))
    yield _case("conv_banded_5x5", C(64, 16, 5, padding=2), (1, 64, 12, 12))
    # GEMM blocking edges: more than 96 output channels, a 1x1 plane wider than 2048 columns.
    yield _case("conv_1x1_wide_plane", C(8, 100, 1), (1, 8, 48, 48))
    yield _case("conv_many_out_channels", C(16, 130, 3, padding=1, bias=False), (1, 16, 9, 7))
    yield _case("conv_batch3_rect_input", C(3, 8, 3, stride=(1, 2), padding=1), (3, 3, 5, 13))
    # A batch whose padded channels-last copy passes 2 MB, each image's outweighing the weights:
    # the indirect convolution takes it an image at a time.
    yield _case("conv_indirect_per_image", C(64, 16, 3, stride=2, padding=1), (8, 64, 32, 32))
    yield _case("conv_kernel_equals_input", C(3, 4, (5, 4)), (2, 3, 5, 4))
    # Few input channels and rows of 16+ outputs take the direct "stem" path (stem_conv.h):
    # strides 1-3 (phase-split copies), dilation, asymmetric 'same' padding, output channels
    # off its 12-row panels, rows ending in a part of a 32-pixel tile or of its second vector.
    yield _case("conv_stem_resnet", C(3, 64, 7, stride=2, padding=3, bias=False), (2, 3, 64, 70))
    yield _case("conv_stem_7x7", C(3, 20, 7, padding=3), (1, 3, 21, 45))
    yield _case("conv_stem_3x3_s2", C(3, 32, 3, stride=2, padding=1), (1, 3, 40, 66))
    yield _case("conv_stem_dilated_rect",
                C(2, 13, (3, 5), stride=(2, 3), padding=(2, 4), dilation=(2, 2)), (2, 2, 17, 70))
    yield _case("conv_stem_gray_same_even", C(1, 16, 4, padding="same", bias=False),
                (1, 1, 9, 40))
    yield _case("conv_stem_4ch_stride3", C(4, 24, 3, stride=3), (1, 4, 12, 100))
    yield _case("conv_stem_reflect", C(3, 16, 5, padding=2, padding_mode="reflect"),
                (1, 3, 10, 36))


def _linear_cases():
    L = nn.Linear
    yield _case("linear_rank2", L(10, 5), (4, 10))
    yield _case("linear_short", L(10, 5), (3, 10), call="torch.nn.Linear(10, 5)")
    yield _case("linear_nobias_rank4", L(10, 5, bias=False), (2, 3, 4, 10))
    yield _case("linear_rank1", L(7, 3), (7,))
    yield _case("linear_batch1_wide", L(64, 100), (1, 64))
    yield _case("linear_many_rows", L(64, 40), (33, 64))
    # One and two rows over the threads (the matrix-vector path): features off the 16-blocks.
    yield _case("linear_two_rows_threads", L(512, 300), (2, 512))
    yield _case("linear_one_row_nobias_threads", L(600, 130, bias=False), (1, 600))
    yield _case("linear_kwargs", L(300, 200), (8, 300),
                call="Linear(in_features=300, out_features=200, bias=True)")


def _random_bn(module):
    with torch.no_grad():
        if module.affine:
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
        if module.track_running_stats:
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(7)
    return module


def _batchnorm_cases():
    B = nn.BatchNorm2d
    yield _case("bn_repr", _random_bn(B(5)), (2, 5, 4, 4))
    yield _case("bn_short", _random_bn(B(5)), (1, 5, 3, 6), call="torch.nn.BatchNorm2d(5)")
    yield _case("bn_eps_momentum_none", _random_bn(B(4, eps=1e-3, momentum=None)), (2, 4, 3, 3))
    yield _case("bn_no_affine", _random_bn(B(3, affine=False)), (2, 3, 5, 4))
    yield _case("bn_batch_stats", _random_bn(B(3, track_running_stats=False)), (3, 3, 4, 5))
    yield _case("bn_batch_stats_no_affine", B(4, affine=False, track_running_stats=False),
                (2, 4, 3, 3))
    x = torch.randn(2, 3, 4, 4) * 3 + 5  # offset data: the variance must be centred
    yield _case("bn_batch_stats_offset", _random_bn(B(3, track_running_stats=False)),
                inputs=[x])


def _maxpool_cases():
    M = nn.MaxPool2d
    yield _case("maxpool_repr", M(2), (2, 3, 8, 8))
    yield _case("maxpool_short", M(kernel_size=2, stride=2), (1, 2, 6, 6),
                call="torch.nn.MaxPool2d(kernel_size=2,stride=2)")
    yield _case("maxpool_3_1_1", M(3, 1, 1), (1, 3, 5, 6), call="MaxPool2d(3, 1, 1)")
    yield _case("maxpool_odd_input", M(3, 2), (1, 2, 7, 9))
    yield _case("maxpool_ceil", M(3, stride=2, padding=1, ceil_mode=True), (1, 2, 8, 8))
    # The ceil_mode window that would start in the right padding is dropped: 5 -> 3, not 4.
    yield _case("maxpool_ceil_drop_last", M(2, 2, padding=1, ceil_mode=True), (1, 2, 5, 5))
    yield _case("maxpool_ceil_no_pad", M(2, ceil_mode=True), (1, 2, 5, 7))
    yield _case("maxpool_dilation", M(3, stride=1, padding=1, dilation=2), (1, 2, 9, 9))
    yield _case("maxpool_rect", M((2, 3), stride=(1, 2), padding=(1, 1), dilation=(1, 2),
                                  ceil_mode=True), (2, 2, 6, 9))
    yield _case("maxpool_single_tuple", M(kernel_size=(2,)), (1, 2, 5, 5),
                call="MaxPool2d(kernel_size=(2,))")
    yield _case("maxpool_explicit_none_stride", M(3, stride=None), (1, 1, 7, 7),
                call="MaxPool2d(3, stride=None, return_indices=False)")
    # ResNet's stem pool (the phased stride-2 path), NaN in the left padding's window and in the
    # last column; then a stride-2 window that ends before the row does (14 columns, 6 outputs).
    x = torch.randn(1, 2, 12, 14)
    x[0, 0, 3, 0] = float("nan")
    x[0, 1, 7, 13] = float("nan")
    yield _case("maxpool_stem_nan", M(3, 2, 1), inputs=[x])
    yield _case("maxpool_s2_short_window", M(3, 2), (1, 2, 6, 14))
    # Rows of several 16-output vectors (AVX-512's 3x3/2 row kernel): NaNs on both sides of a
    # vector seam (column 31 is the next vector's first window's left column), in its middle
    # and in the last column; a ceil_mode row of odd width whose last window passes the edge.
    x = torch.randn(2, 2, 5, 70)
    x[0, 0, 2, 31] = float("nan")
    x[0, 1, 0, 32] = float("nan")
    x[1, 0, 4, 45] = float("nan")
    x[1, 1, 3, 69] = float("nan")
    yield _case("maxpool_stem_wide_nan", M(3, 2, 1), inputs=[x])
    yield _case("maxpool_stem_wide_ceil", M(3, 2, 1, ceil_mode=True), (1, 2, 4, 67))
    # The same window without padding (SqueezeNet's 3x3/2 ceil_mode pools; AVX-512 runs it as
    # the row kernel from column 1 on, column 0 carried in): NaNs in column 0, on both sides of
    # that shifted row's vector seam (columns 32 and 33), and in the last column; an even width
    # whose last ceil_mode window passes the edge; SqueezeNet's 55 -> 27 without ceil_mode.
    x = torch.randn(2, 2, 5, 71)
    x[0, 0, 1, 0] = float("nan")
    x[0, 1, 2, 32] = float("nan")
    x[1, 0, 0, 33] = float("nan")
    x[1, 1, 4, 70] = float("nan")
    yield _case("maxpool_s2_wide_ceil_nan", M(3, 2, ceil_mode=True), inputs=[x])
    yield _case("maxpool_s2_wide_ceil_even", M(3, 2, ceil_mode=True), (1, 3, 6, 68))
    yield _case("maxpool_s2_squeezenet", M(3, 2), (1, 2, 55, 55))
    x = torch.randn(1, 2, 6, 6)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 4, 5] = float("nan")
    yield _case("maxpool_nan", M(2), inputs=[x])
    # Rows wide enough for the vectorised column step (8 outputs at a time) and its tail, with
    # NaNs at even and odd columns, in the vector part and in the tail.
    for k, width in ((2, 40), (4, 76), (8, 136)):
        x = torch.randn(1, 2, 2 * k, width)
        for c, col in enumerate((0, 3, 2 * k + 1, width - 2)):
            x[0, c % 2, c % (2 * k), col] = float("nan")
        yield _case(f"maxpool_{k}_wide_nan", M(k), inputs=[x])
    yield _case("maxpool_2_ceil_wide", M(2, ceil_mode=True), (1, 2, 5, 37))
    yield _case("maxpool_negative", M(3, 2, 1), inputs=[-torch.rand(1, 2, 7, 7) - 1])
    # Ties everywhere (three values; ReLU's zeros): the index, and so where the gradient goes,
    # is the first maximum in row-major order, across the window's rows and columns. Rows wide
    # enough for the vectorised step across columns (8 outputs at a time) and its tail.
    ties = torch.randint(0, 3, (2, 2, 9, 37)).float()
    yield _case("maxpool_ties_stem", M(3, 2, 1), inputs=[ties])
    yield _case("maxpool_ties_dilated", M(3, 1, 1, dilation=2), inputs=[ties])
    yield _case("maxpool_ties_rect", M((2, 5), stride=(1, 3), padding=(1, 2)), inputs=[ties])
    yield _case("maxpool_relu_zeros", M(3, 2, 1), inputs=[torch.relu(torch.randn(1, 3, 10, 35))])


def _avgpool_cases():
    A = nn.AvgPool2d
    yield _case("avgpool_repr", A(2), (2, 3, 8, 8))
    yield _case("avgpool_pad", A(3, stride=2, padding=1), (1, 2, 7, 8))
    yield _case("avgpool_pad_exclude", A(3, stride=2, padding=1, count_include_pad=False),
                (1, 2, 7, 8), call="AvgPool2d(3, stride=2, padding=1, count_include_pad=False)")
    # ceil_mode windows run past the padded edge: their divisor is clipped to it.
    yield _case("avgpool_ceil", A(3, stride=2, padding=1, ceil_mode=True), (1, 2, 6, 6),
                call="AvgPool2d(3, stride=2, padding=1, ceil_mode=True)")
    yield _case("avgpool_ceil_exclude",
                A(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (1, 2, 6, 6),
                call="AvgPool2d(3, 2, 1, True, False)")
    yield _case("avgpool_ceil_drop_last", A(2, 2, padding=1, ceil_mode=True), (1, 2, 5, 5),
                call="AvgPool2d(2, 2, padding=1, ceil_mode=True)")
    yield _case("avgpool_ceil_no_pad", A(2, ceil_mode=True), (1, 2, 5, 7),
                call="AvgPool2d(2, ceil_mode=True)")
    yield _case("avgpool_divisor", A(3, stride=1, padding=1, divisor_override=3), (1, 2, 5, 5),
                call="AvgPool2d(3, stride=1, padding=1, divisor_override=3)")
    yield _case("avgpool_rect", A((2, 3), stride=(1, 2), padding=(1, 1)), (2, 2, 6, 9))
    yield _case("avgpool_kwargs",
                A(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True,
                  divisor_override=None), (1, 3, 9, 7),
                call="AvgPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True, "
                     "count_include_pad=True, divisor_override=None)")


def _adaptive_cases():
    D = nn.AdaptiveAvgPool2d
    yield _case("adaptive_global", D(1), (2, 3, 7, 7))
    yield _case("adaptive_global_short", D((1, 1)), (1, 4, 5, 6), call="AdaptiveAvgPool2d((1, 1))")
    # 26 planes: the global kernel's blocks of eight and the planes left over.
    yield _case("adaptive_global_many", D(1), (2, 13, 7, 7))
    # Planes of 64+ floats are summed in vectors: 108 = 64 + 16 + 16 + a masked 12 (AVX-512),
    # 96 + 8 + 4 left (AVX2); 3136 is EfficientNet's 56x56.
    yield _case("adaptive_global_vector", D(1), (2, 3, 9, 12))
    yield _case("adaptive_global_56", D(1), (1, 2, 56, 56))
    yield _case("adaptive_uneven", D((3, 4)), (1, 2, 7, 9))
    yield _case("adaptive_none_h", D((None, 3)), (1, 2, 5, 8))
    yield _case("adaptive_none_w", D((2, None)), (1, 2, 5, 8))
    yield _case("adaptive_larger", D((10, 12)), (1, 2, 4, 5))
    yield _case("adaptive_same", D(5), (1, 2, 5, 5))


def _upsample_cases():
    U = nn.Upsample
    yield _case("up_nearest_repr", U(scale_factor=2.0, mode="nearest"), (1, 2, 3, 4))
    yield _case("up_nearest_short", U(scale_factor=2), (2, 2, 3, 3), call="Upsample(scale_factor=2)")
    yield _case("up_nearest_package", U(scale_factor=1.0, mode="nearest"), (1, 2, 4, 5),
                call="nn_executor.models.Upsample(scale_factor=1.0, mode=nearest)")
    yield _case("up_nearest_1_5", U(scale_factor=1.5), (1, 2, 5, 7))
    yield _case("up_nearest_0_5", U(scale_factor=0.5), (1, 2, 6, 7))
    yield _case("up_nearest_1_2_same_size", U(scale_factor=1.2), (1, 1, 3, 4))
    yield _case("up_nearest_1_7", U(scale_factor=1.7), (1, 1, 5, 6))
    yield _case("up_nearest_1_7_recompute", U(scale_factor=1.7, recompute_scale_factor=True),
                (1, 1, 5, 6),
                call="Upsample(scale_factor=1.7, mode='nearest', recompute_scale_factor=True)")
    yield _case("up_nearest_tuple", U(scale_factor=(2, 3)), (1, 2, 3, 2))
    yield _case("up_nearest_size", U(size=(7, 5)), (1, 2, 4, 3))
    yield _case("up_nearest_size_int", U(size=6), (1, 2, 4, 3))
    yield _case("up_nearest_doubled", U(scale_factor=(1, 2.05)), (1, 1, 2, 10))
    # PyTorch prints mode=nearest-exact unquoted, which a constructor string cannot hold.
    yield _case("up_nearest_exact_1_5", U(scale_factor=1.5, mode="nearest-exact"), (1, 2, 5, 7),
                call="Upsample(scale_factor=1.5, mode='nearest-exact')")
    yield _case("up_nearest_exact_size", U(size=(7, 3), mode="nearest-exact"), (1, 2, 4, 5),
                call="Upsample(size=(7, 3), mode='nearest-exact')")
    yield _case("up_nearest_exact_1_2_same_size", U(scale_factor=1.2, mode="nearest-exact"),
                (1, 1, 3, 4), call="Upsample(scale_factor=1.2, mode='nearest-exact')")
    for align in (False, True):
        a = "T" if align else "F"
        short = f", align_corners={align}"
        yield _case(f"up_bilinear_2_{a}", U(scale_factor=2, mode="bilinear", align_corners=align),
                    (1, 2, 3, 4), call=f"Upsample(scale_factor=2, mode='bilinear'{short})")
        yield _case(f"up_bilinear_1_5_{a}",
                    U(scale_factor=1.5, mode="bilinear", align_corners=align), (1, 2, 5, 6),
                    call=f"Upsample(scale_factor=1.5, mode=bilinear{short})")
        yield _case(f"up_bilinear_0_5_{a}",
                    U(scale_factor=0.5, mode="bilinear", align_corners=align), (1, 2, 6, 7),
                    call=f"Upsample(scale_factor=0.5, mode=bilinear{short})")
        yield _case(f"up_bilinear_size_{a}", U(size=(7, 9), mode="bilinear", align_corners=align),
                    (2, 2, 4, 5), call=f"Upsample(size=(7, 9), mode=bilinear{short})")
        yield _case(f"up_bicubic_1_5_{a}", U(scale_factor=1.5, mode="bicubic", align_corners=align),
                    (1, 2, 5, 6), call=f"Upsample(scale_factor=1.5, mode=bicubic{short})")
        yield _case(f"up_bicubic_size_{a}", U(size=(3, 8), mode="bicubic", align_corners=align),
                    (1, 2, 5, 6), call=f"Upsample(size=(3, 8), mode=bicubic{short})")
    yield _case("up_bilinear_repr", U(scale_factor=2, mode="bilinear"), (1, 2, 3, 3))
    yield _case("up_bilinear_tuple", U(scale_factor=(1.5, 2.5), mode="bilinear"), (1, 2, 4, 3))
    yield _case("up_bilinear_1_2_same_size", U(scale_factor=1.2, mode="bilinear"), (1, 1, 3, 4))
    yield _case("up_bicubic_1_2_same_size", U(scale_factor=1.2, mode="bicubic"), (1, 1, 3, 4))
    yield _case("up_bilinear_recompute",
                U(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True), (1, 1, 5, 6),
                call="Upsample(scale_factor=1.7, mode=bilinear, recompute_scale_factor=True)")
    yield _case("up_area_size", U(size=(3, 4), mode="area"), (1, 2, 7, 9))
    yield _case("up_area_scale", U(scale_factor=0.5, mode="area"), (1, 2, 7, 9))
    yield _case("up_nearest2d", nn.UpsamplingNearest2d(scale_factor=2), (1, 2, 3, 3))
    yield _case("up_bilinear2d_size", nn.UpsamplingBilinear2d(size=(5, 7)), (1, 2, 3, 4))
    yield _case("up_bilinear2d_scale", nn.UpsamplingBilinear2d(scale_factor=1.5), (1, 2, 4, 4),
                call="torch.nn.UpsamplingBilinear2d(scale_factor=1.5)")


def cases():
    yield from _conv_cases()
    yield from _linear_cases()
    yield from _batchnorm_cases()
    yield from _maxpool_cases()
    yield from _avgpool_cases()
    yield from _adaptive_cases()
    yield from _upsample_cases()
