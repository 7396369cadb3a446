// CPU bodies of LayerNorm (rows normalised over their last `n` elements, then scaled and
// shifted per element) and of the scalar affine map y = x * scale + shift.
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

// For each of `rows` contiguous rows of n floats: y = (x - mean) / sqrt(var + eps) * w + b with
// the biased variance, as torch.nn.functional.layer_norm; w and b may be null (no affine).
void layer_norm(const float* x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, float* y, ThreadPool* pool);

// Gradients of layer_norm given dy: dx (may be null), dweight and dbias (over all rows; null
// when not wanted) are overwritten. weight may be null (no affine).
void layer_norm_backward(const float* x, int64_t rows, int64_t n, const float* weight, float eps,
                         const float* dy, float* dx, float* dweight, float* dbias,
                         ThreadPool* pool);

// y[i] = x[i] * scale + shift over n floats; y may be x.
void affine(const float* x, int64_t n, float scale, float shift, float* y, ThreadPool* pool);

}  // namespace nnx::cpu
