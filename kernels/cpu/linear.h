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

}  // namespace nnx::cpu
