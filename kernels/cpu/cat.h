// CPU body of concatenation: inputs viewed as (outer, row) byte blocks, copied side by side into
// each output row. Works for any element type.
#pragma once

#include <cstdint>
#include <span>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

struct CatPiece {
  const void* data;   // contiguous input
  int64_t row_bytes;  // bytes of one outer row: size along the cat dim * inner * element size
};

// For each outer index o, out row o is the pieces' rows o laid one after another. The output
// must not overlap the inputs, except that with one row (outer 1) a piece may already be where
// it belongs in the output: it is left as it is.
void cat_rows(std::span<const CatPiece> pieces, int64_t outer, void* out, ThreadPool* pool);

}  // namespace nnx::cpu
