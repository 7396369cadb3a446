// Permutation gather and split (see layout.h).
#include "kernels/cpu/layout.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "nnx/thread_pool.h"

namespace nnx::cpu {
namespace {

// The innermost loop of the gather, for one element width: n elements `stride` apart.
template <class T>
void gather_row(const char* src, int64_t stride, int64_t n, char* out) {
  const T* s = reinterpret_cast<const T*>(src);
  T* o = reinterpret_cast<T*>(out);
  if (stride == 1) {
    std::memcpy(o, s, size_t(n) * sizeof(T));
    return;
  }
  for (int64_t i = 0; i < n; ++i) o[i] = s[i * stride];
}

void gather_row_bytes(const char* src, int64_t stride, int64_t n, size_t width, char* out) {
  switch (width) {
    case 1:
      return gather_row<uint8_t>(src, stride, n, out);
    case 2:
      return gather_row<uint16_t>(src, stride, n, out);
    case 4:
      return gather_row<uint32_t>(src, stride, n, out);
    case 8:
      return gather_row<uint64_t>(src, stride, n, out);
    default:
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(out + size_t(i) * width, src + size_t(i * stride) * width, width);
  }
}

}  // namespace

void strided_gather(const void* src, std::span<const int64_t> out_shape,
                    std::span<const int64_t> src_strides, size_t element_size, void* out,
                    ThreadPool* pool) {
  const int rank = int(out_shape.size());
  int64_t numel = 1;
  for (int64_t d : out_shape) numel *= d;
  if (numel == 0) return;
  const char* base = static_cast<const char*>(src);
  char* dst = static_cast<char*>(out);
  if (rank == 0) {
    std::memcpy(dst, base, element_size);
    return;
  }
  const int64_t row = out_shape[size_t(rank - 1)];
  const int64_t row_stride = src_strides[size_t(rank - 1)];
  const int64_t rows = numel / row;
  parallel_for(pool, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row)),
               [&](int64_t begin, int64_t end) {
                 // The source offset of row `begin`, then an odometer over the outer dims.
                 std::array<int64_t, 8> index{};
                 int64_t offset = 0;
                 for (int64_t r = begin, d = rank - 2; d >= 0; --d) {
                   index[size_t(d)] = r % out_shape[size_t(d)];
                   r /= out_shape[size_t(d)];
                   offset += index[size_t(d)] * src_strides[size_t(d)];
                 }
                 for (int64_t r = begin; r < end; ++r) {
                   gather_row_bytes(base + size_t(offset) * element_size, row_stride, row,
                                    element_size, dst + size_t(r * row) * element_size);
                   for (int d = rank - 2; d >= 0; --d) {
                     offset += src_strides[size_t(d)];
                     if (++index[size_t(d)] < out_shape[size_t(d)]) break;
                     offset -= index[size_t(d)] * src_strides[size_t(d)];
                     index[size_t(d)] = 0;
                   }
                 }
               });
}

void split_rows(const void* in, int64_t outer, std::span<const SplitPiece> pieces,
                ThreadPool* pool) {
  int64_t in_row = 0;
  for (const SplitPiece& p : pieces) in_row += p.row_bytes;
  if (in_row == 0 || outer == 0) return;
  const char* src = static_cast<const char*>(in);
  parallel_for(
      pool, outer, std::max<int64_t>(1, (1 << 16) / in_row), [&](int64_t begin, int64_t end) {
        for (int64_t o = begin; o < end; ++o) {
          const char* row = src + o * in_row;
          for (const SplitPiece& p : pieces) {
            std::memcpy(static_cast<char*>(p.data) + o * p.row_bytes, row, size_t(p.row_bytes));
            row += p.row_bytes;
          }
        }
      });
}

}  // namespace nnx::cpu
