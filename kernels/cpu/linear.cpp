// CPU fully-connected layer (see linear.h): one single-threaded GEMM per thread, over a block of
// rows when there are many, else over a block of output features (batch-1 inference).
#include "kernels/cpu/linear.h"

#include <algorithm>
#include <functional>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

namespace {
// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kMinParallelMacs = 1 << 16;
}  // namespace

void linear(int64_t rows, int64_t in_features, int64_t out_features, const float* x,
            const float* weight, const float* bias, float* y, ThreadPool* pool) {
  if (rows <= 0 || out_features <= 0) return;
  auto block = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    float* out = y + r0 * out_features + c0;
    if (bias != nullptr) {
      for (int64_t r = r0; r < r1; ++r) std::copy(bias + c0, bias + c1, y + r * out_features + c0);
    }
    gemm(r1 - r0, c1 - c0, in_features, x + r0 * in_features, in_features,
         weight + c0 * in_features, in_features, /*b_transposed=*/true, out, out_features,
         bias != nullptr);
  };
  const int64_t threads = pool ? pool->size() : 1;
  if (threads == 1 || rows * in_features * out_features < kMinParallelMacs)
    return block(0, rows, 0, out_features);
  // Each thread's GEMM packs the whole of the operand that it does not split: split the rows
  // only where the input rows outnumber the weight's (a classifier at batch 8 split by rows had
  // each of two threads pack all of its 2048 x 1000 weight: 1.4 ms against 0.2).
  if (rows >= 4 * threads && rows >= out_features) {
    parallel_for(pool, rows, 1, [&](int64_t r0, int64_t r1) { block(r0, r1, 0, out_features); });
  } else {
    // Split the output features, in multiples of 16 to keep GEMM panels whole.
    const int64_t chunks = (out_features + 15) / 16;
    parallel_for(pool, chunks, 1, [&](int64_t b, int64_t e) {
      block(0, rows, b * 16, std::min(out_features, e * 16));
    });
  }
}

void linear_backward(int64_t rows, int64_t in_features, int64_t out_features, const float* x,
                     const float* weight, const float* grad_y, float* grad_x, float* grad_weight,
                     float* grad_bias, ThreadPool* pool) {
  const int64_t threads = pool ? pool->size() : 1;
  const bool parallel = threads > 1 && rows * in_features * out_features >= kMinParallelMacs;
  // Splits [0, n) into blocks of `unit` over the threads when worthwhile.
  auto split = [&](int64_t n, int64_t unit, RangeFn fn) {
    if (!parallel || n <= unit) return fn(0, n);
    parallel_for(pool, (n + unit - 1) / unit, 1,
                 [&](int64_t b, int64_t e) { fn(b * unit, std::min(n, e * unit)); });
  };
  if (grad_bias != nullptr) {
    std::vector<double> sums(size_t(out_features), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out_features; ++o) sums[size_t(o)] += grad_y[r * out_features + o];
    for (int64_t o = 0; o < out_features; ++o) grad_bias[o] = float(sums[size_t(o)]);
  }
  if (grad_x != nullptr) {
    if (rows <= 0 || out_features <= 0) {
      std::fill(grad_x, grad_x + std::max<int64_t>(0, rows) * in_features, 0.f);
    } else if (rows >= 4 * threads && rows >= in_features) {  // as in linear(): see there
      split(rows, 1, [&](int64_t r0, int64_t r1) {
        gemm(r1 - r0, in_features, out_features, grad_y + r0 * out_features, out_features, weight,
             in_features, false, grad_x + r0 * in_features, in_features, false);
      });
    } else {
      split(in_features, 16, [&](int64_t c0, int64_t c1) {
        gemm(rows, c1 - c0, out_features, grad_y, out_features, weight + c0, in_features, false,
             grad_x + c0, in_features, false);
      });
    }
  }
  if (grad_weight != nullptr) {
    if (rows <= 0) {
      std::fill(grad_weight, grad_weight + out_features * in_features, 0.f);
      return;
    }
    // grad_weight = grad_y^T x: grad_y transposed once so that it is the row-major A operand.
    std::vector<float> grad_y_t(size_t(rows * out_features));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out_features; ++o)
        grad_y_t[size_t(o * rows + r)] = grad_y[r * out_features + o];
    if (out_features >= 16 * threads) {
      split(out_features, 16, [&](int64_t o0, int64_t o1) {
        gemm(o1 - o0, in_features, rows, grad_y_t.data() + o0 * rows, rows, x, in_features, false,
             grad_weight + o0 * in_features, in_features, false);
      });
    } else {
      split(in_features, 16, [&](int64_t c0, int64_t c1) {
        gemm(out_features, c1 - c0, rows, grad_y_t.data(), rows, x + c0, in_features, false,
             grad_weight + c0, in_features, false);
      });
    }
  }
}

}  // namespace nnx::cpu
