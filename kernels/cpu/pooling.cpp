// CPU 2-D pooling (see pooling.h): one plane per task of the thread pool.
#include "kernels/cpu/pooling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/avx512.h"
#include "kernels/cpu/int_math.h"
#include "kernels/cpu/sums.h"
#include "nnx/thread_pool.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace nnx::cpu {

namespace {

// Kernel taps [lo, hi) whose input index start + tap * dilation lies in [0, size).
struct Taps {
  int64_t lo, hi;
};
Taps valid_taps(int64_t start, int64_t kernel, int64_t dilation, int64_t size) {
  const int64_t lo = start >= 0 ? 0 : ceil_div(-start, dilation);
  const int64_t hi = start >= size ? 0 : std::min(kernel, ceil_div(size - start, dilation));
  return {std::min(lo, hi), hi};
}

// Enough planes per task that small planes do not drown in scheduling.
int64_t plane_grain(int64_t plane_work) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, plane_work));
}

// Sum of one plane of n floats in four independent vector accumulators: a plane of 56x56 is
// read at the memory's pace instead of one add's latency per element (or per eight). AVX-512
// adds the last partial vector masked; AVX2 the floats past the last whole vector one by one.
float plane_sum(const float* x, int64_t n) {
  int64_t i = 0;
  float total = 0.f;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  constexpr int64_t W = vec::kWidth;
  vec::V a0 = vec::zero(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 = vec::add(a0, vec::loadu(x + i));
    a1 = vec::add(a1, vec::loadu(x + i + W));
    a2 = vec::add(a2, vec::loadu(x + i + 2 * W));
    a3 = vec::add(a3, vec::loadu(x + i + 3 * W));
  }
  for (; i + W <= n; i += W) a0 = vec::add(a0, vec::loadu(x + i));
#if defined(__AVX512F__)
  if (i < n) a1 = vec::add(a1, _mm512_maskz_loadu_ps(lanes_below(n - i), x + i));
  i = n;
  total = _mm512_reduce_add_ps(vec::add(vec::add(a0, a1), vec::add(a2, a3)));
#else
  total = horizontal_sum(vec::add(vec::add(a0, a1), vec::add(a2, a3)));
#endif
#endif
  for (; i < n; ++i) total += x[i];
  return total;
}

// max of a and b where a NaN in either wins (PyTorch's max pooling propagates NaN).
inline float nan_max(float best, float v) {
  return v > best || v != v ? v : best;
}

// out[i] = nan_max(m[2i], m[2i + 1]) for i < n: the column step of a 2-wide, stride-2 window.
void pairwise_max(const float* m, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256 v0 = _mm256_loadu_ps(m + 2 * i), v1 = _mm256_loadu_ps(m + 2 * i + 8);
    // Even and odd elements of the 16, in order (shuffle within lanes, then fix the lanes).
    const __m256 even = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0x88)), 0xD8));
    const __m256 odd = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0xDD)), 0xD8));
    // maxps returns its second operand when either is NaN: odd's NaNs survive; even's are
    // put back by the blend.
    const __m256 mx = _mm256_max_ps(even, odd);
    const __m256 even_nan = _mm256_cmp_ps(even, even, _CMP_UNORD_Q);
    _mm256_storeu_ps(out + i, _mm256_blendv_ps(mx, even, even_nan));
  }
#endif
  for (; i < n; ++i) out[i] = nan_max(m[2 * i], m[2 * i + 1]);
}

#if defined(__AVX512F__)
// out[i] = the window maximum over taps kw < kernel of window[2i + kw], for i < n, taken in
// PyTorch's order (a later tap replaces when strictly greater or NaN): the column step of a
// stride-2 window, 16 outputs at a time, each tap's even-indexed elements gathered from two
// loads by one permute. Reads window[0, 2n + kernel + 30): the caller's row is that long.
void stride2_window_max(const float* window, int64_t n, int64_t kernel, float* out) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t i = 0; i < n; i += 16) {
    const float* w = window + 2 * i;
    __m512 best = _mm512_permutex2var_ps(_mm512_loadu_ps(w), even, _mm512_loadu_ps(w + 16));
    for (int64_t kw = 1; kw < kernel; ++kw) {
      const __m512 v =
          _mm512_permutex2var_ps(_mm512_loadu_ps(w + kw), even, _mm512_loadu_ps(w + kw + 16));
      const __mmask16 take =
          _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      best = _mm512_mask_mov_ps(best, take, v);
    }
    _mm512_mask_storeu_ps(out + i, lanes_below(n - i), best);
  }
}

// a where a is NaN, else max(a, b) with b's NaN kept: NaN from either side wins.
inline __m512 nan_max16(__m512 a, __m512 b) {
  return _mm512_mask_mov_ps(_mm512_max_ps(a, b), _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), a);
}

// One output row of a 3-wide, stride-2 window with one column of padding on each side
// (ResNet's pooling): out[j] = the maximum of columns 2j - 1, 2j, 2j + 1 (those inside the row)
// over the `count` rows `row[0..count)` of `width` floats, for j < n, NaN winning. All in
// registers, 16 outputs from two vectors of each row: the even columns, the odd ones, and the
// odd ones one lane on (the previous vector's last odd column first). `column_before` is column
// -1's maximum: -inf for the padding; a window without padding (columns 2j, 2j + 1, 2j + 2) is
// this one over the rows from their column 1 on, with their column 0's maximum there.
void window3_stride2_row(const float* const* row, int count, int64_t width, int64_t n, float* out,
                         float column_before = -std::numeric_limits<float>::infinity()) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 before = _mm512_set1_ps(column_before);  // column -1 in lane 15
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t c = 2 * j;  // the two vectors' first column
    const __mmask16 m0 = lanes_below(width - c), m1 = lanes_below(width - c - 16);
    __m512 v0 = _mm512_mask_loadu_ps(lowest, m0, row[0] + c);
    __m512 v1 = _mm512_mask_loadu_ps(lowest, m1, row[0] + c + 16);
    for (int r = 1; r < count; ++r) {
      v0 = nan_max16(v0, _mm512_mask_loadu_ps(lowest, m0, row[r] + c));
      v1 = nan_max16(v1, _mm512_mask_loadu_ps(lowest, m1, row[r] + c + 16));
    }
    const __m512 e = _mm512_permutex2var_ps(v0, even, v1);  // columns c + 2i
    const __m512 o = _mm512_permutex2var_ps(v0, odd, v1);   // columns c + 2i + 1
    // Columns c + 2i - 1: o one lane on, lane 0 from the previous vector's last odd column.
    const __m512 l = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(o), _mm512_castps_si512(before), 15));
    _mm512_mask_storeu_ps(out + j, lanes_below(n - j), nan_max16(nan_max16(l, e), o));
    before = o;
  }
}

