// CPU body of mean reductions: the input viewed as (outer, reduced, inner) around one block of
// reduced dimensions; several blocks are reduced one after another by the op.
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

// y[o, i] = mean over r of x[o, r, i], accumulated in double; x and y contiguous float32.
// reduced == 0 gives NaN, as PyTorch's mean of an empty range does.
void mean_middle(const float* x, int64_t outer, int64_t reduced, int64_t inner, float* y,
                 ThreadPool* pool);

}  // namespace nnx::cpu
