// The few-channel direct convolution (see stem_conv.h).
#include "kernels/cpu/stem_conv.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/env_switch.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/int_math.h"
#include "kernels/cpu/prepared.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

#if defined(NNX_STEM_CONV)
namespace {

#if defined(__AVX512F__)
constexpr int64_t kTile = 32;  // output pixels of one row per tile: two vectors
#else
constexpr int64_t kTile = 16;  // AVX2: two vectors of 8
#endif

// The padded, phase-split copy of one image: [channel][phase][row][column], where phase p, row r,
// column q holds the input at row r - pad_top, column q * stride_w + p - pad_left (zero outside).
struct Padded {
  int64_t phases = 1, rows = 0, width = 0;
  int64_t image_floats(const Conv2dShape& s) const { return s.in_channels * phases * rows * width; }
};

Padded padded_layout(const Conv2dShape& s) {
  Padded p;
  p.phases = s.stride_w;
  p.rows = (s.out_h - 1) * s.stride_h + (s.kernel_h - 1) * s.dilation_h + 1;
  // Whole tiles past the last output column, plus the furthest tap's shift within its phase.
  p.width = ceil_div(s.out_w, kTile) * kTile + (s.kernel_w - 1) * s.dilation_w / s.stride_w;
  return p;
}

// Rows [r0, r1) of the padded copy, counted over (image, channel, phase, row).
void pad_rows(const Conv2dShape& s, const Padded& p, const float* input, int64_t in_plane,
              int64_t r0, int64_t r1, float* out) {
  const int64_t stride = s.stride_w;
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t row = i % p.rows, phase = (i / p.rows) % p.phases;
    const int64_t plane = i / (p.rows * p.phases);  // image * in_channels + channel
    float* dst = out + i * p.width;
    const int64_t src_row = row - s.pad_top;
    if (src_row < 0 || src_row >= s.in_h) {
      std::fill(dst, dst + p.width, 0.f);
      continue;
    }
    const float* src = input + plane * in_plane + src_row * s.in_w;
    // Columns q with 0 <= q * stride + phase - pad_left < in_w.
    const int64_t first = phase - s.pad_left;
    const int64_t lo = std::clamp<int64_t>(ceil_div(-first, stride), 0, p.width);
    const int64_t hi = std::clamp<int64_t>(ceil_div(s.in_w - first, stride), lo, p.width);
    std::fill(dst, dst + lo, 0.f);
    int64_t q = lo;
    if (stride == 1) {
      std::memcpy(dst + lo, src + lo + first, size_t(hi - lo) * sizeof(float));
      q = hi;
    }
#if defined(__AVX512F__)
    // Stride 2 (ResNet's stem): every other column, 16 at a time from two loads.
    if (stride == 2) {
      const __m512i even =
          _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      for (; q + 16 <= hi; q += 16) {
        // Columns q * 2 + first .. + 31 (the last one read is column (q + 15) * 2 + first + 1,
        // within the row where q + 16 <= hi, except at the row's very end: loaded masked).
        const float* from = src + 2 * q + first;
        const int64_t left = s.in_w - (2 * q + first);  // columns of the row from `from` on
        const __m512 a = _mm512_maskz_loadu_ps(lanes_below(left), from);
        const __m512 b = _mm512_maskz_loadu_ps(lanes_below(left - 16), from + 16);
        _mm512_storeu_ps(dst + q, _mm512_permutex2var_ps(a, even, b));
      }
    }
#elif defined(__AVX2__)
    // AVX2: 8 columns at a time, the even floats of two vectors (the column after the last one
    // read is loaded masked at the row's very end). SqueezeNet's and ResNet's stems had copied
    // these a float at a time (5-7% of the stem's samples).
    if (stride == 2) {
      for (; q + 8 <= hi; q += 8) {
        const float* from = src + 2 * q + first;
        const int64_t left = s.in_w - (2 * q + first);  // columns of the row from `from` on
        const __m256 a = _mm256_loadu_ps(from);
        const __m256 b =
            left >= 16 ? _mm256_loadu_ps(from + 8) : _mm256_maskload_ps(from + 8, lanes8(left - 8));
        _mm256_storeu_ps(dst + q, even_of(a, b));
      }
    }
#endif
    for (; q < hi; ++q) dst[q] = src[q * stride + first];
    std::fill(dst + hi, dst + p.width, 0.f);
  }
}