// As window3_stride2_row, with each output's index in the plane (row * width + column) of the
// first maximum in PyTorch's scan order (rows, then columns), which is the maximum with the
// smallest index: down the rows the first one strictly greater, then across the columns the
// greater or the equal one with the smaller index. Rows row[r] are plane rows h[r]. Returns
// false, with the outputs unspecified, where a value met is NaN (the caller's exact scan then
// decides which NaN's index PyTorch keeps).
bool window3_stride2_argmax_row(const float* const* row, const int64_t* h, int count, int64_t width,
                                int64_t n, float* out, int32_t* out_index) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  // Padding: -inf with an index past every real one, so a real -inf ties and wins.
  const __m512i none = _mm512_set1_epi32(std::numeric_limits<int32_t>::max());
  __m512 before = lowest;  // column -1 in lane 15
  __m512i before_at = none;
  __mmask16 nan = 0;
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t c = 2 * j;
    const __mmask16 m[2] = {lanes_below(width - c), lanes_below(width - c - 16)};
    __m512 v[2];
    __m512i at[2];
    for (int k = 0; k < 2; ++k) {
      const __m512i column = _mm512_add_epi32(iota, _mm512_set1_epi32(int32_t(c + 16 * k)));
      v[k] = _mm512_mask_loadu_ps(lowest, m[k], row[0] + c + 16 * k);
      at[k] = _mm512_mask_add_epi32(none, m[k], column, _mm512_set1_epi32(int32_t(h[0] * width)));
      nan |= _mm512_mask_cmp_ps_mask(m[k], v[k], v[k], _CMP_UNORD_Q);
      for (int r = 1; r < count; ++r) {
        const __m512 x = _mm512_mask_loadu_ps(lowest, m[k], row[r] + c + 16 * k);
        nan |= _mm512_mask_cmp_ps_mask(m[k], x, x, _CMP_UNORD_Q);
        const __mmask16 take = _mm512_cmp_ps_mask(x, v[k], _CMP_GT_OQ);
        v[k] = _mm512_mask_mov_ps(v[k], take, x);
        at[k] =
            _mm512_mask_add_epi32(at[k], take, column, _mm512_set1_epi32(int32_t(h[r] * width)));
      }
    }
    if (nan) return false;
    const __m512 e = _mm512_permutex2var_ps(v[0], even, v[1]);
    const __m512i e_at = _mm512_permutex2var_epi32(at[0], even, at[1]);
    const __m512 o = _mm512_permutex2var_ps(v[0], odd, v[1]);
    const __m512i o_at = _mm512_permutex2var_epi32(at[0], odd, at[1]);
    __m512 best = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(o), _mm512_castps_si512(before), 15));
    __m512i best_at = _mm512_alignr_epi32(o_at, before_at, 15);
    auto merge = [&](__m512 x, __m512i x_at) {
      const __mmask16 take =
          _mm512_cmp_ps_mask(x, best, _CMP_GT_OQ) |
          (_mm512_cmp_ps_mask(x, best, _CMP_EQ_OQ) & _mm512_cmplt_epi32_mask(x_at, best_at));
      best = _mm512_mask_mov_ps(best, take, x);
      best_at = _mm512_mask_mov_epi32(best_at, take, x_at);
    };
    merge(e, e_at);
    merge(o, o_at);
    const __mmask16 keep = lanes_below(n - j);
    _mm512_mask_storeu_ps(out + j, keep, best);
    _mm512_mask_storeu_epi32(out_index + j, keep, best_at);
    before = o;
    before_at = o_at;
  }
  return true;
}
#elif defined(__AVX2__)
// a where a is NaN, else max(a, b) with b's NaN kept: NaN from either side wins (maxps returns
// its second operand when either is NaN).
inline __m256 nan_max8(__m256 a, __m256 b) {
  return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}

// Floats [c, c + 8) of a row of `width`, -inf past its end (nothing read there).
inline __m256 load_or_lowest(const float* row, int64_t c, int64_t width) {
  if (c + 8 <= width) return _mm256_loadu_ps(row + c);
  const __m256i m = lanes8(width - c);
  return _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()),
                          _mm256_maskload_ps(row + c, m), _mm256_castsi256_ps(m));
}

