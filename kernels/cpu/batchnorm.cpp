// CPU batch-norm bodies (see batchnorm.h).
#include "kernels/cpu/batchnorm.h"

#include <algorithm>

#include "kernels/cpu/sums.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

namespace {
// Elements summed in float before the running sum (in double) takes them.
constexpr int64_t kChunk = 4096;
}  // namespace

void channel_affine(int64_t batch, int64_t channels, int64_t plane, const float* x,
                    const float* scale, const float* shift, float* y, ThreadPool* pool) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, plane));
  parallel_for(pool, batch * channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float a = scale[p % channels], b = shift[p % channels];
      const float* in = x + p * plane;
      float* out = y + p * plane;
      for (int64_t i = 0; i < plane; ++i) out[i] = in[i] * a + b;
    }
  });
}

void channel_moments(int64_t batch, int64_t channels, int64_t plane, const float* x, double* mean,
                     double* variance, ThreadPool* pool) {
  const double count = double(batch * plane);
  parallel_for(pool, channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      // Two passes: the centred sum of squares keeps the variance accurate for large means.
      // Float sums over chunks (vectorised), double across them.
      double sum = 0;
      for (int64_t n = 0; n < batch; ++n) {
        const float* in = x + (n * channels + c) * plane;
        for (int64_t i = 0; i < plane; i += kChunk)
          sum += sum_floats(in + i, std::min(kChunk, plane - i));
      }
      const double m = count > 0 ? sum / count : 0.0;
      double squares = 0;
      for (int64_t n = 0; n < batch; ++n) {
        const float* in = x + (n * channels + c) * plane;
        for (int64_t i = 0; i < plane; i += kChunk)
          squares += centered_square_sum(in + i, float(m), std::min(kChunk, plane - i));
      }
      mean[c] = m;
      variance[c] = count > 0 ? squares / count : 0.0;
    }
  });
}

void channel_grad_sums(int64_t batch, int64_t channels, int64_t plane, const float* x,
                       const float* dy, const double* mean, const double* inv_std, double* sum_dy,
                       double* sum_dy_xhat, ThreadPool* pool) {
  parallel_for(pool, channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float m = float(mean[c]);
      double s = 0, sx = 0;
      for (int64_t n = 0; n < batch; ++n) {
        const float* in = x + (n * channels + c) * plane;
        const float* g = dy + (n * channels + c) * plane;
        // Float sums over chunks, double across them.
        for (int64_t i = 0; i < plane; i += kChunk) {
          float ps, psx;
          sum_and_centered_dot(g + i, in + i, m, std::min(kChunk, plane - i), ps, psx);
          s += ps;
          sx += psx;
        }
      }
      sum_dy[c] = s;
      sum_dy_xhat[c] = sx * inv_std[c];
    }
  });
}

void channel_affine_grad(int64_t batch, int64_t channels, int64_t plane, const float* dy,
                         const float* x, const float* a, const float* b, const float* center,
                         const float* shift, float* dx, ThreadPool* pool) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, plane));
  parallel_for(pool, batch * channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % channels;
      const float ac = a[c], sc = shift[c];
      const float* g = dy + p * plane;
      float* out = dx + p * plane;
      if (b == nullptr) {
        for (int64_t i = 0; i < plane; ++i) out[i] = g[i] * ac + sc;
        continue;
      }
      const float bc = b[c], mc = center[c];
      const float* in = x + p * plane;
      for (int64_t i = 0; i < plane; ++i) out[i] = g[i] * ac + (in[i] - mc) * bc + sc;
    }
  });
}

}  // namespace nnx::cpu
