// CUDA bodies of the 2-D poolings over planes of NCHW float32: max, average and adaptive
// average, with the window, NaN and divisor rules of kernels/cpu/pooling.h.
#pragma once

#include <cstdint>

namespace nnx::cuda {

struct Pool2dGeometry {
  int64_t planes = 0;  // batch x channels
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
};

// Padding counts as -inf (a window wholly in it gives -inf); a NaN in a window wins.
void max_pool2d(const Pool2dGeometry& g, const float* x, float* y, void* stream);

// Window sums (in window order) divided by divisor_override when non-zero, else by the window's
// size within the padded input (count_include_pad) or within the input; ceil_mode windows that
// overrun the padded input count only what they cover. Dilation is not used.
void avg_pool2d(const Pool2dGeometry& g, bool count_include_pad, int64_t divisor_override,
                const float* x, float* y, void* stream);

// Output cell i averages input rows [floor(i * in / out), ceil((i + 1) * in / out)), likewise
// for columns.
void adaptive_avg_pool2d(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                         const float* x, float* y, void* stream);
// Their gradients (dx overwritten): each output's gradient spread evenly over its window, with
// the forward's divisor.
void avg_pool2d_backward(const Pool2dGeometry& g, bool count_include_pad, int64_t divisor_override,
                         const float* dy, float* dx, void* stream);
void adaptive_avg_pool2d_backward(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h,
                                  int64_t out_w, const float* dy, float* dx, void* stream);

}  // namespace nnx::cuda
