// Depthwise direct convolution (see depthwise.h).
#include "kernels/cpu/depthwise.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/rows.h"

namespace nnx::cpu {

namespace {

// out[i] += t * src[i] over a row; a plain loop the compiler vectorises.
inline void axpy(float t, const float* __restrict src, float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += t * src[i];
}

// out[i] += t0 * a[i] + t1 * b[i] + t2 * c[i]: the three taps of a 3-wide kernel row in one pass.
inline void axpy3(float t0, const float* __restrict a, float t1, const float* __restrict b,
                  float t2, const float* __restrict c, float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += t0 * a[i] + t1 * b[i] + t2 * c[i];
}

#if defined(__AVX512F__)
// R rows' vectors of outputs stored (masked to `mask`) at out, out + ow, ...: clamped to
// [lo, hi], then `activation` applied in registers where given (activate16: the stored block is
// not read back, which waited on the masked stores).
template <int R>
inline void store_rows(float* out, int64_t ow, __mmask16 mask, const __m512* acc, __m512 lo,
                       __m512 hi, const Epilogue* activation) {
  for (int r = 0; r < R; ++r) {
    const __m512 y = _mm512_min_ps(hi, _mm512_max_ps(lo, acc[r]));
    _mm512_mask_storeu_ps(out + r * ow, mask,
                          activation != nullptr ? activate16(*activation, y) : y);
  }
}

// R output rows of a KxK, stride-S, undilated kernel: every 16 outputs of the R rows summed in
// registers over the (R - 1) * S + K window rows they share, each window row's phase loaded
// once, aligned, per 16 outputs and its shifted taps made in registers (valignd) rather than
// loaded again unaligned; the weights stay in registers; bias and clamp applied before the one
// store. `top` is the first window row (phase 0, column 0) of the first output row.
template <int K, int S, int R>
__attribute__((flatten, noinline)) void depthwise_rows(const float* __restrict top,
                                                       int64_t row_pitch, int64_t phase_pitch,
                                                       const __m512* w, __m512 bias, __m512 lo,
                                                       __m512 hi, const Epilogue* activation,
                                                       int64_t ow, float* __restrict out) {
  for (int64_t x = 0; x < ow; x += 16) {
    const __mmask16 mask = lanes_below(ow - x);
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = bias;
    static_for<(R - 1) * S + K>([&]<int IR>() {
      const float* row = top + IR * row_pitch + x;
      static_for<S>([&]<int P>() {
        const __m512 v0 = _mm512_load_ps(row + P * phase_pitch);
        // The largest shift among this phase's taps: (K - 1 - P) / S.
        const __m512 v1 = (K - 1 - P) / S > 0 ? _mm512_load_ps(row + P * phase_pitch + 16) : v0;
        static_for<K>([&]<int KW>() {
          if constexpr (KW % S == P) {
            __m512 tap = v0;
            if constexpr (KW / S > 0)
              tap = _mm512_castsi512_ps(
                  _mm512_alignr_epi32(_mm512_castps_si512(v1), _mm512_castps_si512(v0), KW / S));
            static_for<R>([&]<int OR>() {
              constexpr int KH = IR - OR * S;
              if constexpr (KH >= 0 && KH < K)
                acc[OR] = _mm512_fmadd_ps(w[KH * K + KW], tap, acc[OR]);
            });
          }
        });
      });
    });
    // max(lo, x) and min(hi, x) return x where it is NaN, as torch.clamp leaves it.
    store_rows<R>(out + x, ow, mask, acc, lo, hi, activation);
  }
}

#elif defined(__AVX2__) && defined(__FMA__)
// AVX2: the same register blocking over 8 outputs, each tap loaded unaligned from its phase row
// (AVX2 has no lane shift across the 128-bit halves); the row's last vector stored masked.
template <int K, int S, int R>
__attribute__((flatten, noinline)) void depthwise_rows(const float* __restrict top,
                                                       int64_t row_pitch, int64_t phase_pitch,
                                                       const __m256* w, __m256 bias, __m256 lo,
                                                       __m256 hi, const Epilogue*, int64_t ow,
                                                       float* __restrict out) {
  for (int64_t x = 0; x < ow; x += 8) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = bias;
    static_for<(R - 1) * S + K>([&]<int IR>() {
      const float* row = top + IR * row_pitch + x;
      static_for<K>([&]<int KW>() {
        const __m256 tap = _mm256_loadu_ps(row + (KW % S) * phase_pitch + KW / S);
        static_for<R>([&]<int OR>() {
          constexpr int KH = IR - OR * S;
          if constexpr (KH >= 0 && KH < K) acc[OR] = _mm256_fmadd_ps(w[KH * K + KW], tap, acc[OR]);
        });
      });
    });
    // max(lo, x) and min(hi, x) return x where it is NaN, as torch.clamp leaves it.
    if (ow - x >= 8) {
      for (int r = 0; r < R; ++r)
        _mm256_storeu_ps(out + r * ow + x, _mm256_min_ps(hi, _mm256_max_ps(lo, acc[r])));
      continue;
    }
    for (int r = 0; r < R; ++r)
      store_lanes8(out + r * ow + x, _mm256_min_ps(hi, _mm256_max_ps(lo, acc[r])), ow - x);
  }
}

#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// The next input plane's cache lines requested into L2 while this plane computes, an even share
// at each of `steps` steps, so that its reads find them there rather than each waiting on memory
// (EfficientNet-B0's 32x112x112 and 144x56x56 3x3 layers at batch 8: 0.78 and 0.70-0.81 of
// their time; alone on one thread 2.5-3.3 -> 1.7-2.2 ms and 3.1-4.2 -> 2.1-3.1 ms).
class PlaneAhead {
 public:
  PlaneAhead(const Conv2dShape& s, const float* next, int64_t steps)
      : from_(reinterpret_cast<const char*>(next)),
        lines_(next != nullptr ? (s.in_h * s.in_w * int64_t(sizeof(float)) + 63) / 64 : 0),
        share_((lines_ + steps - 1) / std::max<int64_t>(1, steps)) {}
  void step() {
    for (int64_t i = 0; i < share_ && done_ < lines_; ++i, ++done_)
      _mm_prefetch(from_ + 64 * done_, _MM_HINT_T1);
  }

