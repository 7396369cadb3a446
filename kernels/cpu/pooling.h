// CPU 2-D pooling over planes of NCHW float32 (batch x channels planes): max, average and
// adaptive average, with PyTorch's window and divisor rules.
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

struct Pool2dShape {
  int64_t planes = 0;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
};

// Padding counts as -inf; NaN in a window wins, as in PyTorch. Output plane p starts at
// output + p * output_plane_stride (0: out_h * out_w, planes back to back), so that a band of
// rows can be written straight into a larger tensor.
void max_pool2d(const Pool2dShape& shape, const float* input, float* output, ThreadPool* pool,
                int64_t output_plane_stride = 0);

// Window sums divided by `divisor_override` when non-zero, else by the window's size within the
// padded input (count_include_pad) or within the input itself.
void avg_pool2d(const Pool2dShape& shape, bool count_include_pad, int64_t divisor_override,
                const float* input, float* output, ThreadPool* pool);

// Output cell i averages input rows [floor(i * in / out), ceil((i + 1) * in / out)), likewise
// for columns.
void adaptive_avg_pool2d(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                         const float* input, float* output, ThreadPool* pool);

// max_pool2d that also writes, per output, the index within its input plane (h * in_w + w) of
// the element PyTorch's CPU kernel picks: the first maximum in window order, or the last NaN;
// -1 for a window wholly in the padding. Needs in_h * in_w < 2^31.
void max_pool2d_with_indices(const Pool2dShape& shape, const float* input, float* output,
                             int32_t* indices, ThreadPool* pool);

// Gradients of the three: grad_input [planes, in_h, in_w] is overwritten. Max pooling sends each
// output's gradient to the element PyTorch's CPU kernel picks (as max_pool2d_with_indices), the
// first form working it out from the input, the second reading the forward's indices.
void max_pool2d_backward(const Pool2dShape& shape, const float* input, const float* grad_output,
                         float* grad_input, ThreadPool* pool);
void max_pool2d_backward_indices(const Pool2dShape& shape, const int32_t* indices,
                                 const float* grad_output, float* grad_input, ThreadPool* pool);
void avg_pool2d_backward(const Pool2dShape& shape, bool count_include_pad, int64_t divisor_override,
                         const float* grad_output, float* grad_input, ThreadPool* pool);
void adaptive_avg_pool2d_backward(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h,
                                  int64_t out_w, const float* grad_output, float* grad_input,
                                  ThreadPool* pool);

}  // namespace nnx::cpu
