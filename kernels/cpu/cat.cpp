// Concatenation on the CPU: one memcpy per (outer row, input) pair, spread over the pool.
#include "kernels/cpu/cat.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "nnx/thread_pool.h"

namespace nnx::cpu {

void cat_rows(std::span<const CatPiece> pieces, int64_t outer, void* out, ThreadPool* pool) {
  const int64_t num = int64_t(pieces.size());
  if (outer == 0 || num == 0) return;
  static thread_local std::vector<int64_t> offsets;  // grown once: no allocation per call
  offsets.resize(size_t(num));
  int64_t* out_offset = offsets.data();
  int64_t out_row = 0;
  for (int64_t p = 0; p < num; ++p) {
    out_offset[p] = out_row;
    out_row += pieces[p].row_bytes;
  }
  if (out_row == 0) return;
  auto* dst = static_cast<char*>(out);
  if (outer == 1 && std::all_of(pieces.begin(), pieces.end(), [&](const CatPiece& piece) {
        return piece.data == dst + out_offset[&piece - pieces.data()];
      }))
    return;  // the whole output computed in place: no meeting of the threads
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) * num / out_row);
  parallel_for(pool, outer * num, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o = t / num, p = t % num;
      const CatPiece& piece = pieces[p];
      char* at = dst + o * out_row + out_offset[p];
      // Empty, or (one row) computed in its place by the producer (Op::concat_dim): nothing to do.
      if (piece.row_bytes == 0 || (outer == 1 && piece.data == at)) continue;
      std::memcpy(at, static_cast<const char*>(piece.data) + o * piece.row_bytes,
                  size_t(piece.row_bytes));
    }
  });
}

}  // namespace nnx::cpu