 private:
  const char* from_;
  int64_t lines_, share_, done_ = 0;
};

// The planes' outputs R rows at a time (depthwise_rows, for the build's vector width).
using DepthwiseLanes = vec::V;
using vec::splat;
template <int K, int S>
void depthwise_plane_fast(const Conv2dShape& s, const float* padded, int64_t phase_pitch,
                          const float* weight, float bias, float lo, float hi,
                          const Epilogue* activation, float* output, const float* next) {
  constexpr int R = K <= 3 ? 4 : 2;
  DepthwiseLanes w[K * K];
  for (int t = 0; t < K * K; ++t) w[t] = splat(weight[t]);
  const DepthwiseLanes b = splat(bias), l = splat(lo), h = splat(hi);
  const int64_t row_pitch = S * phase_pitch, ow = s.out_w;
  PlaneAhead ahead(s, next, s.out_h / R);
  int64_t oh = 0;
  for (; oh + R <= s.out_h; oh += R) {
    ahead.step();
    depthwise_rows<K, S, R>(padded + oh * S * row_pitch, row_pitch, phase_pitch, w, b, l, h,
                            activation, ow, output + oh * ow);
  }
  for (; oh < s.out_h; ++oh)
    depthwise_rows<K, S, 1>(padded + oh * S * row_pitch, row_pitch, phase_pitch, w, b, l, h,
                            activation, ow, output + oh * ow);
#if !defined(__AVX512F__)
  // AVX2: after the plane's stores (depthwise_rows applies it in registers on AVX-512).
  if (activation != nullptr) apply_epilogue(*activation, output, s.out_h * ow);
#endif
}
#endif

}  // namespace