#if defined(__AVX512F__)
// C[R channels][16V pixels] = bias + sum over taps t of a[t * 12 + r] * base[offsets[t] + pixel],
// clamped to [lo, hi] (NaN kept) and stored with row stride ldc, the last vector masked.
template <int R, int V>
void stem_tile(int64_t taps, const int64_t* offsets, const float* base, const float* a, float* c,
               int64_t ldc, __mmask16 last, const float* bias, float lo, float hi) {
  __m512 acc[R][V];
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    static_for<V>([&]<int v>() __attribute__((always_inline)) { acc[r][v] = _mm512_setzero_ps(); });
  });
  for (int64_t t = 0; t < taps; ++t, a += kPanelRows) {
    const float* b = base + offsets[t];
    __m512 bv[V];
    static_for<V>([&]<int v>()
                      __attribute__((always_inline)) { bv[v] = _mm512_loadu_ps(b + 16 * v); });
    static_for<R>([&]<int r>() __attribute__((always_inline)) {
      const __m512 x = _mm512_set1_ps(a[r]);
      static_for<V>([&]<int v>() __attribute__((always_inline)) {
        acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
      });
    });
  }
  const __m512 lo_v = _mm512_set1_ps(lo), hi_v = _mm512_set1_ps(hi);
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    const __m512 add = _mm512_set1_ps(bias != nullptr ? bias[r] : 0.f);
    static_for<V>([&]<int v>() __attribute__((always_inline)) {
      const __m512 x = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, _mm512_add_ps(acc[r][v], add)));
      _mm512_mask_storeu_ps(c + r * ldc + 16 * v, v == V - 1 ? last : __mmask16(0xFFFF), x);
    });
  });
}

using StemTile = void (*)(int64_t, const int64_t*, const float*, const float*, float*, int64_t,
                          __mmask16, const float*, float, float);
template <int... R>
constexpr std::array<std::array<StemTile, 2>, sizeof...(R)> stem_tiles(
    std::integer_sequence<int, R...>) {
  return {{{&stem_tile<R + 1, 1>, &stem_tile<R + 1, 2>}...}};
}
constexpr auto kStemTiles = stem_tiles(std::make_integer_sequence<int, int(kPanelRows)>{});

// Output channels a multiple of 8 (ResNet's 64, MobileNet's 32): tiles of 8 channels x up to 3
// vectors of pixels, so that no channel slot of a 12-row panel is left empty (64 channels filled
// 64 of 72) and each tap's 24 multiply-adds need 11 loads, not 14. ResNet's stem (64 x 112 x
// 112, 2 threads) 3-5% faster with its pooling, in three alternating rounds of 300 runs. An
// 8-channel run starts at lane 0, 4 or 8 of the 12-row panels; from lane 8 (Split) its last four
// rows lie at the start of the next panel, `a1`.
template <bool Split, int V>
void stem_tile8(int64_t taps, const int64_t* offsets, const float* base, const float* a0,
                const float* a1, float* c, int64_t ldc, __mmask16 last, const float* bias, float lo,
                float hi) {
  __m512 acc[8][V];
  static_for<8>([&]<int r>() __attribute__((always_inline)) {
    static_for<V>([&]<int v>() __attribute__((always_inline)) { acc[r][v] = _mm512_setzero_ps(); });
  });
  for (int64_t t = 0; t < taps; ++t, a0 += kPanelRows, a1 += kPanelRows) {
    const float* b = base + offsets[t];
    __m512 bv[V];
    static_for<V>([&]<int v>()
                      __attribute__((always_inline)) { bv[v] = _mm512_loadu_ps(b + 16 * v); });
    static_for<8>([&]<int r>() __attribute__((always_inline)) {
      const __m512 x = _mm512_set1_ps(Split && r >= 4 ? a1[r - 4] : a0[r]);
      static_for<V>([&]<int v>() __attribute__((always_inline)) {
        acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
      });
    });
  }
  const __m512 lo_v = _mm512_set1_ps(lo), hi_v = _mm512_set1_ps(hi);
  static_for<8>([&]<int r>() __attribute__((always_inline)) {
    const __m512 add = _mm512_set1_ps(bias != nullptr ? bias[r] : 0.f);
    static_for<V>([&]<int v>() __attribute__((always_inline)) {
      const __m512 x = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, _mm512_add_ps(acc[r][v], add)));
      _mm512_mask_storeu_ps(c + r * ldc + 16 * v, v == V - 1 ? last : __mmask16(0xFFFF), x);
    });
  });
}

using StemTile8 = void (*)(int64_t, const int64_t*, const float*, const float*, const float*,
                           float*, int64_t, __mmask16, const float*, float, float);
