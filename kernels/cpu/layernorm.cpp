// LayerNorm rows and the scalar affine map (see layernorm.h).
#include "kernels/cpu/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

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

void layer_norm_backward(const float* x, int64_t rows, int64_t n, const float* weight, float eps,
                         const float* dy, float* dx, float* dweight, float* dbias,
                         ThreadPool* pool) {
  if (n == 0) return;
  // Row statistics as the forward computes them.
  std::vector<float> means(static_cast<size_t>(rows)), inv_stds(static_cast<size_t>(rows));
  parallel_for(pool, rows, std::max<int64_t>(1, 8192 / n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = x + r * n;
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += in[i];
      const double mean = sum / double(n);
      double sq = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = in[i] - mean;
        sq += d * d;
      }
      means[size_t(r)] = float(mean);
      inv_stds[size_t(r)] = float(1.0 / std::sqrt(sq / double(n) + double(eps)));
      if (dx == nullptr) continue;
      // dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), g = dy * weight.
      const float m = means[size_t(r)], inv_std = inv_stds[size_t(r)];
      const float* g = dy + r * n;
      double sum_g = 0, sum_g_xhat = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float gi = weight ? g[i] * weight[i] : g[i];
        sum_g += gi;
        sum_g_xhat += double(gi) * double((in[i] - m) * inv_std);
      }
      const float mean_g = float(sum_g / double(n)), mean_g_xhat = float(sum_g_xhat / double(n));
      float* out = dx + r * n;
      for (int64_t i = 0; i < n; ++i) {
        const float gi = weight ? g[i] * weight[i] : g[i];
        out[i] = inv_std * (gi - mean_g - (in[i] - m) * inv_std * mean_g_xhat);
      }
    }
  });
  if (dweight == nullptr && dbias == nullptr) return;
  // Parameter gradients: sums over rows, split by columns.
  parallel_for(pool, n, 256, [&](int64_t c0, int64_t c1) {
    std::vector<double> sw(size_t(c1 - c0), 0.0), sb(size_t(c1 - c0), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* in = x + r * n;
      const float* g = dy + r * n;
      const float m = means[size_t(r)], inv_std = inv_stds[size_t(r)];
      for (int64_t i = c0; i < c1; ++i) {
        sw[size_t(i - c0)] += double(g[i] * ((in[i] - m) * inv_std));
        sb[size_t(i - c0)] += double(g[i]);
      }
    }
    for (int64_t i = c0; i < c1; ++i) {
      if (dweight) dweight[i] = float(sw[size_t(i - c0)]);
      if (dbias) dbias[i] = float(sb[size_t(i - c0)]);
    }
  });
}

void affine(const float* x, int64_t n, float scale, float shift, float* y, ThreadPool* pool) {
  parallel_for(pool, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] * scale + shift;
  });
}

}  // namespace nnx::cpu