// The AVX-512 window3_stride2_row's 8-output form (the same maxima in the same order): the even
// and odd columns of two vectors of each row's maxima, the odd ones one lane on for the columns
// before. The rows' count is a template argument and the outputs whose 16 columns lie inside the
// row take plain loads and a plain store, the last few masked loads and store_lanes8's parts:
// the loop that tested each load's bounds and built its mask, with `count` read per vector, and
// ended each row with a masked store, spent about 50 cycles per 8 outputs.
template <int Count>
void window3_stride2_row_of(const float* const* row, int64_t width, int64_t n, float* out,
                            float column_before) {
  const float* r0 = row[0];
  const float* r1 = row[Count > 1 ? 1 : 0];
  const float* r2 = row[Count > 2 ? 2 : 0];
  __m256 before = _mm256_set1_ps(column_before);  // column -1 in lane 7
  // Maxima of outputs j..j+7 from columns 2j..2j+15 of the rows' maxima (v0, v1).
  auto window = [&before](__m256 v0, __m256 v1) __attribute__((always_inline)) {
    const __m256 e = even_of(v0, v1);  // columns c + 2i
    const __m256 o = odd_of(v0, v1);   // columns c + 2i + 1
    // Columns c + 2i - 1: o one lane on, lane 0 the previous vector's last odd column (lane 7):
    // [before's high half, o's low half], then each 128-bit half 12 bytes on.
    const __m256 cross = _mm256_permute2f128_ps(before, o, 0x21);
    const __m256 l = _mm256_castsi256_ps(
        _mm256_alignr_epi8(_mm256_castps_si256(o), _mm256_castps_si256(cross), 12));
    before = o;
    return nan_max8(nan_max8(l, e), o);
  };
  int64_t j = 0;
  for (; j + 8 <= n && 2 * j + 16 <= width; j += 8) {
    const int64_t c = 2 * j;
    __m256 v0 = _mm256_loadu_ps(r0 + c), v1 = _mm256_loadu_ps(r0 + c + 8);
    if constexpr (Count > 1) {
      v0 = nan_max8(v0, _mm256_loadu_ps(r1 + c));
      v1 = nan_max8(v1, _mm256_loadu_ps(r1 + c + 8));
    }
    if constexpr (Count > 2) {
      v0 = nan_max8(v0, _mm256_loadu_ps(r2 + c));
      v1 = nan_max8(v1, _mm256_loadu_ps(r2 + c + 8));
    }
    _mm256_storeu_ps(out + j, window(v0, v1));
  }
  for (; j < n; j += 8) {
    const int64_t c = 2 * j;
    __m256 v0 = load_or_lowest(r0, c, width), v1 = load_or_lowest(r0, c + 8, width);
    if constexpr (Count > 1) {
      v0 = nan_max8(v0, load_or_lowest(r1, c, width));
      v1 = nan_max8(v1, load_or_lowest(r1, c + 8, width));
    }
    if constexpr (Count > 2) {
      v0 = nan_max8(v0, load_or_lowest(r2, c, width));
      v1 = nan_max8(v1, load_or_lowest(r2, c + 8, width));
    }
    store_lanes8(out + j, window(v0, v1), n - j);
  }
}

void window3_stride2_row(const float* const* row, int count, int64_t width, int64_t n, float* out,
                         float column_before = -std::numeric_limits<float>::infinity()) {
  if (count >= 3) return window3_stride2_row_of<3>(row, width, n, out, column_before);
  if (count == 2) return window3_stride2_row_of<2>(row, width, n, out, column_before);
  window3_stride2_row_of<1>(row, width, n, out, column_before);
}
#endif

// For each of the `width` columns: the maximum over `count` rows first_row, first_row +
// step, ... of `plane` (row stride `width`) and the index in the plane (row * width + column) of
// the first row reaching it (strictly greater replaces). Returns whether any of those values is
// NaN (the results are then not used).
bool column_argmax(const float* plane, int64_t width, int64_t first_row, int64_t step,
                   int64_t count, float* best, int32_t* index) {
  const float* src = plane + first_row * width;
  std::copy(src, src + width, best);
  const int32_t base = int32_t(first_row * width);
  // Row by row (each row streamed once), the running maxima and indices kept in `best` and
  // `index`, which stay in the L1 cache.
#if defined(__AVX2__)
  const int64_t vec_end = width / 8 * 8;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 unordered = _mm256_setzero_ps();
  for (int64_t w = 0; w < vec_end; w += 8) {
    const __m256 b = _mm256_loadu_ps(src + w);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(index + w),
                        _mm256_add_epi32(_mm256_set1_epi32(base + int32_t(w)), lane));
  }
  for (int64_t k = 1; k < count; ++k) {
    const int64_t h = first_row + k * step;
    const float* line = plane + h * width;
    const int32_t row_base = int32_t(h * width);
    for (int64_t w = 0; w < vec_end; w += 8) {
      const __m256 b = _mm256_loadu_ps(best + w);
      const __m256 v = _mm256_loadu_ps(line + w);
      const __m256 take = _mm256_cmp_ps(v, b, _CMP_GT_OQ);
      unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      _mm256_storeu_ps(best + w, _mm256_blendv_ps(b, v, take));
      const __m256 r = _mm256_loadu_ps(reinterpret_cast<const float*>(index + w));
      const __m256 at =
          _mm256_castsi256_ps(_mm256_add_epi32(_mm256_set1_epi32(row_base + int32_t(w)), lane));
      _mm256_storeu_ps(reinterpret_cast<float*>(index + w), _mm256_blendv_ps(r, at, take));
    }
  }
  bool nan = _mm256_movemask_ps(unordered) != 0;
#else
  const int64_t vec_end = 0;
  bool nan = false;
#endif
  for (int64_t c = vec_end; c < width; ++c) {
    index[c] = base + int32_t(c);
    nan = nan || best[c] != best[c];
  }
  for (int64_t k = 1; k < count; ++k) {
    const int64_t h = first_row + k * step;
    const float* line = plane + h * width;
    for (int64_t c = vec_end; c < width; ++c) {
      if (line[c] > best[c]) {
        best[c] = line[c];
        index[c] = int32_t(h * width + c);
      }
      nan = nan || line[c] != line[c];
    }
  }
  return nan;
}