constexpr StemTile8 kStemTiles8[2][3] = {
    {&stem_tile8<false, 1>, &stem_tile8<false, 2>, &stem_tile8<false, 3>},
    {&stem_tile8<true, 1>, &stem_tile8<true, 2>, &stem_tile8<true, 3>}};

// The vectors of the next pixel tile of a row with `left` vectors to go: threes, but two twos
// for four and a two for the last two (a lone vector only where the row has one).
int64_t next_vectors(int64_t left) {
  return left == 4 || left == 2 ? 2 : left >= 3 ? 3 : 1;
}
#else
// AVX2: C[R <= 6 channels][16 pixels] as the AVX-512 tile computes it (12 accumulators, the two
// vectors of a tap's inputs and a broadcast weight fill the 16 ymm registers; a 12-row panel is
// taken in two halves, each reading the taps' inputs again, from L1). The padded rows reach past
// every tile, so only the stores are masked, to the first `cols` pixels when not Full.
template <int R, bool Full>
void stem_tile(int64_t taps, const int64_t* offsets, const float* base, const float* a, float* c,
               int64_t ldc, int64_t cols, const float* bias, float lo, float hi) {
  __m256 acc[R][2];
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    acc[r][0] = _mm256_setzero_ps();
    acc[r][1] = _mm256_setzero_ps();
  });
  for (int64_t t = 0; t < taps; ++t, a += kPanelRows) {
    const float* b = base + offsets[t];
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    static_for<R>([&]<int r>() __attribute__((always_inline)) {
      const __m256 x = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
    });
  }
  const __m256 lo_v = _mm256_set1_ps(lo), hi_v = _mm256_set1_ps(hi);
  const __m256i m0 = lanes8(cols), m1 = lanes8(cols - 8);
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    store_row16<Full>(c + r * ldc, acc[r][0], acc[r][1],
                      _mm256_set1_ps(bias != nullptr ? bias[r] : 0.f), nullptr, lo_v, hi_v, m0, m1);
  });
}

constexpr int kHalf = 6;
using StemTile = void (*)(int64_t, const int64_t*, const float*, const float*, float*, int64_t,
                          int64_t, const float*, float, float);
template <int... R>
constexpr std::array<std::array<StemTile, 2>, sizeof...(R)> stem_tiles(
    std::integer_sequence<int, R...>) {
  return {{{&stem_tile<R + 1, false>, &stem_tile<R + 1, true>}...}};
}
constexpr auto kStemTiles = stem_tiles(std::make_integer_sequence<int, kHalf>{});
#endif

// NNX_CONV_STEM=0 in the environment turns this path off, for measuring against it.
bool stem_enabled() {
  static const bool enabled = env_switch("NNX_CONV_STEM");
  return enabled;
}

}  // namespace

bool stem_suitable(const Conv2dShape& s) {
  // Few input channels: with more, the input's copy is no longer small next to the work, and
  // the GEMM paths' packing is amortised over enough taps. Rows of at least 16 pixels.
  return stem_enabled() && s.groups == 1 && s.in_channels <= 4 && s.out_channels >= 8 &&
         s.out_w >= 16 && s.in_channels * s.kernel_h * s.kernel_w <= 4096;
}

