// The direct kernel for convolutions whose groups each read one input plane (depthwise and
// channel-multiplier convolutions): each plane is copied once into a zero-padded scratch, split
// into `stride_w` column phases, so that every kernel tap is a contiguous, branch-free
// multiply-add over an output row.
#pragma once

#include <cmath>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/epilogue.h"

namespace nnx::cpu {

// One output plane [out_h, out_w] of `shape` from one input plane [in_h, in_w] and that output
// channel's kernel [kernel_h, kernel_w]: out = clamp(bias + sum of taps, lo, hi) (NaN kept).
void depthwise_plane(const Conv2dShape& shape, const float* input, const float* weight, float bias,
                     float* output, float lo = -INFINITY, float hi = INFINITY);

// `channels` such planes at once: plane c from input + c * in_stride with kernel weight + c *
// kernel_h * kernel_w and bias[c] (bias may be null: none), into output + c * out_stride; the
// set-up and the padding rows are done once for all of them. After the clamp, `activation`'s
// activation (where given; its residual must be null) with apply_epilogue's formulas: in
// registers before the store on the AVX-512 3x3 and 5x5 paths, else over each plane once stored.
void depthwise_planes(const Conv2dShape& shape, int64_t channels, const float* input,
                      int64_t in_stride, const float* weight, const float* bias, float* output,
                      int64_t out_stride, float lo = -INFINITY, float hi = INFINITY,
                      const Epilogue* activation = nullptr);

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// Small output planes (rows of at most 14 outputs, which fill a vector of one plane's row in
// part; and up to 56 outputs for 5x5 kernels, 28 for 3x3 of stride 1: see
// depthwise_channels_last_suitable): as depthwise_planes, 16 channels at a time channels-last (8
// on AVX2), each output a vector of them. The planes are transposed into a zero-padded window in
// registers and back. After the clamp, `activation`'s activation (where given; its residual must
// be null) is applied with apply_epilogue's formulas: in registers on AVX-512, over each block's
// planes once stored on AVX2.
bool depthwise_channels_last_suitable(const Conv2dShape& shape);
void depthwise_channels_last(const Conv2dShape& shape, int64_t channels, const float* input,
                             int64_t in_stride, const float* weight, const float* bias,
                             float* output, int64_t out_stride, float lo = -INFINITY,
                             float hi = INFINITY, const Epilogue* activation = nullptr);
#endif

}  // namespace nnx::cpu