namespace {

// The window rows of one input plane copied into `padded` (the layout depthwise_planes
// describes); rows that fall wholly in the padding are zeroed only with `zero_padding_rows` (a
// scratch reused for planes of one shape keeps them zero).
void pad_plane(const Conv2dShape& s, const float* input, int64_t rows, int64_t cols, int64_t pitch,
               float* padded, bool zero_padding_rows) {
  const int64_t sw = s.stride_w;
#if defined(__AVX512F__)
  // Stride 1: every row's vectors take the same lanes of the input row (row_lanes), so the
  // masks are found once and each vector is one masked load and one aligned store (gather_row
  // per row spent more on finding each vector's lanes than on the copy: 40% of a 112x112 3x3
  // layer's time).
  constexpr int64_t kMostVectors = 32;
  if (sw == 1 && pitch <= 16 * kMostVectors) {
    __mmask16 lanes[kMostVectors];
    const int64_t vectors = pitch / 16;
    for (int64_t i = 0; i < vectors; ++i) lanes[i] = row_lanes(16 * i - s.pad_left, s.in_w);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t ih = r - s.pad_top;
      float* dst = padded + r * pitch;
      if (ih < 0 || ih >= s.in_h) {
        if (zero_padding_rows) std::fill(dst, dst + pitch, 0.f);
        continue;
      }
      const float* from = input + ih * s.in_w - s.pad_left;
      for (int64_t i = 0; i < vectors; ++i)
        _mm512_store_ps(dst + 16 * i, _mm512_maskz_loadu_ps(lanes[i], from + 16 * i));
    }
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t ih = r - s.pad_top;
    float* dst = padded + r * sw * pitch;
    if (ih < 0 || ih >= s.in_h) {
      if (zero_padding_rows) std::fill(dst, dst + sw * pitch, 0.f);
      continue;
    }
    const float* src = input + ih * s.in_w;
#if defined(__AVX512F__)
    // Stride 1: the whole pitch in registers, zero outside the input row (columns past the
    // window feed only lanes that are never stored). For stride 2 the one pass below, which
    // splits both phases from each load, measured faster (0.50 against 0.63 ms on MobileNetV2's
    // 96-channel 112x112 layer) than a gather per phase.
    if (sw == 1) {
      gather_row(src, -s.pad_left, 1, s.in_w, pitch, dst);
      continue;
    }
#endif
    // Window columns [lo, hi) fall inside the input row.
    const int64_t in_lo = std::clamp<int64_t>(s.pad_left, 0, cols);
    const int64_t in_hi = std::clamp<int64_t>(s.in_w + s.pad_left, in_lo, cols);
    if (sw == 1) {
      std::fill(dst, dst + in_lo, 0.f);
      std::copy(src + (in_lo - s.pad_left), src + (in_hi - s.pad_left), dst + in_lo);
      std::fill(dst + in_hi, dst + pitch, 0.f);
      continue;
    }
#if defined(__AVX512F__)
    // Short stride-2 rows (the 28- and 14-wide planes of deep layers): each phase gathered in
    // registers, rather than split by scalar copies.
    if (sw == 2 && s.in_w < 64) {
      gather_row(src, -s.pad_left, 2, s.in_w, pitch, dst);
      gather_row(src, 1 - s.pad_left, 2, s.in_w, pitch, dst + pitch);
      continue;
    }
#endif
    const float* from = src - s.pad_left;  // from[c] is window column c
    if (sw == 2) {
      float* even = dst;
      float* odd = dst + pitch;
      // Window column c is even[c / 2] or odd[c / 2]: zero the positions outside [lo, hi).
      std::fill(even, even + (in_lo + 1) / 2, 0.f);
      std::fill(even + (in_hi + 1) / 2, even + pitch, 0.f);
      std::fill(odd, odd + in_lo / 2, 0.f);
      std::fill(odd + in_hi / 2, odd + pitch, 0.f);
      int64_t c = in_lo;
      if (c % 2 == 1 && c < in_hi) odd[c / 2] = from[c], ++c;
#if defined(__AVX512F__)
      const __m512i even_index = even_lanes();
      const __m512i odd_index = _mm512_add_epi32(even_index, _mm512_set1_epi32(1));
      for (; c + 32 <= in_hi; c += 32) {
        const __m512 a = _mm512_loadu_ps(from + c), b = _mm512_loadu_ps(from + c + 16);
        _mm512_storeu_ps(even + c / 2, _mm512_permutex2var_ps(a, even_index, b));
        _mm512_storeu_ps(odd + c / 2, _mm512_permutex2var_ps(a, odd_index, b));
      }
#elif defined(__AVX2__)
      for (; c + 16 <= in_hi; c += 16) {
        const __m256 a = _mm256_loadu_ps(from + c), b = _mm256_loadu_ps(from + c + 8);
        _mm256_storeu_ps(even + c / 2, even_of(a, b));
        _mm256_storeu_ps(odd + c / 2, odd_of(a, b));
      }
#endif
      for (; c + 2 <= in_hi; c += 2) {
        even[c / 2] = from[c];
        odd[c / 2] = from[c + 1];
      }
      if (c < in_hi) even[c / 2] = from[c];
      continue;
    }
    std::fill(dst, dst + sw * pitch, 0.f);
    for (int64_t p = 0; p < sw; ++p) {
      // Phase p holds window columns p, p + sw, ...: those inside the input are copied.
      int64_t c = in_lo + ((p - in_lo % sw) % sw + sw) % sw;
      for (; c < in_hi; c += sw) dst[p * pitch + c / sw] = from[c];
    }
  }
}

#if defined(__AVX512F__)
// Stride 2 read in place, without the padded, phase-split copy (which took a third of a
// 112x112 layer's time): R output rows of a KxK (K odd), stride-2, undilated kernel straight
// from the input plane. For 16 outputs from column x, tap kw reads input columns c + 2i + kw
// with c = 2x - left: for kw = 2j + p, phase p (the even or odd lanes) of the two vectors loaded
// from column c + 2j, masked to the row (zero in the padding). `rows` are the window's input
// rows, null where they fall in the padding.
template <int K, int R>
__attribute__((flatten, noinline)) void depthwise_rows_s2(const float* const* rows, int64_t in_w,
                                                          int64_t left, const __m512* w,
                                                          __m512 bias, __m512 lo, __m512 hi,
                                                          const Epilogue* activation, int64_t ow,
                                                          float* __restrict out) {
  const __m512i even = even_lanes();
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t x = 0; x < ow; x += 16) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = bias;
    const int64_t c = 2 * x - left;
    static_for<(R - 1) * 2 + K>([&]<int IR>() {
      const float* row = rows[IR];
      if (row == nullptr) return;
      static_for<(K + 1) / 2>([&]<int J>() {
        const __m512 a = load_row(row, c + 2 * J, in_w), b = load_row(row, c + 2 * J + 16, in_w);
        static_for<2>([&]<int P>() {
          constexpr int KW = 2 * J + P;
          if constexpr (KW < K) {
            const __m512 tap = _mm512_permutex2var_ps(a, P == 0 ? even : odd, b);
            static_for<R>([&]<int OR>() {
              constexpr int KH = IR - 2 * OR;
              if constexpr (KH >= 0 && KH < K)
                acc[OR] = _mm512_fmadd_ps(w[KH * K + KW], tap, acc[OR]);
            });
          }
        });
      });
    });
    store_rows<R>(out + x, ow, lanes_below(ow - x), acc, lo, hi, activation);
  }
}