void conv2d_stem(const Conv2dShape& s, const float* input, const float* weight, const float* panels,
                 const float* bias, float* output, ThreadPool* pool, const Epilogue& epilogue,
                 int64_t in_plane_stride) {
  const int64_t in_plane = in_plane_stride > 0 ? in_plane_stride : s.in_h * s.in_w;
  const Padded p = padded_layout(s);
  const int64_t taps = s.in_channels * s.kernel_h * s.kernel_w;
  const int64_t out_plane = s.out_h * s.out_w;
  const int64_t image_floats = p.image_floats(s);
  // The buffers are this thread's; the lambdas below, which may run on other threads, see them
  // through locals.
  static thread_local AlignedBuffer padded_buffer, panel_buffer;
  static thread_local std::vector<int64_t> offset_buffer;
  float* padded = padded_buffer.get(s.batch * image_floats);
  if (panels == nullptr) {
    float* packed = panel_buffer.get(ceil_div(s.out_channels, kPanelRows) * kPanelRows * taps);
    pack_row_panels(s.out_channels, taps, weight, taps, packed, nullptr);
    panels = packed;
  }
  // Each tap's offset in the padded image from the top-left input of its output pixel.
  offset_buffer.resize(size_t(taps));
  int64_t* offsets = offset_buffer.data();
  for (int64_t c = 0, t = 0; c < s.in_channels; ++c)
    for (int64_t kh = 0; kh < s.kernel_h; ++kh)
      for (int64_t kw = 0; kw < s.kernel_w; ++kw, ++t) {
        const int64_t shift = kw * s.dilation_w;
        offsets[t] = ((c * p.phases + shift % s.stride_w) * p.rows + kh * s.dilation_h) * p.width +
                     shift / s.stride_w;
      }

  const int64_t padded_rows = s.batch * s.in_channels * p.phases * p.rows;
  parallel_for(pool, padded_rows, 64,
               [&](int64_t r0, int64_t r1) { pad_rows(s, p, input, in_plane, r0, r1, padded); });

  const ClampEpilogue clamp = clamp_of(epilogue);
  const int64_t panel_count = ceil_div(s.out_channels, kPanelRows);
#if defined(__AVX512F__)
  // Output channels a multiple of 8 take the 8-channel tiles (NNX_STEM_ROWS8=0 keeps the 12-row
  // tiles, for measuring against them).
  static const bool rows8_enabled = env_switch("NNX_STEM_ROWS8");
  const bool rows8 = rows8_enabled && s.out_channels % 8 == 0;
  const int64_t vectors_per_row = ceil_div(s.out_w, 16);
#endif
  // Activations other than a clamp go over an output row of every channel once all its tiles are
  // stored (a few KB, in L1): applied to each tile just after its masked stores, whose values a
  // load cannot take before they reach the cache, they stalled on every load (MobileNetV3's
  // Hardswish stem at batch 8: 0.5 ms more than its ReLU6 twin).
  auto row_epilogue = [&](float* out_row) {
    for (int64_t c = 0; c < s.out_channels; ++c)
      apply_epilogue(epilogue, out_row + c * out_plane, s.out_w);
  };
  parallel_for(pool, s.batch * s.out_h, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / s.out_h, oh = i % s.out_h;
      const float* row = padded + n * image_floats + oh * s.stride_h * p.width;
      float* out_row = output + n * s.out_channels * out_plane + oh * s.out_w;
#if defined(__AVX512F__)
      if (rows8) {
        for (int64_t v0 = 0; v0 < vectors_per_row;) {
          const int64_t vectors = next_vectors(vectors_per_row - v0);
          const int64_t ow0 = 16 * v0, cols = std::min(16 * vectors, s.out_w - ow0);
          const __mmask16 last = lanes_below(cols - 16 * (vectors - 1));
          for (int64_t c0 = 0; c0 < s.out_channels; c0 += 8) {
            const int64_t lane = c0 % kPanelRows;
            const float* a0 = panels + (c0 - lane) * taps + lane;
            float* c = out_row + c0 * out_plane + ow0;
            kStemTiles8[lane == 8 ? 1 : 0][size_t(vectors - 1)](
                taps, offsets, row + ow0, a0, a0 + kPanelRows * taps - lane, c, out_plane, last,
                bias != nullptr ? bias + c0 : nullptr, clamp.lo, clamp.hi);
          }
          v0 += vectors;
        }
        if (!clamp.exact) row_epilogue(out_row);
        continue;
      }
#endif
      for (int64_t ow0 = 0; ow0 < s.out_w; ow0 += kTile) {
        const int64_t cols = std::min(kTile, s.out_w - ow0);
#if defined(__AVX512F__)
        const int64_t vectors = cols > 16 ? 2 : 1;
        const __mmask16 last = lanes_below(cols - 16 * (vectors - 1));
#endif
        for (int64_t q = 0; q < panel_count; ++q) {
          const int64_t rows = std::min(kPanelRows, s.out_channels - q * kPanelRows);
          float* c = out_row + q * kPanelRows * out_plane + ow0;
          const float* a = panels + q * kPanelRows * taps;
          const float* b = bias != nullptr ? bias + q * kPanelRows : nullptr;
#if defined(__AVX512F__)
          kStemTiles[size_t(rows - 1)][size_t(vectors - 1)](taps, offsets, row + ow0, a, c,
                                                            out_plane, last, b, clamp.lo, clamp.hi);
#else
          for (int64_t r0 = 0; r0 < rows; r0 += kHalf) {
            const int64_t half = std::min<int64_t>(kHalf, rows - r0);
            kStemTiles[size_t(half - 1)][cols == kTile ? 1 : 0](
                taps, offsets, row + ow0, a + r0, c + r0 * out_plane, out_plane, cols,
                b != nullptr ? b + r0 : nullptr, clamp.lo, clamp.hi);
          }
#endif
        }
      }
      if (!clamp.exact) row_epilogue(out_row);
    }
  });
}
#endif

}  // namespace nnx::cpu
