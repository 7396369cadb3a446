// Softmax on the CPU. When the reduced dimension is the innermost one, each row is contiguous;
// otherwise (the usual NCHW dim=1 case) a block of neighbouring positions along `inner` is
// reduced together, so every pass reads contiguous memory and vectorises.
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "nnx/thread_pool.h"

namespace nnx::cpu {
namespace {

constexpr int64_t kBlock = 256;  // positions of `inner` reduced together
constexpr int64_t kGrainElements = int64_t(1) << 14;

void softmax_rows(const float* __restrict x, float* __restrict y, int64_t rows, int64_t dim,
                  bool log) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < dim; ++c) max = std::max(max, xr[c]);
    float sum = 0;
    if (log) {
      for (int64_t c = 0; c < dim; ++c) sum += std::exp(xr[c] - max);
      const float shift = max + std::log(sum);
      for (int64_t c = 0; c < dim; ++c) yr[c] = xr[c] - shift;
    } else {
      for (int64_t c = 0; c < dim; ++c) {
        yr[c] = std::exp(xr[c] - max);
        sum += yr[c];
      }
      const float scale = 1.0f / sum;
      for (int64_t c = 0; c < dim; ++c) yr[c] *= scale;
    }
  }
}

// Positions [j0, j0 + n) of one outer slice, n <= kBlock, the reduced dimension strided by inner.
void softmax_block(const float* __restrict x, float* __restrict y, int64_t dim, int64_t inner,
                   int64_t n, bool log) {
  float max[kBlock], sum[kBlock];
  for (int64_t j = 0; j < n; ++j) {
    max[j] = -std::numeric_limits<float>::infinity();
    sum[j] = 0;
  }
  for (int64_t c = 0; c < dim; ++c) {
    const float* xc = x + c * inner;
    for (int64_t j = 0; j < n; ++j) max[j] = std::max(max[j], xc[j]);
  }
  if (log) {
    for (int64_t c = 0; c < dim; ++c) {
      const float* xc = x + c * inner;
      for (int64_t j = 0; j < n; ++j) sum[j] += std::exp(xc[j] - max[j]);
    }
    for (int64_t j = 0; j < n; ++j) max[j] += std::log(sum[j]);  // now the full shift
    for (int64_t c = 0; c < dim; ++c) {
      const float* xc = x + c * inner;
      float* yc = y + c * inner;
      for (int64_t j = 0; j < n; ++j) yc[j] = xc[j] - max[j];
    }
  } else {
    for (int64_t c = 0; c < dim; ++c) {
      const float* xc = x + c * inner;
      float* yc = y + c * inner;
      for (int64_t j = 0; j < n; ++j) {
        yc[j] = std::exp(xc[j] - max[j]);
        sum[j] += yc[j];
      }
    }
    for (int64_t j = 0; j < n; ++j) sum[j] = 1.0f / sum[j];
    for (int64_t c = 0; c < dim; ++c) {
      float* yc = y + c * inner;
      for (int64_t j = 0; j < n; ++j) yc[j] *= sum[j];
    }
  }
}

}  // namespace

void softmax(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log,
             ThreadPool* pool) {
  if (outer == 0 || dim == 0 || inner == 0) return;
  if (inner == 1) {
    const int64_t grain = std::max<int64_t>(1, kGrainElements / dim);
    parallel_for(pool, outer, grain, [&](int64_t begin, int64_t end) {
      softmax_rows(x + begin * dim, y + begin * dim, end - begin, dim, log);
    });
    return;
  }
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (dim * std::min(inner, kBlock)));
  parallel_for(pool, outer * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o = t / blocks, j0 = (t % blocks) * kBlock;
      const int64_t offset = o * dim * inner + j0;
      softmax_block(x + offset, y + offset, dim, inner, std::min(kBlock, inner - j0), log);
    }
  });
}

void softmax_backward(const float* y, const float* gy, float* gx, int64_t outer, int64_t dim,
                      int64_t inner, bool log, ThreadPool* pool) {
  // Work units: one outer index and a block of up to kBlock inner columns.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  const int64_t units = outer * blocks;
  const int64_t grain =
      std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, dim * kBlock));
  parallel_for(pool, units, grain, [&](int64_t begin, int64_t end) {
    double sums[kBlock];
    for (int64_t u = begin; u < end; ++u) {
      const int64_t o = u / blocks, i0 = (u % blocks) * kBlock;
      const int64_t n = std::min(kBlock, inner - i0);
      const int64_t base = o * dim * inner + i0;
      for (int64_t i = 0; i < n; ++i) sums[i] = 0;
      for (int64_t d = 0; d < dim; ++d) {
        const float* yr = y + base + d * inner;
        const float* gr = gy + base + d * inner;
        if (log)
          for (int64_t i = 0; i < n; ++i) sums[i] += gr[i];
        else
          for (int64_t i = 0; i < n; ++i) sums[i] += double(gr[i]) * yr[i];
      }
      for (int64_t d = 0; d < dim; ++d) {
        const float* yr = y + base + d * inner;
        const float* gr = gy + base + d * inner;
        float* out = gx + base + d * inner;
        if (log)
          for (int64_t i = 0; i < n; ++i) out[i] = gr[i] - std::exp(yr[i]) * float(sums[i]);
        else
          for (int64_t i = 0; i < n; ++i) out[i] = yr[i] * (gr[i] - float(sums[i]));
      }
    }
  });
}

}  // namespace nnx::cpu
