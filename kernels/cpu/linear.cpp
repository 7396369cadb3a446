// CPU fully-connected layer (see linear.h): one single-threaded GEMM per thread, over a block of
// rows when there are many, else over a block of output features (batch-1 inference).
#include "kernels/cpu/linear.h"

#include <algorithm>

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
  if (rows >= 4 * threads) {
    parallel_for(pool, rows, 1, [&](int64_t r0, int64_t r1) { block(r0, r1, 0, out_features); });
  } else {
    // Few rows: split the output features, in multiples of 16 to keep GEMM panels whole.
    const int64_t chunks = (out_features + 15) / 16;
    parallel_for(pool, chunks, 1, [&](int64_t b, int64_t e) {
      block(0, rows, b * 16, std::min(out_features, e * 16));
    });
  }
}

}  // namespace nnx::cpu
