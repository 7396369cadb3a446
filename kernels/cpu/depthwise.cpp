// Depthwise direct convolution (see depthwise.h).
#include "kernels/cpu/depthwise.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nnx::cpu {

namespace {

// Grows but never shrinks: steady-state inference allocates nothing here.
float* padded_scratch(int64_t floats) {
  thread_local std::vector<float> buffer;
  if (int64_t(buffer.size()) < floats) buffer.resize(size_t(floats));
  return buffer.data();
}

// out[i] += t * src[i] over a row; a plain loop the compiler vectorises.
inline void axpy(float t, const float* __restrict src, float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += t * src[i];
}

// out[i] += t0 * a[i] + t1 * b[i] + t2 * c[i]: the three taps of a 3-wide kernel row in one pass.
inline void axpy3(float t0, const float* __restrict a, float t1, const float* __restrict b,
                  float t2, const float* __restrict c, float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += t0 * a[i] + t1 * b[i] + t2 * c[i];
}

}  // namespace

void depthwise_plane(const Conv2dShape& s, const float* input, const float* weight, float bias,
                     float* output) {
  const int64_t sh = s.stride_h, sw = s.stride_w, dh = s.dilation_h, dw = s.dilation_w;
  // The padded window the outputs read: rows [0, rows) and columns [0, cols) of the input
  // shifted by the top and left padding (anything outside the input reads as zero).
  const int64_t rows = (s.out_h - 1) * sh + (s.kernel_h - 1) * dh + 1;
  const int64_t cols = (s.out_w - 1) * sw + (s.kernel_w - 1) * dw + 1;
  // Column c of the window lives in phase c % sw at position c / sw.
  const int64_t phase_w = (cols + sw - 1) / sw;
  float* padded = padded_scratch(rows * sw * phase_w);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t ih = r - s.pad_top;
    float* dst = padded + r * sw * phase_w;
    if (ih < 0 || ih >= s.in_h) {
      std::fill(dst, dst + sw * phase_w, 0.f);
      continue;
    }
    const float* src = input + ih * s.in_w;
    // Window columns [lo, hi) fall inside the input row.
    const int64_t lo = std::clamp<int64_t>(s.pad_left, 0, cols);
    const int64_t hi = std::clamp<int64_t>(s.in_w + s.pad_left, lo, cols);
    if (sw == 1) {
      std::fill(dst, dst + lo, 0.f);
      std::copy(src + (lo - s.pad_left), src + (hi - s.pad_left), dst + lo);
      std::fill(dst + hi, dst + cols, 0.f);
      continue;
    }
    std::fill(dst, dst + sw * phase_w, 0.f);
    const float* from = src - s.pad_left;  // from[c] is window column c
    if (sw == 2) {
      float* even = dst;
      float* odd = dst + phase_w;
      int64_t c = lo;
      if (c % 2 == 1 && c < hi) odd[c / 2] = from[c], ++c;
#if defined(__AVX512F__)
      const __m512i even_index =
          _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      const __m512i odd_index = _mm512_add_epi32(even_index, _mm512_set1_epi32(1));
      for (; c + 32 <= hi; c += 32) {
        const __m512 a = _mm512_loadu_ps(from + c), b = _mm512_loadu_ps(from + c + 16);
        _mm512_storeu_ps(even + c / 2, _mm512_permutex2var_ps(a, even_index, b));
        _mm512_storeu_ps(odd + c / 2, _mm512_permutex2var_ps(a, odd_index, b));
      }
#endif
      for (; c + 2 <= hi; c += 2) {
        even[c / 2] = from[c];
        odd[c / 2] = from[c + 1];
      }
      if (c < hi) even[c / 2] = from[c];
      continue;
    }
    for (int64_t p = 0; p < sw; ++p) {
      // Phase p holds window columns p, p + sw, ...: those inside the input are copied.
      int64_t c = lo + ((p - lo % sw) % sw + sw) % sw;
      for (; c < hi; c += sw) dst[p * phase_w + c / sw] = from[c];
    }
  }
  const int64_t ow = s.out_w;
#if defined(__AVX512F__)
  // Each 16 outputs of a row summed in one register over all taps (masked at the row's end, so
  // the 7- and 14-wide rows of deep layers are vector work too), stored once.
  if (s.kernel_h * s.kernel_w <= 49) {
    const int64_t taps = s.kernel_h * s.kernel_w;
    int64_t offset[49];  // of each tap in the padded plane, relative to the row's first output
    __m512 tap_weight[49];
    for (int64_t kh = 0, t = 0; kh < s.kernel_h; ++kh)
      for (int64_t kw = 0; kw < s.kernel_w; ++kw, ++t) {
        const int64_t c = kw * dw;
        offset[t] = kh * dh * sw * phase_w + (c % sw) * phase_w + c / sw;
        tap_weight[t] = _mm512_set1_ps(weight[t]);
      }
    const __m512 start = _mm512_set1_ps(bias);
    for (int64_t oh = 0; oh < s.out_h; ++oh) {
      const float* row = padded + oh * sh * sw * phase_w;
      float* out = output + oh * ow;
      for (int64_t x = 0; x < ow; x += 16) {
        const __mmask16 mask = ow - x >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (ow - x)) - 1);
        __m512 acc = start;
        for (int64_t t = 0; t < taps; ++t)
          acc =
              _mm512_fmadd_ps(tap_weight[t], _mm512_maskz_loadu_ps(mask, row + offset[t] + x), acc);
        _mm512_mask_storeu_ps(out + x, mask, acc);
      }
    }
    return;
  }
#endif
  for (int64_t oh = 0; oh < s.out_h; ++oh) {
    float* out = output + oh * ow;
    std::fill(out, out + ow, bias);
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      const float* row = padded + (oh * sh + kh * dh) * sw * phase_w;
      const float* w = weight + kh * s.kernel_w;
      auto tap = [&](int64_t kw) {
        const int64_t c = kw * dw;
        return row + (c % sw) * phase_w + c / sw;
      };
      int64_t kw = 0;
      for (; kw + 3 <= s.kernel_w; kw += 3)
        axpy3(w[kw], tap(kw), w[kw + 1], tap(kw + 1), w[kw + 2], tap(kw + 2), out, ow);
      for (; kw < s.kernel_w; ++kw) axpy(w[kw], tap(kw), out, ow);
    }
  }
}

}  // namespace nnx::cpu
