// CUDA bodies of the per-channel and per-row affine maps: BatchNorm2d in inference (running or
// batch statistics), LayerNorm, the pruners' channel gates and Affine, with the formulas of the
// CPU kernels (kernels/cpu/batchnorm.h, layernorm.h, pruner.h).
#pragma once

#include <cstdint>

namespace nnx::cuda {

// y[n, c, i] = x[n, c, i] * scale[c] + shift[c] over [batch, channels, plane]; shift may be null
// (y = x * scale). y may be x.
void channel_affine(const float* x, const float* scale, const float* shift, float* y, int64_t batch,
                    int64_t channels, int64_t plane, void* stream);

// Batch normalisation with the batch's own statistics (BatchNorm2d without running
// statistics): per channel the mean and population variance over batch and plane (in double,
// two passes), then scale = gamma / sqrt(var + eps) and shift = beta - mean * scale (gamma,
// beta null: 1 and 0) written to scale_shift [2 * channels] (device scratch), then
// channel_affine. batch * plane must be > 0.
void batch_norm_batch_stats(const float* x, const float* gamma, const float* beta, double eps,
                            int64_t batch, int64_t channels, int64_t plane, float* scale_shift,
                            float* y, void* stream);

// Each of `rows` rows of n: (x - mean) / sqrt(var + eps) (statistics in double), times weight,
// plus bias (each [n], or null).
void layer_norm(const float* x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, float* y, void* stream);

// y[i] = x[i] * scale + shift.
void affine(const float* x, int64_t n, float scale, float shift, float* y, void* stream);

}  // namespace nnx::cuda
