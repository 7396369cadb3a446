// CPU fully-connected layer: y[rows x out] = x[rows x in] * W^T + b, W as PyTorch stores it.
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

// x [rows, in_features], weight [out_features, in_features], bias [out_features] or null,
// y [rows, out_features]; all contiguous.
void linear(int64_t rows, int64_t in_features, int64_t out_features, const float* x,
            const float* weight, const float* bias, float* y, ThreadPool* pool);

// Gradients given grad_y [rows, out_features]: grad_x [rows, in_features], grad_weight
// [out_features, in_features], grad_bias [out_features], each overwritten, each may be null.
void linear_backward(int64_t rows, int64_t in_features, int64_t out_features, const float* x,
                     const float* weight, const float* grad_y, float* grad_x, float* grad_weight,
                     float* grad_bias, ThreadPool* pool);

}  // namespace nnx::cpu