#if defined(__AVX2__)
// The step across each window's columns for outputs [0, n) of a row, n a multiple of 8, from the
// columns' maxima over the window's rows (best, index; no NaN among them): per output, the
// largest, ties to the smaller index (the first in PyTorch's scan order), 8 outputs at a time
// (the scalar loop's data-dependent selects took 4.4 of a ResNet-18 training step's 190 ms).
// Taps outside [0, width) are skipped; an output with none gets -inf and index -1.
void window_argmax(const float* best, const int32_t* index, int64_t width, int64_t stride,
                   int64_t pad, int64_t kernel, int64_t dilation, int64_t n, float* out,
                   int32_t* out_index) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i limit = _mm256_set1_epi32(int32_t(width));
  const __m256 lowest = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256i none = _mm256_set1_epi32(std::numeric_limits<int32_t>::max());
  for (int64_t o = 0; o < n; o += 8) {
    const __m256i first =
        _mm256_sub_epi32(_mm256_mullo_epi32(_mm256_add_epi32(_mm256_set1_epi32(int32_t(o)), lane),
                                            _mm256_set1_epi32(int32_t(stride))),
                         _mm256_set1_epi32(int32_t(pad)));
    __m256 m = lowest;
    __m256i at = none, any = _mm256_setzero_si256();
    for (int64_t k = 0; k < kernel; ++k) {
      const __m256i w = _mm256_add_epi32(first, _mm256_set1_epi32(int32_t(k * dilation)));
      const __m256i valid = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), w),
                                                _mm256_cmpgt_epi32(limit, w));
      any = _mm256_or_si256(any, valid);
      const __m256 v = _mm256_mask_i32gather_ps(lowest, best, w, _mm256_castsi256_ps(valid), 4);
      const __m256i i = _mm256_mask_i32gather_epi32(none, index, w, valid, 4);
      const __m256 take =
          _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ),
                       _mm256_and_ps(_mm256_cmp_ps(v, m, _CMP_EQ_OQ),
                                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(at, i))));
      m = _mm256_blendv_ps(m, v, take);
      at = _mm256_castps_si256(
          _mm256_blendv_ps(_mm256_castsi256_ps(at), _mm256_castsi256_ps(i), take));
    }
    _mm256_storeu_ps(out + o, m);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_index + o),
                        _mm256_blendv_epi8(_mm256_set1_epi32(-1), at, any));
  }
}
#endif

// (out[i], out_index[i]) = the larger of (m[2i], index[2i]) and (m[2i + 1], index[2i + 1]) for
// i < n, ties to the smaller index (the first in PyTorch's scan order): the column step of a
// 2-wide, stride-2 window over NaN-free values. May run in place.
void pairwise_argmax(const float* m, const int32_t* index, int64_t n, float* out,
                     int32_t* out_index) {
  int64_t i = 0;
#if defined(__AVX2__)
  auto evens = [](__m256 a, __m256 b) {
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  };
  auto odds = [](__m256 a, __m256 b) {
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
  };
  for (; i + 8 <= n; i += 8) {
    const __m256 v0 = _mm256_loadu_ps(m + 2 * i), v1 = _mm256_loadu_ps(m + 2 * i + 8);
    const __m256 x0 = _mm256_loadu_ps(reinterpret_cast<const float*>(index + 2 * i));
    const __m256 x1 = _mm256_loadu_ps(reinterpret_cast<const float*>(index + 2 * i + 8));
    const __m256 ev = evens(v0, v1), od = odds(v0, v1);
    const __m256 ex = evens(x0, x1), ox = odds(x0, x1);
    const __m256 earlier =
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_castps_si256(ex), _mm256_castps_si256(ox)));
    const __m256 take = _mm256_or_ps(_mm256_cmp_ps(od, ev, _CMP_GT_OQ),
                                     _mm256_and_ps(_mm256_cmp_ps(od, ev, _CMP_EQ_OQ), earlier));
    _mm256_storeu_ps(out + i, _mm256_blendv_ps(ev, od, take));
    _mm256_storeu_ps(reinterpret_cast<float*>(out_index + i), _mm256_blendv_ps(ex, ox, take));
  }
#endif
  for (; i < n; ++i) {
    const float e = m[2 * i], o = m[2 * i + 1];
    const int32_t ei = index[2 * i], oi = index[2 * i + 1];
    const bool take = o > e || (o == e && oi < ei);
    out[i] = take ? o : e;
    out_index[i] = take ? oi : ei;
  }
}

// Each output row's and column's taps inside the input, the same for every plane: in this
// thread's vectors, grown once, so that steady-state runs allocate nothing (a fused convolution
// pools every band through max_pool2d). Lambdas running on other threads must see them through
// the reference returned, not by naming the thread_local.
struct WindowTaps {
  std::vector<Taps> rows, cols;
};
const WindowTaps& window_taps(const Pool2dShape& s) {
  static thread_local WindowTaps taps;
  taps.rows.resize(static_cast<size_t>(s.out_h));
  taps.cols.resize(static_cast<size_t>(s.out_w));
  for (int64_t oh = 0; oh < s.out_h; ++oh)
    taps.rows[oh] = valid_taps(oh * s.stride_h - s.pad_h, s.kernel_h, s.dilation_h, s.in_h);
  for (int64_t ow = 0; ow < s.out_w; ++ow)
    taps.cols[ow] = valid_taps(ow * s.stride_w - s.pad_w, s.kernel_w, s.dilation_w, s.in_w);
  return taps;
}

#if defined(__AVX512F__) || defined(__AVX2__)
// ResNet's pooling across the columns (3 wide, stride 2, a column of padding each side), at
// most 3 rows: window3_stride2_row and its argmax variant take a row of outputs at a time.
bool resnet_window(const Pool2dShape& s) {
  return s.kernel_w == 3 && s.stride_w == 2 && s.pad_w == 1 && s.dilation_w == 1 && s.kernel_h <= 3;
}
// The same window without padding across the columns (SqueezeNet's 3x3, stride 2, ceil_mode
// pooling), for max_pool2d: window3_stride2_row from each row's column 1 on.
bool unpadded_window3(const Pool2dShape& s) {
  return s.kernel_w == 3 && s.stride_w == 2 && s.pad_w == 0 && s.dilation_w == 1 &&
         s.kernel_h <= 3 && s.in_w >= 3;
}

