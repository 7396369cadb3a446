// CUDA body of Mean: the mean over the middle of an (outer, reduced, inner) view of a contiguous
// float32 tensor, accumulated in double as kernels/cpu/reduce.h does.
#pragma once

#include <cstdint>

namespace nnx::cuda {

// y [outer, inner] = mean of x [outer, reduced, inner] over the middle; NaN when reduced is 0.
void mean_middle(const float* x, int64_t outer, int64_t reduced, int64_t inner, float* y,
                 void* stream);

}  // namespace nnx::cuda
