// CPU bodies of Softmax and LogSoftmax along one dimension of a contiguous float32 tensor viewed
// as (outer, dim, inner).
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

// y = softmax(x) (or log_softmax when `log`) along the middle dimension; the maximum is
// subtracted first, so no input overflows. x and y must not overlap.
void softmax(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log,
             ThreadPool* pool);

// The gradient from the forward's output y and the output gradient gy, along the middle
// dimension: softmax gx = y * (gy - sum(gy * y)), log_softmax gx = gy - exp(y) * sum(gy).
// gx may be gy.
void softmax_backward(const float* y, const float* gy, float* gx, int64_t outer, int64_t dim,
                      int64_t inner, bool log, ThreadPool* pool);

}  // namespace nnx::cpu