// Output row oh's window rows inside the plane `in` (`taps`: its row taps): their pointers and
// row numbers; returns how many.
int window_rows(const Pool2dShape& s, const Taps& taps, int64_t oh, const float* in,
                const float* (&row)[3], int64_t (&h)[3]) {
  int count = 0;
  for (int64_t kh = taps.lo; kh < taps.hi; ++kh, ++count) {
    h[count] = oh * s.stride_h - s.pad_h + kh * s.dilation_h;
    row[count] = in + h[count] * s.in_w;
  }
  return count;
}
#endif

}  // namespace

void max_pool2d(const Pool2dShape& s, const float* input, float* output, ThreadPool* pool,
                int64_t output_plane_stride) {
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t out_stride = output_plane_stride > 0 ? output_plane_stride : out_plane;
  const WindowTaps& taps = window_taps(s);
  const std::vector<Taps>& rows = taps.rows;
  const std::vector<Taps>& cols = taps.cols;
  const float lowest = -std::numeric_limits<float>::infinity();
  // NaN wins, as in PyTorch: a NaN is taken, and nothing replaces it.
  auto take = [](float best, float v) { return nan_max(best, v); };
  // The windows of most networks: 2, 4 or 8 wide with the same stride, no padding or dilation
  // across the width: the column step halves the row's maxima in place, 1, 2 or 3 times.
  const bool halving = (s.kernel_w == 2 || s.kernel_w == 4 || s.kernel_w == 8) &&
                       s.stride_w == s.kernel_w && s.dilation_w == 1 && s.pad_w == 0 &&
                       s.kernel_w * s.out_w <= s.in_w;
  // Stride 2 without dilation (ResNet's 3x3 stride-2 pool): the row of maxima split into its
  // even and odd window columns, padding as -inf, so every tap is a contiguous max over the
  // output row.
  const bool phased = !halving && s.stride_w == 2 && s.dilation_w == 1;
  const int64_t span = (s.out_w - 1) * 2 + s.kernel_w;  // window columns, padding included
  const int64_t half = (span + 1) / 2;
#if defined(__AVX512F__) || defined(__AVX2__)
  // 3x3, stride-2 windows with a column of padding each side (ResNet's) or none (SqueezeNet's),
  // any row padding: a row at a time in registers (window3_stride2_row), no row of maxima stored
  // and read back.
  if (resnet_window(s) || unpadded_window3(s)) {
    const bool unpadded = s.pad_w == 0;
    parallel_for(pool, s.planes, plane_grain(out_plane * s.kernel_h * s.kernel_w),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t p = begin; p < end; ++p) {
                     const float* in = input + p * in_plane;
                     float* out = output + p * out_stride;
                     for (int64_t oh = 0; oh < s.out_h; ++oh, out += s.out_w) {
                       const float* row[3];
                       int64_t h[3];
                       const int count = window_rows(s, rows[oh], oh, in, row, h);
                       if (count == 0) {
                         std::fill(out, out + s.out_w, lowest);
                       } else if (unpadded) {
                         float first = row[0][0];  // column 0's maximum, then from column 1
                         for (int r = 1; r < count; ++r) first = nan_max(first, row[r][0]);
                         for (int r = 0; r < count; ++r) ++row[r];
                         window3_stride2_row(row, count, s.in_w - 1, s.out_w, out, first);
                       } else {
                         window3_stride2_row(row, count, s.in_w, s.out_w, out);
                       }
                     }
                   }
                 });
    return;
  }
