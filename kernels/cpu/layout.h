// CPU bodies of the ops that only move data: a dimension permutation gathered into a contiguous
// output, and the split of a tensor into consecutive pieces along one dimension. Both work on
// raw bytes, for any element type.
#pragma once

#include <cstdint>
#include <span>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

// out (contiguous, shape out_shape) = the strided source read at src_strides (in elements,
// one per output dim): out[i0, ..., ik] = src[sum i_j * src_strides[j]]. At most 8 dims.
void strided_gather(const void* src, std::span<const int64_t> out_shape,
                    std::span<const int64_t> src_strides, size_t element_size, void* out,
                    ThreadPool* pool);

struct SplitPiece {
  void* data;         // contiguous output
  int64_t row_bytes;  // bytes of one outer row: size along the split dim * inner * element size
};

// The inverse of cat_rows: each input row o (of sum(row_bytes) bytes) is cut into the pieces'
// rows o, in order. Outputs must not overlap the input.
void split_rows(const void* in, int64_t outer, std::span<const SplitPiece> pieces,
                ThreadPool* pool);

}  // namespace nnx::cpu