#elif defined(__AVX2__) && defined(__FMA__)
// AVX2: the same, 8 outputs at a time, each tap the even or odd lanes of two vectors in the
// order one in-lane shuffle leaves them (outputs 0 1 4 5 2 3 6 7: the cross-lane permute that
// even_of adds is left to the store, one per row vector instead of one per tap, which made the
// kernel shuffle-bound); the taps in the padded path's order, so the same sums. The padded,
// phase-split copy it replaces made a 96 x 112 x 112 layer 0.8-1.0 ms on one Zen 3 core.
template <int K, int R>
__attribute__((flatten, noinline)) void depthwise_rows_s2(const float* const* rows, int64_t in_w,
                                                          int64_t left, const __m256* w,
                                                          __m256 bias, __m256 lo, __m256 hi,
                                                          const Epilogue*, int64_t ow,
                                                          float* __restrict out) {
  for (int64_t x = 0; x < ow; x += 8) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = bias;
    const int64_t c = 2 * x - left;
    static_for<(R - 1) * 2 + K>([&]<int IR>() {
      const float* row = rows[IR];
      if (row == nullptr) return;
      static_for<(K + 1) / 2>([&]<int J>() {
        const __m256 a = load_row8(row, c + 2 * J, in_w), b = load_row8(row, c + 2 * J + 8, in_w);
        static_for<2>([&]<int P>() {
          constexpr int KW = 2 * J + P;
          if constexpr (KW < K) {
            const __m256 tap = _mm256_shuffle_ps(a, b, P == 0 ? 0x88 : 0xDD);
            static_for<R>([&]<int OR>() {
              constexpr int KH = IR - 2 * OR;
              if constexpr (KH >= 0 && KH < K)
                acc[OR] = _mm256_fmadd_ps(w[KH * K + KW], tap, acc[OR]);
            });
          }
        });
      });
    });
    // max(lo, x) and min(hi, x) return x where it is NaN, as torch.clamp leaves it.
    for (int r = 0; r < R; ++r) {
      const __m256 y = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(acc[r]), 0xD8));
      store_lanes8(out + r * ow + x, _mm256_min_ps(hi, _mm256_max_ps(lo, y)), ow - x);
    }
  }
}
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// One plane of a square KxK, stride-2, undilated layer by depthwise_rows_s2, R rows at a time.
template <int K>
void depthwise_plane_s2(const Conv2dShape& s, const float* input, const float* weight, float bias,
                        float lo, float hi, const Epilogue* activation, float* output,
                        const float* next) {
  constexpr int R = K <= 3 ? 4 : 2;
  vec::V w[K * K];
  for (int t = 0; t < K * K; ++t) w[t] = vec::splat(weight[t]);
  const vec::V b = vec::splat(bias), l = vec::splat(lo), h = vec::splat(hi);
  auto window = [&](int64_t oh, int count, const float** rows) {
    for (int i = 0; i < count; ++i) {
      const int64_t ih = oh * 2 - s.pad_top + i;
      rows[i] = ih >= 0 && ih < s.in_h ? input + ih * s.in_w : nullptr;
    }
  };
  const float* rows[(R - 1) * 2 + K];
  PlaneAhead ahead(s, next, s.out_h / R);
  int64_t oh = 0;
  for (; oh + R <= s.out_h; oh += R) {
    ahead.step();
    window(oh, (R - 1) * 2 + K, rows);
    depthwise_rows_s2<K, R>(rows, s.in_w, s.pad_left, w, b, l, h, activation, s.out_w,
                            output + oh * s.out_w);
  }
  for (; oh < s.out_h; ++oh) {
    window(oh, K, rows);
    depthwise_rows_s2<K, 1>(rows, s.in_w, s.pad_left, w, b, l, h, activation, s.out_w,
                            output + oh * s.out_w);
  }
#if !defined(__AVX512F__)
  // AVX2: after the plane's stores, as depthwise_plane_fast does.
  if (activation != nullptr) apply_epilogue(*activation, output, s.out_h * s.out_w);
#endif
}

// Where depthwise_plane_s2 serves: square 3x3 and 5x5 stride-2 windows on rows of at least 48
// columns (narrower planes copy cheaply with gather_row, and those of at most 14 outputs a row
// go channels-last).
bool in_place_stride2(const Conv2dShape& s) {
  return s.kernel_h == s.kernel_w && (s.kernel_h == 3 || s.kernel_h == 5) && s.stride_h == 2 &&
         s.stride_w == 2 && s.dilation_h == 1 && s.dilation_w == 1 && s.in_w >= 48;
}
#endif

