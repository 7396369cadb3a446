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

// Per channel, over the batch and the plane: sum(dy) and sum(dy * (x - mean) * inv_std).
void channel_grad_sums(int64_t batch, int64_t channels, int64_t plane, const float* x,
                       const float* dy, const double* mean, const double* inv_std, double* sum_dy,
                       double* sum_dy_xhat, ThreadPool* pool);

// dx[n, c, i] = dy[n, c, i] * a[c] + (x[n, c, i] - center[c]) * b[c] + shift[c]; x and center
// are not read when b is null.
void channel_affine_grad(int64_t batch, int64_t channels, int64_t plane, const float* dy,
                         const float* x, const float* a, const float* b, const float* center,
                         const float* shift, float* dx, ThreadPool* pool);

}  // namespace nnx::cpu
