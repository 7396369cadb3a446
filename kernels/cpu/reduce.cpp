// Mean over the middle of an (outer, reduced, inner) view (see reduce.h).
#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "nnx/thread_pool.h"

namespace nnx::cpu {

void mean_middle(const float* x, int64_t outer, int64_t reduced, int64_t inner, float* y,
                 ThreadPool* pool) {
  if (outer == 0 || inner == 0) return;
  if (reduced == 0) {
    std::fill(y, y + outer * inner, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  const double scale = 1.0 / double(reduced);
  if (inner == 1) {  // contiguous runs: one sum per output
    parallel_for(pool, outer, std::max<int64_t>(1, 16384 / reduced), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const float* row = x + o * reduced;
        double sum = 0;
        for (int64_t r = 0; r < reduced; ++r) sum += row[r];
        y[o] = float(sum * scale);
      }
    });
    return;
  }
  // Rows of `inner` added into a row of accumulators, so reads stay sequential.
  parallel_for(pool, outer, std::max<int64_t>(1, 16384 / (reduced * inner)),
               [&](int64_t b, int64_t e) {
                 std::vector<double> acc(static_cast<size_t>(inner));
                 for (int64_t o = b; o < e; ++o) {
                   std::fill(acc.begin(), acc.end(), 0.0);
                   const float* block = x + o * reduced * inner;
                   for (int64_t r = 0; r < reduced; ++r) {
                     const float* row = block + r * inner;
                     for (int64_t i = 0; i < inner; ++i) acc[size_t(i)] += row[i];
                   }
                   float* out = y + o * inner;
                   for (int64_t i = 0; i < inner; ++i) out[i] = float(acc[size_t(i)] * scale);
                 }
               });
}

}  // namespace nnx::cpu