// Kernels the register-blocked paths do not take, on a padded plane; kept out of line so that
// their large frame is not set up for every plane of the common ones.
__attribute__((noinline)) void filter_plane_generic(const Conv2dShape& s, const float* padded,
                                                    int64_t pitch, const float* weight, float bias,
                                                    float* output, float lo, float hi) {
  const int64_t sh = s.stride_h, sw = s.stride_w, dh = s.dilation_h, dw = s.dilation_w;
  const int64_t ow = s.out_w;
#if defined(__AVX512F__)
  // Other kernels: each 16 outputs of a row summed in one register over all taps (masked at the
  // row's end, so the 7- and 14-wide rows of deep layers are vector work too), stored once.
  if (s.kernel_h * s.kernel_w <= 49) {
    const int64_t taps = s.kernel_h * s.kernel_w;
    int64_t offset[49];  // of each tap in the padded plane, relative to the row's first output
    __m512 tap_weight[49];
    for (int64_t kh = 0, t = 0; kh < s.kernel_h; ++kh)
      for (int64_t kw = 0; kw < s.kernel_w; ++kw, ++t) {
        const int64_t c = kw * dw;
        offset[t] = kh * dh * sw * pitch + (c % sw) * pitch + c / sw;
        tap_weight[t] = _mm512_set1_ps(weight[t]);
      }
    const __m512 start = _mm512_set1_ps(bias), l = _mm512_set1_ps(lo), h = _mm512_set1_ps(hi);
    for (int64_t oh = 0; oh < s.out_h; ++oh) {
      const float* row = padded + oh * sh * sw * pitch;
      float* out = output + oh * ow;
      for (int64_t x = 0; x < ow; x += 16) {
        const __mmask16 mask = lanes_below(ow - x);
        __m512 acc = start;
        for (int64_t t = 0; t < taps; ++t)
          acc =
              _mm512_fmadd_ps(tap_weight[t], _mm512_maskz_loadu_ps(mask, row + offset[t] + x), acc);
        _mm512_mask_storeu_ps(out + x, mask, _mm512_min_ps(h, _mm512_max_ps(l, acc)));
      }
    }
    return;
  }
#endif
  for (int64_t oh = 0; oh < s.out_h; ++oh) {
    float* out = output + oh * ow;
    std::fill(out, out + ow, bias);
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      const float* row = padded + (oh * sh + kh * dh) * sw * pitch;
      const float* w = weight + kh * s.kernel_w;
      auto tap = [&](int64_t kw) {
        const int64_t c = kw * dw;
        return row + (c % sw) * pitch + c / sw;
      };
      int64_t kw = 0;
      for (; kw + 3 <= s.kernel_w; kw += 3)
        axpy3(w[kw], tap(kw), w[kw + 1], tap(kw + 1), w[kw + 2], tap(kw + 2), out, ow);
      for (; kw < s.kernel_w; ++kw) axpy(w[kw], tap(kw), out, ow);
    }
    for (int64_t i = 0; i < ow; ++i) out[i] = epilogue_detail::clamp_nan(out[i], lo, hi);
  }
}

// The outputs of one padded plane.
inline void filter_plane(const Conv2dShape& s, const float* padded, int64_t pitch,
                         const float* weight, float bias, float* output, float lo, float hi,
                         const Epilogue* activation, const float* next) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  const int64_t sw = s.stride_w;
  const bool square =
      s.kernel_h == s.kernel_w && s.stride_h == sw && s.dilation_h == 1 && s.dilation_w == 1;
  if (square && s.kernel_h == 3 && sw == 1)
    return depthwise_plane_fast<3, 1>(s, padded, pitch, weight, bias, lo, hi, activation, output,
                                      next);
  if (square && s.kernel_h == 3 && sw == 2)
    return depthwise_plane_fast<3, 2>(s, padded, pitch, weight, bias, lo, hi, activation, output,
                                      next);
  if (square && s.kernel_h == 5 && sw == 1)
    return depthwise_plane_fast<5, 1>(s, padded, pitch, weight, bias, lo, hi, activation, output,
                                      next);
  if (square && s.kernel_h == 5 && sw == 2)
    return depthwise_plane_fast<5, 2>(s, padded, pitch, weight, bias, lo, hi, activation, output,
                                      next);
#endif
  filter_plane_generic(s, padded, pitch, weight, bias, output, lo, hi);
  if (activation != nullptr) apply_epilogue(*activation, output, s.out_h * s.out_w);
}

}  // namespace

