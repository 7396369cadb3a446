// CPU batch-norm bodies (see batchnorm.h).
#include "kernels/cpu/batchnorm.h"

#include <algorithm>

#include "nnx/thread_pool.h"

namespace nnx::cpu {

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
      double sum = 0;
      for (int64_t n = 0; n < batch; ++n) {
        const float* in = x + (n * channels + c) * plane;
        for (int64_t i = 0; i < plane; ++i) sum += in[i];
      }
      const double m = count > 0 ? sum / count : 0.0;
      double squares = 0;
      for (int64_t n = 0; n < batch; ++n) {
        const float* in = x + (n * channels + c) * plane;
        for (int64_t i = 0; i < plane; ++i) squares += (in[i] - m) * (in[i] - m);
      }
      mean[c] = m;
      variance[c] = count > 0 ? squares / count : 0.0;
    }
  });
}

}  // namespace nnx::cpu
