// Rows of a plane read into vectors with their padding (AVX-512 builds): the im2col packing of
// the convolutions and the depthwise kernel's padded planes copy rows with these, masked to the
// row so that nothing outside it is read, instead of a libc call per short row.
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

#endif