void depthwise_planes(const Conv2dShape& s, int64_t channels, const float* input, int64_t in_stride,
                      const float* weight, const float* bias, float* output, int64_t out_stride,
                      float lo, float hi, const Epilogue* activation) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  if (in_place_stride2(s)) {
    const int64_t taps = s.kernel_h * s.kernel_w;
    for (int64_t c = 0; c < channels; ++c) {
      const float* x = input + c * in_stride;
      const float b = bias != nullptr ? bias[c] : 0.f;
      const float* next = c + 1 < channels ? x + in_stride : nullptr;
      if (s.kernel_h == 3)
        depthwise_plane_s2<3>(s, x, weight + c * taps, b, lo, hi, activation,
                              output + c * out_stride, next);
      else
        depthwise_plane_s2<5>(s, x, weight + c * taps, b, lo, hi, activation,
                              output + c * out_stride, next);
    }
    return;
  }
#endif
  const int64_t sh = s.stride_h, sw = s.stride_w, dh = s.dilation_h, dw = s.dilation_w;
  // The padded window the outputs read: rows [0, rows) and columns [0, cols) of the input
  // shifted by the top and left padding (anything outside the input reads as zero).
  const int64_t rows = (s.out_h - 1) * sh + (s.kernel_h - 1) * dh + 1;
  const int64_t cols = (s.out_w - 1) * sw + (s.kernel_w - 1) * dw + 1;
  // Column c of the window lives in phase c % sw at position c / sw; each phase of a row is
  // `pitch` floats (a multiple of 16, with at least one zeroed vector past its columns), so that
  // a vector of outputs and the one after it load aligned.
  const int64_t phase_w = (cols + sw - 1) / sw;
  const int64_t pitch = (phase_w + 15) / 16 * 16 + 16;
  thread_local AlignedBuffer scratch;
  float* padded = scratch.get(rows * sw * pitch);
  const int64_t taps = s.kernel_h * s.kernel_w;
  for (int64_t c = 0; c < channels; ++c) {
    pad_plane(s, input + c * in_stride, rows, cols, pitch, padded, c == 0);
    filter_plane(s, padded, pitch, weight + c * taps, bias != nullptr ? bias[c] : 0.f,
                 output + c * out_stride, lo, hi, activation,
                 c + 1 < channels ? input + (c + 1) * in_stride : nullptr);
  }
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
namespace {

// The channels-last kernels below hold kLanes channels a vector (16 on AVX-512, 8 on AVX2); the
// activation goes in registers before the store on AVX-512 (activate16), over the planes once
// stored on AVX2. Runs of kRun outputs: 8 independent chains cover the multiply-add latency on
// two pipes; AVX2's 16 registers hold 6 chains with a 3x3 row's vectors.
using vec::V;
constexpr int64_t kLanes = vec::kWidth;
#if defined(__AVX512F__)
constexpr int kRun = 8;
inline V finish(const Epilogue* activation, V y) {
  return activation != nullptr ? activate16(*activation, y) : y;
}
// Lanes [0, n) of p, zero past them / stored at p.
inline V load_lanes(const float* p, int64_t n) {
  return _mm512_maskz_loadu_ps(lanes_below(n), p);
}
inline void store_lanes(float* p, V v, int64_t n) {
  _mm512_mask_storeu_ps(p, lanes_below(n), v);
}
inline void transpose_lanes(V* rows) {
  transpose16(rows);
}
#else
constexpr int kRun = 6;
inline V finish(const Epilogue*, V y) {
  return y;
}
inline V load_lanes(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes8(n));
}
inline void store_lanes(float* p, V v, int64_t n) {
  store_lanes8(p, v, n);
}
inline void transpose_lanes(V* rows) {
  transpose8(rows);
}
#endif

// Outputs [x, x + N) of output row `oy`, kLanes channels each: bias + the taps' products over
// the padded channels-last window `in` ([rows][cols][kLanes]), weights [tap][kLanes]; N chains
// at once; clamped, then `activation` applied (where given, AVX-512) in registers.
template <int N>
inline void cl_outputs(const Conv2dShape& s, const float* in, int64_t cols, const float* w, V bias,
                       V lo, V hi, const Epilogue* activation, int64_t oy, int64_t x, float* out) {
  V acc[N];
  for (int i = 0; i < N; ++i) acc[i] = bias;
  for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
    const float* row =
        in + ((oy * s.stride_h + kh * s.dilation_h) * cols + x * s.stride_w) * kLanes;
    for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
      const V wt = vec::load(w + (kh * s.kernel_w + kw) * kLanes);
      const float* at = row + kw * s.dilation_w * kLanes;
      for (int i = 0; i < N; ++i)
        acc[i] = vec::fmadd(wt, vec::load(at + i * s.stride_w * kLanes), acc[i]);
    }
  }
  for (int i = 0; i < N; ++i)
    vec::store(out + i * kLanes, finish(activation, vec::min(hi, vec::max(lo, acc[i]))));
}

