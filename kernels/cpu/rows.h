// Rows of a plane read into vectors with their padding (AVX-512 builds; gather_row on AVX2 too):
// the im2col packing of the convolutions and the depthwise kernel's padded planes copy rows with
// these, masked to the row so that nothing outside it is read, instead of a libc call per short
// row.
#pragma once

#include "kernels/cpu/avx512.h"

#if defined(__AVX512F__)

#include <algorithm>
#include <cstdint>

namespace nnx::cpu {

// The lanes p of a vector loaded at column `begin` of a row whose column begin + p is inside
// [0, width): a masked load reads nothing outside the row and gives 0 in the padding.
inline __mmask16 row_lanes(int64_t begin, int64_t width) {
  const int64_t lo = std::clamp<int64_t>(-begin, 0, 16),
                hi = std::clamp<int64_t>(width - begin, 0, 16);
  return hi <= lo ? __mmask16(0) : __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1));
}
// 16 floats from column `begin` of a row `width` wide, 0 outside it: a plain load where the
// whole vector lies inside the row, a masked one only at its ends.
inline __m512 load_row(const float* row, int64_t begin, int64_t width) {
  if (begin >= 0 && begin + 16 <= width) return _mm512_loadu_ps(row + begin);
  return _mm512_maskz_loadu_ps(row_lanes(begin, width), row + begin);
}
// Indices of the even elements of two vectors (permutex2var).
inline __m512i even_lanes() {
  return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
// out[i] = row[first + stride * i] for i < n (stride 1 or 2), 0 where that column is outside
// [0, width): in registers, stores masked to the n floats, no call for short rows.
inline void gather_row(const float* row, int64_t first, int64_t stride, int64_t width, int64_t n,
                       float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t from = first + stride * i;
    __m512 v = load_row(row, from, width);
    if (stride == 2) v = _mm512_permutex2var_ps(v, even_lanes(), load_row(row, from + 16, width));
    if (n - i >= 16)
      _mm512_storeu_ps(out + i, v);
    else
      _mm512_mask_storeu_ps(out + i, lanes_below(n - i), v);
  }
}

}  // namespace nnx::cpu

#elif defined(__AVX2__)

#include <cstdint>

namespace nnx::cpu {

// As the AVX-512 helpers, 8 lanes at a time: a maskload reads nothing in its masked lanes
// (and gives 0 there), so the rows' ends need no scalar loop.
inline __m256i row_lanes8(int64_t begin, int64_t width) {
  const __m256i column = _mm256_add_epi32(_mm256_set1_epi32(int32_t(begin)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_and_si256(_mm256_cmpgt_epi32(column, _mm256_set1_epi32(-1)),
                          _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(width)), column));
}
inline __m256 load_row8(const float* row, int64_t begin, int64_t width) {
  if (begin >= 0 && begin + 8 <= width) return _mm256_loadu_ps(row + begin);
  if (begin >= width || begin + 8 <= 0) return _mm256_setzero_ps();
  return _mm256_maskload_ps(row + begin, row_lanes8(begin, width));
}
// out[i] = row[first + stride * i] for i < n (stride 1 or 2), 0 where that column is outside
// [0, width).
inline void gather_row(const float* row, int64_t first, int64_t stride, int64_t width, int64_t n,
                       float* out) {
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t from = first + stride * i;
    __m256 v = load_row8(row, from, width);
    if (stride == 2) v = even_of(v, load_row8(row, from + 8, width));
    store_lanes8(out + i, v, n - i);
  }
}

}  // namespace nnx::cpu

#endif
