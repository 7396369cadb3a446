// CUDA bodies of Softmax and LogSoftmax over the middle dimension of an (outer, dim, inner)
// view of a contiguous float32 tensor, with the formulas of kernels/cpu/softmax.h.
#pragma once

#include <cstdint>

namespace nnx::cuda {

// y = softmax(x) (or log_softmax when `log`) along dim; y must not overlap x.
void softmax(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log,
             void* stream);

}  // namespace nnx::cuda
