// CUDA bodies of the per-channel and per-row affine maps: BatchNorm2d in inference with running
// statistics (with the batch's: kernels/cuda/train.h), LayerNorm, the pruners' channel gates and
// Affine, with the formulas of the CPU kernels (kernels/cpu/batchnorm.h, layernorm.h, pruner.h).
#pragma once

#include <cstdint>

namespace nnx::cuda {

// y[n, c, i] = x[n, c, i] * scale[c] + shift[c] over [batch, channels, plane]; shift may be null
// (y = x * scale). y may be x.
void channel_affine(const float* x, const float* scale, const float* shift, float* y, int64_t batch,
                    int64_t channels, int64_t plane, void* stream);

// Each of `rows` rows of n: (x - mean) / sqrt(var + eps) (statistics in double), times weight,
// plus bias (each [n], or null).
void layer_norm(const float* x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, float* y, void* stream);

// y[i] = x[i] * scale + shift.
void affine(const float* x, int64_t n, float scale, float shift, float* y, void* stream);

}  // namespace nnx::cuda
