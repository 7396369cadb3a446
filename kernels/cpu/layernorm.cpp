// LayerNorm rows and the scalar affine map (see layernorm.h).
#include "kernels/cpu/layernorm.h"

#include <algorithm>
#include <cmath>

#include "nnx/thread_pool.h"

namespace nnx::cpu {

void layer_norm(const float* x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, float* y, ThreadPool* pool) {
  if (rows == 0 || n == 0) return;
  parallel_for(pool, rows, std::max<int64_t>(1, 8192 / n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = x + r * n;
      float* out = y + r * n;
      // Two passes in double: the centred variance stays exact for offset data.
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += in[i];
      const double mean = sum / double(n);
      double sq = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = in[i] - mean;
        sq += d * d;
      }
      const float inv_std = float(1.0 / std::sqrt(sq / double(n) + double(eps)));
      const float m = float(mean);
      for (int64_t i = 0; i < n; ++i) {
        float v = (in[i] - m) * inv_std;
        if (weight != nullptr) v *= weight[i];
        if (bias != nullptr) v += bias[i];
        out[i] = v;
      }
    }
  });
}

void affine(const float* x, int64_t n, float scale, float shift, float* y, ThreadPool* pool) {
  parallel_for(pool, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] * scale + shift;
  });
}

}  // namespace nnx::cpu
