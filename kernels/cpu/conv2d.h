// CPU 2-D convolution over NCHW float32: im2col tiles + GEMM in general, a plain GEMM for 1x1
// stride-1 convolutions and a direct loop for depthwise ones; plus the non-zero padding modes.
#pragma once

#include <cstdint>

#include "kernels/cpu/epilogue.h"

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

class ConvPrepared;

struct Conv2dShape {
  int64_t batch = 1;
  int64_t in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  // Zero padding before the first row and column; the padding after the last is implied by
  // out_h and out_w (it may differ, as for padding='same' with an odd total).
  int64_t pad_top = 0, pad_left = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
};

// input [batch, in_channels, in_h, in_w]; weight [out_channels, in_channels / groups, kernel_h,
// kernel_w]; bias [out_channels] or null; output [batch, out_channels, out_h, out_w]. Every path
// applies `epilogue` to each block of outputs right after adding the bias, while it is in cache.
// `prepared`, for weights that no longer change (inference), keeps their Winograd transform
// between calls (winograd.h); null: nothing is kept.
void conv2d(const Conv2dShape& shape, const float* input, const float* weight, const float* bias,
            float* output, ThreadPool* pool, const Epilogue& epilogue = {},
            ConvPrepared* prepared = nullptr);

// Whether conv2d, with prepared weights (or not) and `epilogue`'s residual, reads each residual
// element only just before it writes the output element at the same position: then the residual
// may lie in the output's own memory (the planner lets a fused Add's operand that dies there hold
// the result). conv2d is correct either way: where this is false and the two overlap, it copies
// the residual first.
bool conv2d_residual_in_place(const Conv2dShape& shape, bool prepared, const Epilogue& epilogue);

// conv2d followed by max_pool2d (pooling.h) over its output, `pool_shape` describing that
// pooling (planes = batch * out_channels, in = the convolution's output): computed in bands of
// pooled rows, each band's convolution rows made into a scratch that stays in cache, so the
// convolution's whole output is never written to memory. `output` is the pooled result.
struct Pool2dShape;
void conv2d_max_pool(const Conv2dShape& shape, const Pool2dShape& pool_shape, const float* input,
                     const float* weight, const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue = {}, ConvPrepared* prepared = nullptr);

// A 1x1, stride-1 convolution without padding: its input planes are already its im2col matrix
// (a GEMM reads them in place).
bool reads_input_in_place(const Conv2dShape& shape);

// One image's pixels that a strided 1x1 convolution without padding reads (its im2col matrix,
// [in_channels][out_h][out_w]), written to `sampled`.
void sample_image(const Conv2dShape& shape, const float* image, float* sampled);

// With stride 1 a convolution's input gradient is itself a convolution: the output gradient
// (padded by the dilated kernel's extent less the padding) with the kernels flipped and their
// input and output channels swapped. Sets `gradient` to that convolution's shape and returns
// true, or returns false for a stride or padding that does not allow it.
bool input_gradient_shape(const Conv2dShape& shape, Conv2dShape& gradient);

// Gradients of conv2d given grad_output [batch, out_channels, out_h, out_w]: grad_input (the
// input's shape), grad_weight and grad_bias are overwritten; any of them may be null (not
// needed). input is read only for grad_weight, weight only for grad_input.
void conv2d_backward(const Conv2dShape& shape, const float* input, const float* weight,
                     const float* grad_output, float* grad_input, float* grad_weight,
                     float* grad_bias, ThreadPool* pool);

enum class PadMode { zeros, reflect, replicate, circular };

// Pads each of `planes` [h, w] planes into [h + top + bottom, w + left + right] as torch's F.pad
// does for that mode. The caller checks the sizes (reflect needs pads < size, circular <= size).
void pad2d(PadMode mode, const float* input, int64_t planes, int64_t h, int64_t w, int64_t top,
           int64_t bottom, int64_t left, int64_t right, float* output, ThreadPool* pool);

// The gradient of pad2d: each padded element's gradient is added to the input element it was
// copied from; grad_input [planes, h, w] is overwritten.
void pad2d_backward(PadMode mode, const float* grad_output, int64_t planes, int64_t h, int64_t w,
                    int64_t top, int64_t bottom, int64_t left, int64_t right, float* grad_input,
                    ThreadPool* pool);

}  // namespace nnx::cpu