#endif
  auto body = [&](int64_t begin, int64_t end) {
    // Separably: the window's maximum down each input column of an output row (contiguous,
    // so it vectorises), then across the taps of each output column.
    // One row of maxima per thread (a ring of four for the AVX-512 window step), grown once:
    // steady-state runs allocate nothing here.
    // For the phased split the row sits after pad_w floats of -inf and is followed by -inf up
    // to 2 * half: each phase is then a plain stride-2 copy (no test per column).
    thread_local std::vector<float> column_max, phases;
    const int64_t lead = phased ? s.pad_w : 0;
#if defined(__AVX512F__)
    // stride2_window_max reads up to 2 * out_w + kernel_w + 30 floats of the row.
    const int64_t row_floats = std::max({s.in_w + lead, phased ? 2 * half : int64_t(0),
                                         phased ? 2 * s.out_w + s.kernel_w + 30 : 0});
    // Rows of maxima in a ring, each row's window step taken two rows later: read straight
    // after being stored, shifted by a float or two, a row's loads waited on the stores
    // draining (a store cannot forward to a load that straddles two of them).
    constexpr int64_t kRing = 4, kLag = 2;
    const int64_t kept_rows = phased ? kRing : 1;
    auto window_step = [&](int64_t plane, int64_t r) {
      if (r >= 0 && rows[r].lo < rows[r].hi)
        stride2_window_max(column_max.data() + (r % kRing) * row_floats, s.out_w, s.kernel_w,
                           output + plane * out_stride + r * s.out_w);
    };
#else
    const int64_t row_floats = std::max(s.in_w + lead, phased ? 2 * half : int64_t(0));
    const int64_t kept_rows = 1;
    if (phased && phases.size() < static_cast<size_t>(2 * half)) phases.resize(size_t(2 * half));
#endif
    if (column_max.size() < size_t(kept_rows * row_floats))
      column_max.resize(size_t(kept_rows * row_floats));
    if (phased) {
      for (int64_t r = 0; r < kept_rows; ++r) {
        const auto row = column_max.begin() + r * row_floats;
        std::fill(row, row + lead, lowest);
        if (lead + s.in_w < 2 * half)  // else the window ends within the row
          std::fill(row + lead + s.in_w, row + 2 * half, lowest);
      }
    }
    for (int64_t p = begin; p < end; ++p) {
      const float* in = input + p * in_plane;
      float* out = output + p * out_stride;
      for (int64_t oh = 0; oh < s.out_h; ++oh, out += s.out_w) {
        const int64_t h0 = oh * s.stride_h - s.pad_h;
#if defined(__AVX512F__)
        if (phased) window_step(p, oh - kLag);
#endif
        if (rows[oh].lo >= rows[oh].hi) {
          std::fill(out, out + s.out_w, lowest);
          continue;
        }
        float* m = column_max.data() + (oh % kept_rows) * row_floats + lead;
        // The first two rows' maxima, or the one row, then the others'.
        const float* first = in + (h0 + rows[oh].lo * s.dilation_h) * s.in_w;
        int64_t kh = rows[oh].lo + 1;
        if (kh < rows[oh].hi) {
          const float* second = first + s.dilation_h * s.in_w;
          for (int64_t w = 0; w < s.in_w; ++w) m[w] = take(first[w], second[w]);
          ++kh;
        } else {
          std::copy(first, first + s.in_w, m);
        }
        for (; kh < rows[oh].hi; ++kh) {
          const float* row = in + (h0 + kh * s.dilation_h) * s.in_w;
          for (int64_t w = 0; w < s.in_w; ++w) m[w] = take(m[w], row[w]);
        }
        if (halving) {
          int64_t n = s.kernel_w * s.out_w;
          for (; n > 2 * s.out_w; n /= 2)
            pairwise_max(m, n / 2, m);  // in place: writes trail reads
          pairwise_max(m, s.out_w, out);
          continue;
        }
        if (phased) {
#if defined(__AVX512F__)
          continue;  // window_step, kLag rows later
#endif
          float* even = phases.data();
          float* odd = even + half;
          const float* window = column_max.data();  // window column c at window[c]
          for (int64_t i = 0; i < half; ++i) {
            even[i] = window[2 * i];
            odd[i] = window[2 * i + 1];
          }
          std::copy(even, even + s.out_w, out);
          for (int64_t kw = 1; kw < s.kernel_w; ++kw) {
            const float* tap = (kw % 2 == 0 ? even : odd) + kw / 2;
            for (int64_t ow = 0; ow < s.out_w; ++ow) out[ow] = take(out[ow], tap[ow]);
          }
          continue;
        }
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          const int64_t w0 = ow * s.stride_w - s.pad_w;
          float best = lowest;
          for (int64_t kw = cols[ow].lo; kw < cols[ow].hi; ++kw)
            best = take(best, m[w0 + kw * s.dilation_w]);
          out[ow] = best;
        }
      }
#if defined(__AVX512F__)
      if (phased)
        for (int64_t r = std::max<int64_t>(0, s.out_h - kLag); r < s.out_h; ++r) window_step(p, r);
#endif
    }
  };
  parallel_for(pool, s.planes, plane_grain(out_plane * s.kernel_h * s.kernel_w), body);
}

namespace {

// A window of avg_pool2d along one axis: [lo, hi) inside the input, and its extent within the
// padded input, which ceil_mode windows can overrun and which count_include_pad divides by.
struct AvgWindow {
  int64_t lo, hi, padded;
};
AvgWindow avg_window(int64_t start, int64_t kernel, int64_t pad, int64_t size) {
  const int64_t end = std::min(start + kernel, size + pad);
  return {std::max<int64_t>(start, 0), std::min(end, size), end - start};
}

}  // namespace

void avg_pool2d(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                const float* input, float* output, ThreadPool* pool) {
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  std::vector<AvgWindow> rows(static_cast<size_t>(s.out_h)), cols(static_cast<size_t>(s.out_w));
  for (int64_t oh = 0; oh < s.out_h; ++oh)
    rows[oh] = avg_window(oh * s.stride_h - s.pad_h, s.kernel_h, s.pad_h, s.in_h);
  for (int64_t ow = 0; ow < s.out_w; ++ow)
    cols[ow] = avg_window(ow * s.stride_w - s.pad_w, s.kernel_w, s.pad_w, s.in_w);
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* in = input + p * in_plane;
      float* out = output + p * out_plane;
      for (int64_t oh = 0; oh < s.out_h; ++oh) {
        const AvgWindow& r = rows[oh];
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          const AvgWindow& c = cols[ow];
          float& result = out[oh * s.out_w + ow];
          if (r.lo >= r.hi || c.lo >= c.hi) {
            result = 0.f;
            continue;
          }
          float sum = 0.f;
          for (int64_t h = r.lo; h < r.hi; ++h)
            for (int64_t w = c.lo; w < c.hi; ++w) sum += in[h * s.in_w + w];
          const int64_t divisor = divisor_override != 0 ? divisor_override
                                  : count_include_pad   ? r.padded * c.padded
                                                        : (r.hi - r.lo) * (c.hi - c.lo);
          result = sum / float(divisor);
        }
      }
    }
  };
  parallel_for(pool, s.planes, plane_grain(out_plane * s.kernel_h * s.kernel_w), body);
}