// The same for a square KxK, stride-S, undilated kernel: each of the K window rows' (N - 1) * S
// + K vectors loaded once and used by every tap that reads it (the generic loop loads each tap's
// vectors anew, N * K loads a row, and the compiler cannot unroll the taps). Plain loops the
// compiler unrolls whole: nested lambdas (static_for) were left as calls, with acc and v in memory.
template <int K, int S, int N>
__attribute__((always_inline)) inline void cl_outputs_fixed(const float* in, int64_t cols,
                                                            const float* w, V bias, V lo, V hi,
                                                            const Epilogue* activation, int64_t oy,
                                                            int64_t x, float* out) {
  constexpr int kVectors = (N - 1) * S + K;
  V acc[N];
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) acc[i] = bias;
#pragma GCC unroll 5
  for (int kh = 0; kh < K; ++kh) {
    const float* row = in + ((oy * S + kh) * cols + x * S) * kLanes;
    V v[kVectors];
#pragma GCC unroll 24
    for (int j = 0; j < kVectors; ++j) v[j] = vec::load(row + j * kLanes);
#pragma GCC unroll 5
    for (int kw = 0; kw < K; ++kw) {
      const V wt = vec::load(w + (kh * K + kw) * kLanes);
#pragma GCC unroll 8
      for (int i = 0; i < N; ++i) acc[i] = vec::fmadd(wt, v[i * S + kw], acc[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i)
    vec::store(out + i * kLanes, finish(activation, vec::min(hi, vec::max(lo, acc[i]))));
}

// A row of outputs by cl_outputs_fixed in runs of kRun, the rest in one shorter run.
template <int K, int S>
__attribute__((flatten, noinline)) void cl_row_fixed(const float* in, int64_t cols, const float* w,
                                                     V bias, V lo, V hi, const Epilogue* activation,
                                                     int64_t ow, int64_t oy, float* out) {
  int64_t x = 0;
  for (; x + kRun <= ow; x += kRun)
    cl_outputs_fixed<K, S, kRun>(in, cols, w, bias, lo, hi, activation, oy, x, out + x * kLanes);
  switch (ow - x) {
#define NNX_CL_TAIL(N)                                                             \
  case N:                                                                          \
    return cl_outputs_fixed<K, S, N>(in, cols, w, bias, lo, hi, activation, oy, x, \
                                     out + x * kLanes);
    NNX_CL_TAIL(1)
    NNX_CL_TAIL(2)
    NNX_CL_TAIL(3)
    NNX_CL_TAIL(4)
    NNX_CL_TAIL(5)
    NNX_CL_TAIL(6)
    NNX_CL_TAIL(7)
#undef NNX_CL_TAIL
    default:
      return;
  }
}

// One output row of at most 14 outputs as one or two runs of independent chains (of at most
// kRun): a run of 4 left the last outputs of a 7-wide row to single chains, each waiting on the
// multiply-add latency tap after tap.
void cl_row(const Conv2dShape& s, const float* in, int64_t cols, const float* w, V bias, V lo, V hi,
            const Epilogue* activation, int64_t oy, float* out) {
  auto run = [&](int64_t x, int64_t n) {
    float* o = out + x * kLanes;
    switch (n) {
#define NNX_CL_RUN(N) \
  case N:             \
    return cl_outputs<N>(s, in, cols, w, bias, lo, hi, activation, oy, x, o);
      NNX_CL_RUN(1)
      NNX_CL_RUN(2)
      NNX_CL_RUN(3)
      NNX_CL_RUN(4)
      NNX_CL_RUN(5)
      NNX_CL_RUN(6)
      NNX_CL_RUN(7)
      NNX_CL_RUN(8)
#undef NNX_CL_RUN
    }
  };
  const int64_t ow = s.out_w;
  for (int64_t x = 0; x < ow;) {
    const int64_t left = ow - x;
    const int64_t n = left <= kRun ? left : (left + 1) / 2 <= kRun ? (left + 1) / 2 : kRun;
    run(x, n);
    x += n;
  }
}

// cl_row_fixed for a square, undilated 3x3 or 5x5 window of stride 1 or 2; null for any other
// (cl_row's generic loop).
using ClRow = void (*)(const float*, int64_t, const float*, V, V, V, const Epilogue*, int64_t,
                       int64_t, float*);
ClRow fixed_row(const Conv2dShape& s) {
  if (s.kernel_h != s.kernel_w || s.stride_h != s.stride_w || s.dilation_h != 1 ||
      s.dilation_w != 1)
    return nullptr;
  if (s.kernel_h == 3 && s.stride_h == 1) return &cl_row_fixed<3, 1>;
  if (s.kernel_h == 3 && s.stride_h == 2) return &cl_row_fixed<3, 2>;
  if (s.kernel_h == 5 && s.stride_h == 1) return &cl_row_fixed<5, 1>;
  if (s.kernel_h == 5 && s.stride_h == 2) return &cl_row_fixed<5, 2>;
  return nullptr;
}

}  // namespace

bool depthwise_channels_last_suitable(const Conv2dShape& s) {
  if (s.out_w <= 14) return s.kernel_h * s.kernel_w <= 49;
  // Wider rows where cl_row_fixed serves and the padded plane kernels measured slower (AMD Zen 5,
  // one thread, SiLU, batch 8): 5x5 up to 56 outputs a row (240x28x28 2.15 -> 1.09 ms, 144x56x56
  // 4.99 -> 3.49, 144x56x56 stride 2 2.04 -> 1.35, 96x112x112 stride 2 8.7 -> 5.4), 3x3 of
  // stride 1 up to 28 (192x28x28 0.97 -> 0.65); not 3x3 on 56x56 planes (2.9 against 3.3), nor
  // fewer than 16 channels (a block of 16 would be part empty).
  if (fixed_row(s) == nullptr || s.out_channels < 16) return false;
  if (s.kernel_h == 5) return s.out_w <= 56;
  return s.stride_h == 1 && s.out_w <= 28;
}

void depthwise_channels_last(const Conv2dShape& s, int64_t channels, const float* input,
                             int64_t in_stride, const float* weight, const float* bias,
                             float* output, int64_t out_stride, float lo, float hi,
                             const Epilogue* activation) {
  const int64_t rows = (s.out_h - 1) * s.stride_h + (s.kernel_h - 1) * s.dilation_h + 1;
  const int64_t cols = (s.out_w - 1) * s.stride_w + (s.kernel_w - 1) * s.dilation_w + 1;
  const int64_t taps = s.kernel_h * s.kernel_w, out_plane = s.out_h * s.out_w;
  // This thread's window (its padding zeroed once per call: each block rewrites the inside
  // only), outputs and weights, kLanes channels per float vector.
  thread_local AlignedBuffer window_buffer, out_buffer, weight_buffer;
  float* in = window_buffer.get(rows * cols * kLanes);
  float* out = out_buffer.get(out_plane * kLanes);
  float* w = weight_buffer.get(taps * kLanes);
  std::fill(in, in + rows * cols * kLanes, 0.f);
  // The input rows and columns inside the window.
  const int64_t ih0 = std::max<int64_t>(0, -s.pad_top);
  const int64_t ih1 = std::min<int64_t>(s.in_h, rows - s.pad_top);
  const int64_t iw0 = std::max<int64_t>(0, -s.pad_left);
  const int64_t iw1 = std::min<int64_t>(s.in_w, cols - s.pad_left);
  const V l = vec::splat(lo), h = vec::splat(hi);
  const ClRow row_kernel = fixed_row(s);
  for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
    const int64_t count = std::min<int64_t>(kLanes, channels - c0);
    // Weights [tap][kLanes] and bias, zero past the last channel.
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t k = 0; k < kLanes; ++k)
        w[t * kLanes + k] = k < count ? weight[(c0 + k) * taps + t] : 0.f;
    alignas(64) float b[kLanes] = {};
    if (bias != nullptr) std::copy(bias + c0, bias + c0 + count, b);
    const V bv = vec::load(b);
    // Channels-last window: kLanes pixels of a row from each of the kLanes planes, transposed.
    for (int64_t ih = ih0; ih < ih1; ++ih) {
      float* row = in + ((ih + s.pad_top) * cols + s.pad_left) * kLanes;
      for (int64_t x = iw0; x < iw1; x += kLanes) {
        V v[kLanes];
        for (int64_t k = 0; k < kLanes; ++k)
          v[k] = k < count ? load_lanes(input + (c0 + k) * in_stride + ih * s.in_w + x, iw1 - x)
                           : vec::zero();
        transpose_lanes(v);
        for (int64_t j = 0; j < std::min<int64_t>(kLanes, iw1 - x); ++j)
          vec::store(row + (x + j) * kLanes, v[j]);
      }
    }
    for (int64_t oy = 0; oy < s.out_h; ++oy) {
      float* o = out + oy * s.out_w * kLanes;
      if (row_kernel != nullptr)
        row_kernel(in, cols, w, bv, l, h, activation, s.out_w, oy, o);
      else
        cl_row(s, in, cols, w, bv, l, h, activation, oy, o);
    }
    // Back to planes: kLanes outputs' vectors transposed into kLanes channels' rows of outputs.
    for (int64_t p = 0; p < out_plane; p += kLanes) {
      const int64_t n = std::min<int64_t>(kLanes, out_plane - p);
      V v[kLanes];
      for (int64_t j = 0; j < kLanes; ++j)
        v[j] = j < n ? vec::load(out + (p + j) * kLanes) : vec::zero();
      transpose_lanes(v);
      for (int64_t k = 0; k < count; ++k) store_lanes(output + (c0 + k) * out_stride + p, v[k], n);
    }
#if !defined(__AVX512F__)
    // AVX2: the activation over the block's planes, in cache.
    if (activation != nullptr)
      for (int64_t k = 0; k < count; ++k)
        apply_epilogue(*activation, output + (c0 + k) * out_stride, out_plane);
#endif
  }
}
#endif

void depthwise_plane(const Conv2dShape& s, const float* input, const float* weight, float bias,
                     float* output, float lo, float hi) {
  depthwise_planes(s, 1, input, 0, weight, &bias, output, 0, lo, hi);
}

}  // namespace nnx::cpu
