// CPU batch-norm bodies over NCHW float32: per-channel statistics and the per-channel affine map
// that inference reduces batch norm to.
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

// y[n, c, i] = x[n, c, i] * scale[c] + shift[c], for `plane` elements i per channel.
void channel_affine(int64_t batch, int64_t channels, int64_t plane, const float* x,
                    const float* scale, const float* shift, float* y, ThreadPool* pool);

// Per-channel mean and biased variance over the batch and the plane (in double).
void channel_moments(int64_t batch, int64_t channels, int64_t plane, const float* x, double* mean,
                     double* variance, ThreadPool* pool);

}  // namespace nnx::cpu