void adaptive_avg_pool2d(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                         const float* input, float* output, ThreadPool* pool) {
  const int64_t in_plane = in_h * in_w, out_plane = out_h * out_w;
  if (out_plane == 1) {
    // Global pooling (ResNet's 2048 planes of 7x7): eight planes summed side by side, each in
    // PyTorch's order; one at a time waited on every add's latency.
    constexpr int64_t kSide = 8;
    const float count = float(in_plane);
    if (in_plane >= 64) {
      // Planes of 8x8 and more: each summed in vectors (EfficientNet's 56x56 and 112x112).
      parallel_for(pool, planes, plane_grain(in_plane), [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p)
          output[p] = plane_sum(input + p * in_plane, in_plane) / count;
      });
      return;
    }
    parallel_for(pool, planes, plane_grain(in_plane), [&](int64_t begin, int64_t end) {
      int64_t p = begin;
      for (; p + kSide <= end; p += kSide) {
        const float* in = input + p * in_plane;
        float sum[kSide] = {};
        for (int64_t i = 0; i < in_plane; ++i)
          for (int64_t j = 0; j < kSide; ++j) sum[j] += in[j * in_plane + i];
        for (int64_t j = 0; j < kSide; ++j) output[p + j] = sum[j] / count;
      }
      for (; p < end; ++p) {
        float sum = 0.f;
        for (int64_t i = 0; i < in_plane; ++i) sum += input[p * in_plane + i];
        output[p] = sum / count;
      }
    });
    return;
  }
  parallel_for(pool, planes, plane_grain(in_plane), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* in = input + p * in_plane;
      float* out = output + p * out_plane;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        const int64_t h0 = oh * in_h / out_h, h1 = ceil_div((oh + 1) * in_h, out_h);
        for (int64_t ow = 0; ow < out_w; ++ow) {
          const int64_t w0 = ow * in_w / out_w, w1 = ceil_div((ow + 1) * in_w, out_w);
          float sum = 0.f;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) sum += in[h * in_w + w];
          out[oh * out_w + ow] = sum / float((h1 - h0) * (w1 - w0));
        }
      }
    }
  });
}

void max_pool2d_with_indices(const Pool2dShape& s, const float* input, float* output,
                             int32_t* indices, ThreadPool* pool) {
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const WindowTaps& taps = window_taps(s);
  const std::vector<Taps>& rows = taps.rows;
  const std::vector<Taps>& cols = taps.cols;
  const int64_t in_w = s.in_w, out_w = s.out_w;
  const float lowest = -std::numeric_limits<float>::infinity();
  const bool halving = (s.kernel_w == 2 || s.kernel_w == 4 || s.kernel_w == 8) &&
                       s.stride_w == s.kernel_w && s.dilation_w == 1 && s.pad_w == 0 &&
                       s.kernel_w * s.out_w <= s.in_w;
  // Exact scan of one output row in PyTorch's order (rows, then columns): strictly greater, or
  // NaN, takes the index; so ties go to the first maximum and NaN to the last NaN.
  auto scan_row = [&](const float* in, int64_t oh, float* out, int32_t* index) {
    const int64_t h0 = oh * s.stride_h - s.pad_h;
    for (int64_t ow = 0; ow < out_w; ++ow) {
      if (cols[ow].lo >= cols[ow].hi) {
        out[ow] = lowest;
        index[ow] = -1;
        continue;
      }
      const int64_t w0 = ow * s.stride_w - s.pad_w;
      float best = lowest;
      int64_t at = (h0 + rows[oh].lo * s.dilation_h) * in_w + w0 + cols[ow].lo * s.dilation_w;
      for (int64_t kh = rows[oh].lo; kh < rows[oh].hi; ++kh) {
        for (int64_t kw = cols[ow].lo; kw < cols[ow].hi; ++kw) {
          const int64_t i = (h0 + kh * s.dilation_h) * in_w + w0 + kw * s.dilation_w;
          if (in[i] > best || in[i] != in[i]) {
            best = in[i];
            at = i;
          }
        }
      }
      out[ow] = best;
      index[ow] = int32_t(at);
    }
  };
#if defined(__AVX512F__)
  // ResNet's pooling (3x3, stride 2, a column of padding each side): a row at a time in
  // registers (window3_stride2_argmax_row), a row that meets a NaN by the exact scan.
  if (resnet_window(s)) {
    parallel_for(
        pool, s.planes, plane_grain(out_plane * s.kernel_h * s.kernel_w),
        [&](int64_t begin, int64_t end) {
          for (int64_t p = begin; p < end; ++p) {
            const float* in = input + p * in_plane;
            float* out = output + p * out_plane;
            int32_t* idx = indices + p * out_plane;
            for (int64_t oh = 0; oh < s.out_h; ++oh, out += out_w, idx += out_w) {
              const float* row[3];
              int64_t h[3];
              const int count = window_rows(s, rows[oh], oh, in, row, h);
              if (count == 0) {
                std::fill(out, out + out_w, lowest);
                std::fill(idx, idx + out_w, int32_t(-1));
              } else if (!window3_stride2_argmax_row(row, h, count, in_w, out_w, out, idx)) {
                scan_row(in, oh, out, idx);
              }
            }
          }
        });
    return;
  }
#endif
  auto body = [&](int64_t begin, int64_t end) {
    // Separably, as the first maximum in row-major order is the maximum with the smallest index
    // in the plane: down each input column the first maximum over the window's rows
    // (vectorised), then across each window's columns the largest, ties to the smaller index.
    // A row of windows that meets a NaN is redone by the exact scan.
    // Rows of maxima per thread, grown once: steady-state runs allocate nothing here.
    thread_local std::vector<float> column_best;
    thread_local std::vector<int32_t> column_index;
    if (column_best.size() < static_cast<size_t>(in_w)) {
      column_best.resize(size_t(in_w));
      column_index.resize(size_t(in_w));
    }
    float* cb = column_best.data();
    int32_t* ci = column_index.data();
    for (int64_t p = begin; p < end; ++p) {
      const float* in = input + p * in_plane;
      float* out = output + p * out_plane;
      int32_t* idx = indices + p * out_plane;
      for (int64_t oh = 0; oh < s.out_h; ++oh, out += out_w, idx += out_w) {
        if (rows[oh].lo >= rows[oh].hi) {
          std::fill(out, out + out_w, lowest);
          std::fill(idx, idx + out_w, int32_t(-1));
          continue;
        }
        const int64_t h0 = oh * s.stride_h - s.pad_h;
        const int64_t first = h0 + rows[oh].lo * s.dilation_h;
        if (column_argmax(in, in_w, first, s.dilation_h, rows[oh].hi - rows[oh].lo, cb, ci)) {
          scan_row(in, oh, out, idx);
        } else if (halving) {
          int64_t n = s.kernel_w * out_w;
          for (; n > 2 * out_w; n /= 2) pairwise_argmax(cb, ci, n / 2, cb, ci);  // in place
          pairwise_argmax(cb, ci, out_w, out, idx);
        } else {
          int64_t ow = 0;
#if defined(__AVX2__)
          ow = out_w / 8 * 8;
          window_argmax(cb, ci, in_w, s.stride_w, s.pad_w, s.kernel_w, s.dilation_w, ow, out, idx);
#endif
          for (; ow < out_w; ++ow) {
            if (cols[ow].lo >= cols[ow].hi) {
              out[ow] = lowest;
              idx[ow] = -1;
              continue;
            }
            const int64_t w0 = ow * s.stride_w - s.pad_w;
            float best = lowest;
            int32_t at = int32_t(first * in_w + w0 + cols[ow].lo * s.dilation_w);
            for (int64_t kw = cols[ow].lo; kw < cols[ow].hi; ++kw) {
              const int64_t w = w0 + kw * s.dilation_w;
              const float v = cb[w];
              const int32_t i = ci[w];
              // Branch-free: which tap wins is data-dependent and mispredicts as a branch.
              const bool take = (v > best) | ((v == best) & (i < at));
              best = take ? v : best;
              at = take ? i : at;
            }
            out[ow] = best;
            idx[ow] = at;
          }
        }
      }
    }
  };
  parallel_for(pool, s.planes, plane_grain(out_plane * s.kernel_h * s.kernel_w), body);
}

void max_pool2d_backward_indices(const Pool2dShape& s, const int32_t* indices,
                                 const float* grad_output, float* grad_input, ThreadPool* pool) {
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  parallel_for(pool, s.planes, plane_grain(in_plane), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int32_t* idx = indices + p * out_plane;
      const float* g = grad_output + p * out_plane;
      float* gin = grad_input + p * in_plane;
      std::fill(gin, gin + in_plane, 0.f);
      for (int64_t o = 0; o < out_plane; ++o)
        if (idx[o] >= 0) gin[idx[o]] += g[o];
    }
  });
}

void max_pool2d_backward(const Pool2dShape& s, const float* input, const float* grad_output,
                         float* grad_input, ThreadPool* pool) {
  const size_t outputs = size_t(s.planes * s.out_h * s.out_w);
  std::vector<float> values(outputs);
  std::vector<int32_t> indices(outputs);
  max_pool2d_with_indices(s, input, values.data(), indices.data(), pool);
  max_pool2d_backward_indices(s, indices.data(), grad_output, grad_input, pool);
}

void avg_pool2d_backward(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                         const float* grad_output, float* grad_input, ThreadPool* pool) {
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  std::vector<AvgWindow> rows(static_cast<size_t>(s.out_h)), cols(static_cast<size_t>(s.out_w));
  for (int64_t oh = 0; oh < s.out_h; ++oh)
    rows[oh] = avg_window(oh * s.stride_h - s.pad_h, s.kernel_h, s.pad_h, s.in_h);
  for (int64_t ow = 0; ow < s.out_w; ++ow)
    cols[ow] = avg_window(ow * s.stride_w - s.pad_w, s.kernel_w, s.pad_w, s.in_w);
  parallel_for(pool, s.planes, plane_grain(out_plane * s.kernel_h * s.kernel_w),
               [&](int64_t begin, int64_t end) {
                 for (int64_t p = begin; p < end; ++p) {
                   const float* g = grad_output + p * out_plane;
                   float* gin = grad_input + p * in_plane;
                   std::fill(gin, gin + in_plane, 0.f);
                   for (int64_t oh = 0; oh < s.out_h; ++oh) {
                     const AvgWindow& r = rows[oh];
                     for (int64_t ow = 0; ow < s.out_w; ++ow) {
                       const AvgWindow& c = cols[ow];
                       if (r.lo >= r.hi || c.lo >= c.hi) continue;
                       const int64_t divisor = divisor_override != 0 ? divisor_override
                                               : count_include_pad   ? r.padded * c.padded
                                                                   : (r.hi - r.lo) * (c.hi - c.lo);
                       const float share = g[oh * s.out_w + ow] / float(divisor);
                       for (int64_t h = r.lo; h < r.hi; ++h)
                         for (int64_t w = c.lo; w < c.hi; ++w) gin[h * s.in_w + w] += share;
                     }
                   }
                 }
               });
}

void adaptive_avg_pool2d_backward(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h,
                                  int64_t out_w, const float* grad_output, float* grad_input,
                                  ThreadPool* pool) {
  const int64_t in_plane = in_h * in_w, out_plane = out_h * out_w;
  parallel_for(pool, planes, plane_grain(in_plane), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* g = grad_output + p * out_plane;
      float* gin = grad_input + p * in_plane;
      std::fill(gin, gin + in_plane, 0.f);
      for (int64_t oh = 0; oh < out_h; ++oh) {
        const int64_t h0 = oh * in_h / out_h, h1 = ceil_div((oh + 1) * in_h, out_h);
        for (int64_t ow = 0; ow < out_w; ++ow) {
          const int64_t w0 = ow * in_w / out_w, w1 = ceil_div((ow + 1) * in_w, out_w);
          const float share = g[oh * out_w + ow] / float((h1 - h0) * (w1 - w0));
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) gin[h * in_w + w] += share;
        }
      }
    }
  });
}

}  // namespace nnx::cpu
