// The indirect convolution (see indirect_conv.h).
#include "kernels/cpu/indirect_conv.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <array>
#include <bit>
#include <utility>
#include <vector>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/batch_split.h"
#include "kernels/cpu/env_switch.h"
#include "kernels/cpu/epilogue.h"
#include "kernels/cpu/int_math.h"
#include "kernels/cpu/winograd.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

#if defined(NNX_INDIRECT_CONV)
namespace {

// 16 floats (a channel group of the packed layouts) and a mask of 16 lanes: one register on
// AVX-512, two on AVX2, for the packing and layout code below; the tiles are written per ISA.
#if defined(__AVX512F__)
using V16 = __m512;
using Mask16 = __mmask16;
inline Mask16 below16(int64_t n) {
  return lanes_below(n);
}
inline V16 v_zero() {
  return _mm512_setzero_ps();
}
inline V16 v_load(const float* p) {
  return _mm512_load_ps(p);
}
inline V16 v_loadu(const float* p) {
  return _mm512_loadu_ps(p);
}
inline V16 v_loadz(Mask16 m, const float* p) {
  return _mm512_maskz_loadu_ps(m, p);
}
inline void v_store(float* p, V16 v) {
  _mm512_store_ps(p, v);
}
inline void v_storem(float* p, Mask16 m, V16 v) {
  _mm512_mask_storeu_ps(p, m, v);
}
inline void v_transpose16(V16 rows[16]) {
  transpose16(rows);
}
#else
struct V16 {
  __m256 lo, hi;
};
using Mask16 = uint32_t;
inline Mask16 below16(int64_t n) {
  return n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1;
}
// Lanes 8h .. 8h + 7 of a 16-lane mask as a maskload/maskstore mask.
inline __m256i half_mask(Mask16 m, int h) {
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(int32_t(m >> (8 * h))), bits), bits);
}
inline V16 v_zero() {
  return {_mm256_setzero_ps(), _mm256_setzero_ps()};
}
inline V16 v_load(const float* p) {
  return {_mm256_load_ps(p), _mm256_load_ps(p + 8)};
}
inline V16 v_loadu(const float* p) {
  return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
}
inline V16 v_loadz(Mask16 m, const float* p) {
  if (m == 0xFFFFu) return v_loadu(p);
  return {(m & 0xFFu) ? _mm256_maskload_ps(p, half_mask(m, 0)) : _mm256_setzero_ps(),
          (m >> 8) ? _mm256_maskload_ps(p + 8, half_mask(m, 1)) : _mm256_setzero_ps()};
}
inline void v_store(float* p, V16 v) {
  _mm256_store_ps(p, v.lo);
  _mm256_store_ps(p + 8, v.hi);
}
inline void v_storem(float* p, Mask16 m, V16 v) {
  if (m == 0xFFFFu) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
    return;
  }
  // The masks here are lanes [0, n) (below16): plain stores of the parts (store_lanes8), as a
  // masked store costs about three times as much on Zen 2/3.
  if ((m & (m + 1u)) == 0) {
    const int64_t n = std::popcount(unsigned(m));
    store_lanes8(p, v.lo, n);
    store_lanes8(p + 8, v.hi, n - 8);
    return;
  }
  if (m & 0xFFu) _mm256_maskstore_ps(p, half_mask(m, 0), v.lo);
  if (m >> 8) _mm256_maskstore_ps(p + 8, half_mask(m, 1), v.hi);
}
// A 16x16 block as four 8x8 ones.
inline void v_transpose16(V16 rows[16]) {
  __m256 a[8], b[8], c[8], d[8];
  for (int r = 0; r < 8; ++r) {
    a[r] = rows[r].lo;
    b[r] = rows[8 + r].lo;
    c[r] = rows[r].hi;
    d[r] = rows[8 + r].hi;
  }
  transpose8(a);
  transpose8(b);
  transpose8(c);
  transpose8(d);
  for (int r = 0; r < 8; ++r) {
    rows[r] = {a[r], b[r]};
    rows[8 + r] = {c[r], d[r]};
  }
}
#endif

#if defined(__AVX512F__)
constexpr int64_t kTilePixels = 7;
#else
// AVX2: one micro-tile. As 7 (a 4- and a 3-pixel micro-tile, neither with the 8 accumulators
// that hide the FMA latency at 2 a cycle), a 512-channel 2x2 layer's training forward took
// 4.4-4.7 ms, now 3.7-3.8.
constexpr int64_t kTilePixels = 6;
#endif
constexpr int64_t kPanel = 48;  // output channels per weight panel

// The output channels (rounded up to whole vectors, ld) in panels of kPanel = 3 vectors, the
// tiles' widest; a last vector left alone joins the one before it as two panels of 2 vectors
// (a 1-vector tile does 7 FMAs for 8 loads, a 2-vector one 14 for 9: ResNet's 64-channel
// layers).
struct Panels {
  int64_t ld, full, tail_width, count;
  explicit Panels(int64_t outs) : ld(ceil_div(outs, 16) * 16) {
    const int64_t vectors = ld / 16;
    full = vectors / 3;
    int64_t rest = vectors % 3, tails = rest == 0 ? 0 : 1;
    if (rest == 1 && full > 0) {
      --full;
      rest = 2;
      tails = 2;
    }
    tail_width = rest * 16;
    count = full + tails;
  }
  int64_t start(int64_t q) const {
    return q < full ? q * kPanel : full * kPanel + (q - full) * tail_width;
  }
  int64_t width(int64_t q) const { return q < full ? kPanel : tail_width; }
  // The panel that holds output channel o.
  int64_t of(int64_t o) const {
    return o < full * kPanel ? o / kPanel : full + (o - full * kPanel) / tail_width;
  }
};

// One tile: MR pixels x NV * 16 output channels, over `taps` taps and every input channel.
// pixel[P] points at pixel P's receptive field's first element (channels-last, padded input),
// and tap t's values lie `offsets[t]` floats on, its weights weights[t] floats into the panel b
// ([tap][channel][width]). The sums plus bias, clamped to [lower, upper] (NaN kept), go
// channels-first to out[P] + channel * plane for the first `columns` channels.
#if defined(__AVX512F__)
// `prefetch_lines` cache lines from `prefetch` on are requested into L2, one each step of depth
// (the tile's prefetch_share of the next panel, while it reads the current panel from cache).
template <int MR, int NV>
void tile(int64_t taps, int64_t channels, const int64_t* offsets, const int64_t* weights,
          const float* const* pixel, const float* panel, int64_t width, const float* bias,
          float lower, float upper, float* const* out, int64_t plane, int64_t columns,
          const char* prefetch, int64_t prefetch_lines) {
  const char* const prefetch_end = prefetch + 64 * prefetch_lines;
  __m512 acc[MR][NV];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    static_for<NV>([&]<int V>()
                       __attribute__((always_inline)) { acc[P][V] = _mm512_setzero_ps(); });
  });
  for (int64_t t = 0; t < taps; ++t) {
    const float* a[MR];
    static_for<MR>([&]<int P>() __attribute__((always_inline)) { a[P] = pixel[P] + offsets[t]; });
    const float* b = panel + weights[t];
    for (int64_t c = 0; c < channels; ++c, b += width) {
      if (prefetch < prefetch_end) {
        _mm_prefetch(prefetch, _MM_HINT_T1);
        prefetch += 64;
      }
      __m512 bv[NV];
      static_for<NV>([&]<int V>()
                         __attribute__((always_inline)) { bv[V] = _mm512_load_ps(b + V * 16); });
      static_for<MR>([&]<int P>() __attribute__((always_inline)) {
        const __m512 av = _mm512_set1_ps(a[P][c]);
        static_for<NV>([&]<int V>() __attribute__((always_inline)) {
          acc[P][V] = _mm512_fmadd_ps(av, bv[V], acc[P][V]);
        });
      });
    }
  }
  const __m512 lo = _mm512_set1_ps(lower), hi = _mm512_set1_ps(upper);
  // The pixels' outputs one after another (out[P] = out[0] + P): each channel's run of pixels
  // is one masked store, the sums transposed in registers.
  bool contiguous = true;
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    contiguous = contiguous && out[P] == out[0] + P;
  });
  static_for<NV>([&]<int V>() __attribute__((always_inline)) {
    const __m512 bias_v = _mm512_load_ps(bias + V * 16);
    const int64_t n = std::min<int64_t>(16, columns - V * 16);
    if (contiguous) {
      __m512 rows[16];
      static_for<16>([&]<int P>() __attribute__((always_inline)) {
        if constexpr (P < MR)
          rows[P] = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[P][V], bias_v)));
        else
          rows[P] = _mm512_setzero_ps();
      });
      transpose16(rows);
      for (int64_t j = 0; j < n; ++j)
        _mm512_mask_storeu_ps(out[0] + (V * 16 + j) * plane, __mmask16((1u << MR) - 1), rows[j]);
      return;
    }
    // Else through a small transpose in cache: each channel's pixels are stored together.
    alignas(64) float t[MR][16];
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      _mm512_store_ps(t[P], _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[P][V], bias_v))));
    });
    for (int64_t j = 0; j < n; ++j)
      for (int p = 0; p < MR; ++p) out[p][(V * 16 + j) * plane] = t[p][j];
  });
}

#else
// AVX2: a micro-tile of MR <= 6 pixels x 16 output channels (12 accumulators, the channel
// group's two weight vectors and a broadcast input value), stored through a transpose in cache.
template <int MR>
void tile16(int64_t taps, int64_t channels, const int64_t* offsets, const int64_t* weights,
            const float* const* pixel, const float* panel, int64_t width, const float* bias,
            float lower, float upper, float* const* out, int64_t plane, int64_t columns) {
  __m256 acc[MR][2];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    acc[P][0] = _mm256_setzero_ps();
    acc[P][1] = _mm256_setzero_ps();
  });
  for (int64_t t = 0; t < taps; ++t) {
    const float* a[MR];
    static_for<MR>([&]<int P>() __attribute__((always_inline)) { a[P] = pixel[P] + offsets[t]; });
    const float* b = panel + weights[t];
    for (int64_t c = 0; c < channels; ++c, b += width) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      static_for<MR>([&]<int P>() __attribute__((always_inline)) {
        const __m256 av = _mm256_broadcast_ss(a[P] + c);
        acc[P][0] = _mm256_fmadd_ps(av, b0, acc[P][0]);
        acc[P][1] = _mm256_fmadd_ps(av, b1, acc[P][1]);
      });
    }
  }
  const __m256 lo = _mm256_set1_ps(lower), hi = _mm256_set1_ps(upper);
  const __m256 bias0 = _mm256_load_ps(bias), bias1 = _mm256_load_ps(bias + 8);
  alignas(32) float t[MR][16];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    _mm256_store_ps(t[P], _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc[P][0], bias0))));
    _mm256_store_ps(t[P] + 8,
                    _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc[P][1], bias1))));
  });
  const int64_t n = std::min<int64_t>(16, columns);
  for (int64_t j = 0; j < n; ++j)
    for (int p = 0; p < MR; ++p) out[p][j * plane] = t[p][j];
}

// The AVX-512 tile's work (MR pixels x NV channel groups) as micro-tiles, a group at a time.
template <int MR, int NV>
void tile(int64_t taps, int64_t channels, const int64_t* offsets, const int64_t* weights,
          const float* const* pixel, const float* panel, int64_t width, const float* bias,
          float lower, float upper, float* const* out, int64_t plane, int64_t columns,
          const char* /*prefetch*/, int64_t /*prefetch_lines*/) {
  static_assert(MR <= 6, "a micro-tile holds at most 6 pixels (kTilePixels)");
  for (int64_t v = 0; v < NV && v * 16 < columns; ++v) {
    float* to[MR];
    for (int p = 0; p < MR; ++p) to[p] = out[p] + v * 16 * plane;
    tile16<MR>(taps, channels, offsets, weights, pixel, panel + v * 16, width, bias + v * 16, lower,
               upper, to, plane, columns - v * 16);
  }
}
#endif

using Tile = void (*)(int64_t, int64_t, const int64_t*, const int64_t*, const float* const*,
                      const float*, int64_t, const float*, float, float, float* const*, int64_t,
                      int64_t, const char*, int64_t);
template <int... M>
constexpr std::array<std::array<Tile, 3>, sizeof...(M)> tiles(std::integer_sequence<int, M...>) {
  return {{{&tile<M + 1, 1>, &tile<M + 1, 2>, &tile<M + 1, 3>}...}};
}
constexpr auto kTiles = tiles(std::make_integer_sequence<int, kTilePixels>{});

// NNX_CONV_INDIRECT=0 in the environment turns this path off, for measuring against it.
bool indirect_enabled() {
  static const bool enabled = env_switch("NNX_CONV_INDIRECT");
  return enabled;
}

}  // namespace

bool indirect_suitable(const Conv2dShape& s, bool prepared) {
  if (!indirect_enabled() || s.groups != 1 || s.in_channels < 16 || s.out_channels < 16)
    return false;
  // A dense 1x1 layer is a GEMM that reads its input in place already.
  if (reads_input_in_place(s)) return false;
    // With the weights packed once (inference), any plane: against the prepared 12-row panels
    // (im2col per block of pixels, depth blocks stored and reloaded) on a 2-core EPYC, ResNet's
    // strided 3x3 layers 0.70 -> 0.60 ms (56 -> 28), 1.47 -> 1.27 ms (128 channels), 1.65 ->
    // 1.39 ms on a 112 -> 56 plane, a dilated 3x3 at 28x28 5.5 -> 4.4 ms, a 5x5 4.2 -> 3.1 ms.
    // Strided 1x1 layers neither gain nor lose (the downsampling of ResNet-50): left as they were.
#if defined(__AVX512F__)
  if (prepared) return s.kernel_h * s.kernel_w > 1;
#else
  // AVX2: inference keeps the panel and channels-last paths for most layers; its micro-tiles did
  // not beat them in an x86-64-v3 build on Zen 5 (ResNet-50 per node: 128 -> 128 3x3/2 at 28x28
  // 1.49 -> 1.66 ms, 512 -> 512 at 7x7 1.85 -> 2.44 ms). On a Zen 3, the processors this build
  // is for, they do beat them for strided kernels on planes of more than 100 output pixels
  // (ResNet-50 per node, each round's ratio over 10 rounds: 128 -> 128 3x3/2 at 28x28 0.74,
  // 256 -> 256 at 14x14 0.71; ResNet-18's 0.86 and 0.93; at 7x7 0.98-1.04, left as they were).
  // Training's small planes and gradients take it as well.
  if (prepared)
    return s.kernel_h * s.kernel_w > 1 && (s.stride_h > 1 || s.stride_w > 1) &&
           s.out_h * s.out_w > 100;
#endif
  return s.out_h * s.out_w <= 256;
}

namespace {

// Column i of a 16 x 16 block (block[0..16)[i]) to to(i) for i < count, the lanes below
// `lanes` stored: the block transposed in registers, each store one whole run of channels (a
// gather per column from L1 made ResNet-50's strided 3x3 layers 0.76-0.79 ms, this 0.69-0.74).
template <typename To>
inline void store_columns(const float (&block)[16][16], int64_t count, Mask16 lanes, To to) {
  V16 rows[16];
  for (int j = 0; j < 16; ++j) rows[j] = v_load(block[j]);
  v_transpose16(rows);
  for (int64_t i = 0; i < count; ++i) v_storem(to(i), lanes, rows[i]);
}

// The input copied channels-last with its padding written out: rows x cols pixels of
// s.in_channels floats per image, as far as the last window reaches.
struct PaddedInput {
  const float* data;
  int64_t rows, cols;
  // Pixel (n, oh, ow)'s receptive field's first element.
  const float* at(const Conv2dShape& s, int64_t n, int64_t oh, int64_t ow) const {
    return data + ((n * rows + oh * s.stride_h) * cols + ow * s.stride_w) * s.in_channels;
  }
  // How far tap (kh, kw)'s values lie from there.
  int64_t offset(const Conv2dShape& s, int64_t kh, int64_t kw) const {
    return (kh * s.dilation_h * cols + kw * s.dilation_w) * s.in_channels;
  }
};

// The padded copy's rows and columns per image.
int64_t padded_rows(const Conv2dShape& s) {
  return std::max<int64_t>((s.out_h - 1) * s.stride_h + (s.kernel_h - 1) * s.dilation_h + 1,
                           s.pad_top);
}
int64_t padded_cols(const Conv2dShape& s) {
  return std::max<int64_t>((s.out_w - 1) * s.stride_w + (s.kernel_w - 1) * s.dilation_w + 1,
                           s.pad_left);
}

PaddedInput pad_channels_last(const Conv2dShape& s, const float* input, AlignedBuffer& buffer,
                              ThreadPool* pool) {
  const int64_t channels = s.in_channels, in_plane = s.in_h * s.in_w;
  const int64_t rows = padded_rows(s), cols = padded_cols(s);
  float* padded = buffer.get(s.batch * rows * cols * channels);
  // An image's rows per task.
  parallel_for(pool, s.batch * rows, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t task = r0; task < r1; ++task) {
      const int64_t n = task / rows, r = task % rows, ih = r - s.pad_top;
      float* dst = padded + task * cols * channels;
      if (ih < 0 || ih >= s.in_h) {
        std::fill(dst, dst + cols * channels, 0.f);
        continue;
      }
      const int64_t w0 = std::min(cols, s.pad_left);
      const int64_t w1 = std::min(cols, s.pad_left + s.in_w);
      std::fill(dst, dst + w0 * channels, 0.f);
      std::fill(dst + w1 * channels, dst + cols * channels, 0.f);
      const float* src = input + n * channels * in_plane + ih * s.in_w;
      // Blocks of 16 channels x 16 columns: read a row of each channel, stored a pixel's
      // channels at a time (a value at a time, the loads strode a plane apart and took 3% of a
      // ResNet-18 training step).
      alignas(64) float block[16][16];
      for (int64_t c0 = 0; c0 < channels; c0 += 16) {
        const int64_t nc = std::min<int64_t>(16, channels - c0);
        for (int64_t x0 = w0 - s.pad_left; x0 < w1 - s.pad_left; x0 += 16) {
          const int64_t nx = std::min<int64_t>(16, w1 - s.pad_left - x0);
          const Mask16 columns = below16(nx);
          for (int64_t j = 0; j < 16; ++j)
            v_store(block[j], j < nc ? v_loadz(columns, src + (c0 + j) * in_plane + x0) : v_zero());
          store_columns(block, nx, below16(nc),
                        [&](int64_t i) { return dst + (x0 + s.pad_left + i) * channels + c0; });
        }
      }
    }
  });
  return {padded, rows, cols};
}

// The output rows [lo, hi) whose input row through kernel row `kh` lies inside the input (the
// same for columns with the width's parameters); elsewhere the tap reads padding.
struct Range {
  int64_t lo, hi;
};
Range inside(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t at) {
  // out * stride - pad + at in [0, in).
  const int64_t lo = pad - at <= 0 ? 0 : ceil_div(pad - at, stride);
  const int64_t last = in - 1 + pad - at;
  const int64_t hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  return {std::min(lo, hi), hi};
}

// One tile of the weight gradient: MR input channels [c0, c0 + MR) of one tap x NVEC vectors of
// output channels, summed over `count` pixels of a chunk: pixel i's input values at
// a + a_offset[i] (the tap's offset, plus c0, already in a; channels-last, padded), its output
// gradient's 16 channels of block b at g + b * block_stride + pixel[i] * 16 (the chunk's
// gradient of this panel, [channel / 16][pixel][16]: a pass over the pixels reads one stream
// of whole cache lines, where rows of the panel's width, a line of each read per pass, 256 bytes
// apart, used a quarter of L1's sets: the kernel alone 3.2 against 4.2 FMAs a ns). Stored
// into, or added to (`accumulate`), rows P of `to` (row P at to + P * to_stride: the sums'
// [in][tap][ld] rows), whole vectors. Written once for the build's vector (vec::V).
template <int MR, int NVEC>
void weight_tile_lanes(const float* a, const int32_t* a_offset, const int32_t* pixel, int64_t count,
                       const float* g, int64_t block_stride, float* to, int64_t to_stride,
                       bool accumulate) {
  constexpr int W = vec::kWidth;
  vec::V acc[MR][NVEC];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    static_for<NVEC>([&]<int V>() __attribute__((always_inline)) { acc[P][V] = vec::zero(); });
  });
  for (int64_t i = 0; i < count; ++i) {
    const float* ai = a + a_offset[i];
    const float* gi = g + int64_t(pixel[i]) * 16;
    vec::V bv[NVEC];
    static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
      bv[V] = vec::load(gi + V * W / 16 * block_stride + V * W % 16);
    });
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      const vec::V av = vec::splat(ai[P]);
      static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
        acc[P][V] = vec::fmadd(av, bv[V], acc[P][V]);
      });
    });
  }
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    float* row = to + P * to_stride;
    static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
      vec::V v = acc[P][V];
      if (accumulate) v = vec::add(v, vec::load(row + V * W));
      vec::store(row + V * W, v);
    });
  });
}

// A tile over NV * 16 output channels: in one pass (AVX-512: NV vectors), or (AVX2) in passes of
// two vectors (16 ymm registers: 12 accumulators, two vectors of the gradient, a broadcast), of
// four where at most 3 input channels leave room (a tile of the last 1-3 channels).
#if defined(__AVX512F__)
template <int MR, int NV>
void weight_tile(const float* a, const int32_t* a_offset, const int32_t* pixel, int64_t count,
                 const float* g, int64_t block_stride, float* to, int64_t to_stride,
                 bool accumulate) {
  weight_tile_lanes<MR, NV>(a, a_offset, pixel, count, g, block_stride, to, to_stride, accumulate);
}
#else
template <int MR, int LANES>
void weight_tile_passes(const float* a, const int32_t* a_offset, const int32_t* pixel,
                        int64_t count, const float* g, int64_t block_stride, float* to,
                        int64_t to_stride, bool accumulate) {
  constexpr int kPass = MR <= 3 ? 4 : 2;  // whole 16-channel blocks
  constexpr int kThis = LANES < kPass ? LANES : kPass;
  weight_tile_lanes<MR, kThis>(a, a_offset, pixel, count, g, block_stride, to, to_stride,
                               accumulate);
  if constexpr (LANES > kThis)
    weight_tile_passes<MR, LANES - kThis>(a, a_offset, pixel, count, g + kThis / 2 * block_stride,
                                          block_stride, to + kThis * 8, to_stride, accumulate);
}
template <int MR, int NV>
void weight_tile(const float* a, const int32_t* a_offset, const int32_t* pixel, int64_t count,
                 const float* g, int64_t block_stride, float* to, int64_t to_stride,
                 bool accumulate) {
  static_assert(MR <= 6, "a tile holds at most 6 input channels (kTilePixels, kWideChannels)");
  weight_tile_passes<MR, 2 * NV>(a, a_offset, pixel, count, g, block_stride, to, to_stride,
                                 accumulate);
}
#endif

using WeightTile = void (*)(const float*, const int32_t*, const int32_t*, int64_t, const float*,
                            int64_t, float*, int64_t, bool);
template <int... M>
constexpr std::array<std::array<WeightTile, 3>, sizeof...(M)> weight_tiles(
    std::integer_sequence<int, M...>) {
  return {{{&weight_tile<M + 1, 1>, &weight_tile<M + 1, 2>, &weight_tile<M + 1, 3>}...}};
}
constexpr auto kWeightTiles = weight_tiles(std::make_integer_sequence<int, kTilePixels>{});
// Output channels in whole 64-wide panels (64, 128, ... of them): 6 input channels x 4 vectors,
// 24 FMAs for 10 loads (7 x 3 does 21; 64 channels made two 32-wide panels, 14 for 9).
constexpr int64_t kWideChannels = 6;
template <int... M>
constexpr std::array<WeightTile, sizeof...(M)> wide_weight_tiles(std::integer_sequence<int, M...>) {
  return {{&weight_tile<M + 1, 4>...}};
}
constexpr auto kWideWeightTiles =
    wide_weight_tiles(std::make_integer_sequence<int, kWideChannels>{});
// Output pixels per chunk of the weight gradient: a 64-wide panel's gradient for them is 16 KiB,
// half a core's L1, where every tile of the chunk reads it.
constexpr int64_t kWeightGradChunk = 64;

}  // namespace

namespace {

// The weights as panels, [tap][channel][width] each (panel q at start(q) * k floats; ld * k
// floats in all): 16 x 16 blocks transposed in registers, so that every cache line is read and
// written once and whole (a weight read or a panel entry written at a time strode a power of two
// apart, into a few cache sets, and took 9% of a ResNet-18 training step).
void pack_weights(const Conv2dShape& s, const float* weight, float* packed, ThreadPool* pool) {
  const int64_t channels = s.in_channels, taps = s.kernel_h * s.kernel_w, k = channels * taps;
  const Panels panels(s.out_channels);
  const int64_t row_blocks = panels.ld / 16, depth_blocks = ceil_div(k, 16);
  parallel_for(pool, row_blocks * depth_blocks, 8, [&](int64_t b0, int64_t b1) {
    alignas(64) float block[16][16];
    for (int64_t task = b0; task < b1; ++task) {
      const int64_t j0 = task / depth_blocks * 16, i0 = task % depth_blocks * 16;
      const int64_t n = std::min<int64_t>(16, k - i0);
      const Mask16 mask = below16(n);
      for (int64_t r = 0; r < 16; ++r)
        v_store(block[r],
                j0 + r < s.out_channels ? v_loadz(mask, weight + (j0 + r) * k + i0) : v_zero());
      const int64_t q = panels.of(j0), o0 = panels.start(q), width = panels.width(q);
      float* panel = packed + o0 * k + (j0 - o0);
      store_columns(block, n, below16(16), [&](int64_t i) {
        const int64_t c = (i0 + i) / taps, t = (i0 + i) % taps;
        return panel + (t * channels + c) * width;
      });
    }
  });
}

// The panels (as pack_weights places them) for a convolution that gives (part of) the input
// gradient of a convolution with `outs` input and `channels` output channels and
// `weight_taps` taps: its input channels are those `channels`, its outputs those `outs`, and its
// tap i's weight (j, c) is weight[c][j][source[i]] (the kernel flipped, or one stride phase of
// it). A row of the weight holds one such input channel's taps for all outputs: 16 outputs' runs
// of taps, one contiguous stretch of the weight, are a 16 x 16 block transposed in registers, a
// vector per tap stored whole where the packing takes that tap.
void pack_weights_transposed(int64_t channels, int64_t outs, int64_t weight_taps,
                             const int64_t* source, int64_t taps, const float* weight,
                             float* packed, ThreadPool* pool) {
  const int64_t k = channels * taps;
  const Panels panels(outs);
  const int64_t row_blocks = panels.ld / 16;
  const int64_t tap_blocks = ceil_div(weight_taps, 16);
  const float* end = weight + channels * outs * weight_taps;
  parallel_for(pool, row_blocks * channels, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t task = b0; task < b1; ++task) {
      const int64_t c = task / row_blocks, j0 = task % row_blocks * 16;
      const int64_t q = panels.of(j0), o0 = panels.start(q), width = panels.width(q);
      const int64_t live = std::clamp<int64_t>(outs - j0, 0, 16);
      const float* from = weight + (c * outs + j0) * weight_taps;
      float* panel = packed + o0 * k + (j0 - o0) + c * width;
      for (int64_t tb = 0; tb < tap_blocks; ++tb) {
        const int64_t u0 = tb * 16;
        const Mask16 mask = below16(weight_taps - u0);
        V16 rows[16];
        for (int64_t r = 0; r < 16; ++r) {
          const float* at = from + r * weight_taps + u0;
          // Whole vectors where the weight goes on past them (the lanes past the row are never
          // stored), masked at its end.
          rows[r] = r >= live ? v_zero() : at + 16 <= end ? v_loadu(at) : v_loadz(mask, at);
        }
        v_transpose16(rows);
        for (int64_t tap = 0; tap < taps; ++tap) {
          const int64_t u = source[tap] - u0;
          if (u >= 0 && u < 16) v_store(panel + tap * channels * width, rows[u]);
        }
      }
    }
  });
}

// Tap offsets: on the stack for up to 64 taps.
struct Offsets {
  int64_t stack[64];
  std::vector<int64_t> heap;
  int64_t* data;
  explicit Offsets(int64_t taps) : data(stack) {
    if (taps > 64) {
      heap.resize(size_t(taps));
      data = heap.data();
    }
  }
  Offsets(const Offsets&) = delete;
  Offsets& operator=(const Offsets&) = delete;
};

// Where run_tiles finds pixel p: its receptive field's first element, its output's offset, and
// the taps that read inside the input for it (bit t for tap t; all set for kernels of over 64
// taps), the others reading the padding's zeros.
struct TilePixel {
  const float* in;
  int64_t out;
  uint64_t taps;
};

// Bit kh * kernel_w + kw set where output position (oh, ow) of `s` reads the input (not its
// padding) through tap (kh, kw); all bits for kernels of over 64 taps.
uint64_t taps_inside(const Conv2dShape& s, int64_t oh, int64_t ow) {
  if (s.kernel_h * s.kernel_w > 64) return ~uint64_t(0);
  uint64_t mask = 0;
  for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
    const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
    if (ih < 0 || ih >= s.in_h) continue;
    for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
      const int64_t iw = ow * s.stride_w - s.pad_left + kw * s.dilation_w;
      if (iw >= 0 && iw < s.in_w) mask |= uint64_t(1) << (kh * s.kernel_w + kw);
    }
  }
  return mask;
}

// `pixels` output pixels located by locate(p) (a TilePixel; output at output + out + channel *
// channel_stride), over `taps` taps `offset` apart and `channels` input channels, against the
// packed weights of `outs` output channels; plus bias (padded to whole vectors, zeros for none),
// clamped by the epilogue's clamp (a non-clamping epilogue is the caller's). Tap j's weights
// are the packing's tap packed_tap[j] (null: j) of its `packed_taps`. A tile multiplies only the
// taps that read inside the input for one of its pixels: with pixels ordered so that those of
// one border position share tiles, a 2x2 plane does 4 of its 9 taps and a 4x4 one 6.25 on
// average.
struct TileJob {
  int64_t pixels, taps;
  const int64_t* offset;
  const int64_t* packed_tap;
  int64_t packed_taps, channels, outs;
  const float* bias;
  ClampEpilogue clamp;
  float* output;
  int64_t channel_stride;
};

// The bias as whole vectors (zeros past `outs`, or all zeros for none), in this thread's buffer.
const float* padded_bias(const float* bias, int64_t outs) {
  thread_local AlignedBuffer buffer;
  const int64_t ld = ceil_div(outs, 16) * 16;
  float* padded = buffer.get(ld);
  for (int64_t o = 0; o < ld; ++o) padded[o] = bias != nullptr && o < outs ? bias[o] : 0.f;
  return padded;
}

// Tiles [t0, t1) of the job against panel q, packed at `panel`. `next` (`next_floats` long):
// the weights of this thread's next panel, which the tiles after the first request into L2
// while this panel's run (the first reads this panel's from memory where the weights are not
// cached: ResNet's wide 3x3 layers at batch 1).
template <typename Locate>
void run_panel(const TileJob& job, const Locate& locate, int64_t q, const float* panel, int64_t t0,
               int64_t t1, const float* next, int64_t next_floats) {
  const Panels panels(job.outs);
  const int64_t o0 = panels.start(q), width = panels.width(q);
  const float* pixel[kTilePixels];
  float* out[kTilePixels];
  Offsets tap_offsets(job.taps), tap_weights(job.taps);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t p0 = t * kTilePixels, mr = std::min(kTilePixels, job.pixels - p0);
    uint64_t mask = 0;
    for (int64_t i = 0; i < mr; ++i) {
      const TilePixel at = locate(p0 + i);
      pixel[i] = at.in;
      out[i] = job.output + at.out + o0 * job.channel_stride;
      mask |= at.taps;
    }
    int64_t used = 0;
    for (int64_t j = 0; j < job.taps; ++j)
      if (job.taps > 64 || (mask >> j & 1)) {
        tap_offsets.data[used] = job.offset[j];
        tap_weights.data[used++] =
            (job.packed_tap != nullptr ? job.packed_tap[j] : j) * job.channels * width;
      }
    const PrefetchShare ahead = prefetch_share(next, next_floats / 16, t1 - t0, t - t0);
    kTiles[size_t(mr - 1)][size_t(width / 16 - 1)](
        used, job.channels, tap_offsets.data, tap_weights.data, pixel, panel, width, job.bias + o0,
        job.clamp.lo, job.clamp.hi, out, job.channel_stride, job.outs - o0, ahead.from,
        ahead.lines);
  }
}

// The job against all panels, packed at `packed` (panel q at start(q) * channels * packed_taps).
template <typename Locate>
void run_tiles(const TileJob& job, const Locate& locate, const float* packed, ThreadPool* pool) {
  const Panels panels(job.outs);
  const int64_t k = job.channels * job.packed_taps;
  const int64_t tile_count = ceil_div(job.pixels, kTilePixels);
  const int64_t threads = pool ? pool->size() : 1;
  // Tiles [t0, t1) x panels [q0, q1), panels outside, so that a panel's weights stay in cache
  // while the tiles go past them.
  auto run = [&](int64_t t0, int64_t t1, int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q)
      run_panel(job, locate, q, packed + panels.start(q) * k, t0, t1,
                q + 1 < q1 ? packed + panels.start(q + 1) * k : nullptr,
                q + 1 < q1 ? panels.width(q + 1) * k : 0);
  };
  if (tile_count >= 4 * threads) {
    parallel_for(pool, tile_count, 1,
                 [&](int64_t t0, int64_t t1) { run(t0, t1, 0, panels.count); });
  } else {
    parallel_for(pool, panels.count, 1,
                 [&](int64_t q0, int64_t q1) { run(0, tile_count, q0, q1); });
  }
}

// The convolution `s` of `padded` (its input, channels-last) with the packed weights.
void run_convolution(const Conv2dShape& s, const PaddedInput& padded, const float* packed,
                     const float* bias, float* output, ThreadPool* pool, const Epilogue& epilogue) {
  const int64_t plane = s.out_h * s.out_w, taps = s.kernel_h * s.kernel_w;
  Offsets offsets(taps);
  for (int64_t kh = 0; kh < s.kernel_h; ++kh)
    for (int64_t kw = 0; kw < s.kernel_w; ++kw)
      offsets.data[kh * s.kernel_w + kw] = padded.offset(s, kh, kw);
  // The plane's positions grouped by the taps that read inside the input for them (then by
  // position: the interior keeps its order), and a group's pixels image by image, so that a
  // tile's pixels mostly share their border position and skip the same taps, and mostly lie
  // one after another in their image (stored a channel's run at a time). (std::sort on the
  // pairs, unlike std::stable_sort, allocates nothing per call.)
  struct Group {
    int64_t first_position, size;  // its first pixel: batch * first_position
  };
  thread_local std::vector<std::pair<uint64_t, int64_t>> order;
  thread_local std::vector<Group> groups;
  // The group of sorted position i: pixel p's is that of position p / batch (a group's first
  // pixel is batch times its first position).
  thread_local std::vector<int32_t> group_at;
  order.resize(size_t(plane));
  group_at.resize(size_t(plane));
  for (int64_t r = 0; r < plane; ++r)
    order[size_t(r)] = {taps_inside(s, r / s.out_w, r % s.out_w), r};
  std::sort(order.begin(), order.end());
  groups.clear();
  for (int64_t r = 0; r < plane; ++r) {
    if (r == 0 || order[size_t(r)].first != order[size_t(r - 1)].first) groups.push_back({r, 0});
    group_at[size_t(r)] = int32_t(groups.size() - 1);
  }
  for (size_t i = 0; i < groups.size(); ++i)
    groups[i].size =
        (i + 1 < groups.size() ? groups[i + 1].first_position : plane) - groups[i].first_position;
  const std::pair<uint64_t, int64_t>* positions = order.data();
  const Group* group_of = groups.data();
  const int32_t* group_index = group_at.data();
  const TileJob job{s.batch * plane,
                    taps,
                    offsets.data,
                    nullptr,
                    taps,
                    s.in_channels,
                    s.out_channels,
                    padded_bias(bias, s.out_channels),
                    clamp_of(epilogue),
                    output,
                    plane};
  auto locate = [&](int64_t p) {
    const Group* g = group_of + group_index[p / s.batch];
    const int64_t i = p - s.batch * g->first_position, n = i / g->size;
    const auto [mask, r] = positions[g->first_position + i % g->size];
    return TilePixel{padded.at(s, n, r / s.out_w, r % s.out_w), n * s.out_channels * plane + r,
                     mask};
  };
  run_tiles(job, locate, packed, pool);
  if (!job.clamp.exact) {
    parallel_for(pool, s.batch * s.out_channels, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) apply_epilogue(epilogue, output + i * plane, plane);
    });
  }
}

}  // namespace

int64_t indirect_weights_floats(const Conv2dShape& s) {
  return ceil_div(s.out_channels, 16) * 16 * s.in_channels * s.kernel_h * s.kernel_w;
}

void indirect_pack_weights(const Conv2dShape& s, const float* weight, float* out,
                           ThreadPool* pool) {
  pack_weights(s, weight, out, pool);
}

void conv2d_indirect(const Conv2dShape& s, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool, const Epilogue& epilogue,
                     const float* packed) {
  thread_local AlignedBuffer input_buffer, weight_buffer;
  if (packed == nullptr) {
    float* own = weight_buffer.get(indirect_weights_floats(s));
    pack_weights(s, weight, own, pool);
    packed = own;
  }
  // An image at a time where the batch's padded copy would not fit in L2 and an image's outweighs
  // the weights: that copy went out to memory before the tiles read it back, and the weights are
  // what a split streams again.
  // ResNet-50's 128-channel 3x3/2 layer at batch 8 (each round's ratio of two alternating runs,
  // median of 16): 7% faster, and its copy 1.7 instead of 13 MB. Whole images per thread then
  // (ResNet-18's 64 -> 128 and ResNet-50's 128 -> 128 at batch 8, per node, medians of 8 and 6
  // rounds' ratios): 8-10% faster again.
  const int64_t in_image = s.in_channels * s.in_h * s.in_w;
  const int64_t out_image = s.out_channels * s.out_h * s.out_w;
  const int64_t padded_image = padded_rows(s) * padded_cols(s) * s.in_channels;
  if (s.batch > 1 && s.batch * padded_image > (int64_t(2) << 20) / int64_t(sizeof(float)) &&
      padded_image >= indirect_weights_floats(s)) {
    Conv2dShape one = s;
    one.batch = 1;
    // Whole images per thread, each copied and convolved by the thread that takes it (its copy
    // stays in that core's cache, and no thread waits for the other at every image); the
    // images left over are split over the threads one at a time.
    for_each_image(pool, s.batch, true, [&](int64_t n, ThreadPool* p) {
      thread_local AlignedBuffer own_buffer;
      run_convolution(one, pad_channels_last(one, input + n * in_image, own_buffer, p), packed,
                      bias, output + n * out_image, p, epilogue);
    });
    return;
  }
  run_convolution(s, pad_channels_last(s, input, input_buffer, pool), packed, bias, output, pool,
                  epilogue);
}

namespace {

// The input gradient of a strided convolution, one stride phase at a time: the input positions
// (ry - pad_top + stride_h * a, rx - pad_left + stride_w * b) receive the output gradient at
// (a - i, b - j) times the taps (ry + stride_h * i, rx + stride_w * j), for every i, j that
// fall in the kernel: a stride-1 convolution of the output gradient with that part of the
// kernel, flipped, whose outputs go to the phase's positions. Undilated only.
bool input_grad_by_phases(const Conv2dShape& s, const float* weight, const float* grad_output,
                          float* grad_input, ThreadPool* pool) {
  if (s.dilation_h != 1 || s.dilation_w != 1) return false;
  const int64_t sh = s.stride_h, sw = s.stride_w, in_plane = s.in_h * s.in_w;
  struct Phase {
    int64_t ry, rx, kh, kw, a0, a1, b0, b1;  // kh x kw taps; positions [a0, a1) x [b0, b1)
  };
  // The first index a >= 0 with r - pad + stride * a >= 0, and one past the last inside `size`.
  auto first = [](int64_t r, int64_t pad, int64_t stride) {
    return pad - r <= 0 ? int64_t(0) : ceil_div(pad - r, stride);
  };
  auto end = [](int64_t r, int64_t pad, int64_t stride, int64_t size) {
    const int64_t last = size - 1 + pad - r;
    return last < 0 ? int64_t(0) : last / stride + 1;
  };
  std::vector<Phase> phases;
  bool uncovered = false;  // some input position no tap reaches: its gradient is zero
  int64_t a_end = 0, b_end = 0;
  for (int64_t ry = 0; ry < sh; ++ry)
    for (int64_t rx = 0; rx < sw; ++rx) {
      Phase f{ry,
              rx,
              ry < s.kernel_h ? ceil_div(s.kernel_h - ry, sh) : 0,
              rx < s.kernel_w ? ceil_div(s.kernel_w - rx, sw) : 0,
              first(ry, s.pad_top, sh),
              end(ry, s.pad_top, sh, s.in_h),
              first(rx, s.pad_left, sw),
              end(rx, s.pad_left, sw, s.in_w)};
      if (f.a1 <= f.a0 || f.b1 <= f.b0) continue;
      if (f.kh == 0 || f.kw == 0) {
        uncovered = true;
        continue;
      }
      phases.push_back(f);
      a_end = std::max(a_end, f.a1);
      b_end = std::max(b_end, f.b1);
    }
  if (uncovered) std::fill(grad_input, grad_input + s.batch * s.in_channels * in_plane, 0.f);
  if (phases.empty()) return true;
  // The output gradient channels-last, padded as a stride-1 convolution with the largest
  // phase's kernel needs it for outputs [0, a_end) x [0, b_end).
  Conv2dShape g;
  g.batch = s.batch;
  g.in_channels = s.out_channels;
  g.in_h = s.out_h;
  g.in_w = s.out_w;
  g.out_channels = s.in_channels;
  g.kernel_h = ceil_div(s.kernel_h, sh);
  g.kernel_w = ceil_div(s.kernel_w, sw);
  g.pad_top = g.kernel_h - 1;
  g.pad_left = g.kernel_w - 1;
  g.out_h = a_end;
  g.out_w = b_end;
  thread_local AlignedBuffer input_buffer, weight_buffer;
  const PaddedInput padded = pad_channels_last(g, grad_output, input_buffer, pool);
  // Every phase reads its taps from one packing of the whole kernel (packed tap u: weight tap u).
  const int64_t weight_taps = s.kernel_h * s.kernel_w;
  Offsets identity(weight_taps);
  for (int64_t u = 0; u < weight_taps; ++u) identity.data[u] = u;
  float* packed =
      weight_buffer.get(ceil_div(s.in_channels, 16) * 16 * s.out_channels * weight_taps);
  pack_weights_transposed(s.out_channels, s.in_channels, weight_taps, identity.data, weight_taps,
                          weight, packed, pool);
  const float* bias = padded_bias(nullptr, s.in_channels);
  for (const Phase& f : phases) {
    const int64_t taps = f.kh * f.kw;
    Offsets offsets(taps), source(taps);
    for (int64_t i = 0; i < f.kh; ++i)
      for (int64_t j = 0; j < f.kw; ++j) {
        // Tap (i, j) reads the output gradient at (a - (kh - 1 - i), b - (kw - 1 - j)).
        offsets.data[i * f.kw + j] = padded.offset(g, g.kernel_h - f.kh + i, g.kernel_w - f.kw + j);
        source.data[i * f.kw + j] =
            (f.ry + sh * (f.kh - 1 - i)) * s.kernel_w + f.rx + sw * (f.kw - 1 - j);
      }
    const int64_t rows = f.a1 - f.a0, cols = f.b1 - f.b0, per_image = rows * cols;
    const TileJob job{
        s.batch * per_image, taps, offsets.data, source.data, weight_taps, s.out_channels,
        s.in_channels,       bias, {},           grad_input,  in_plane};
    run_tiles(
        job,
        [&](int64_t p) {
          const int64_t n = p / per_image, r = p % per_image;
          const int64_t a = f.a0 + r / cols, b = f.b0 + r % cols;
          const int64_t ih = f.ry - s.pad_top + sh * a, iw = f.rx - s.pad_left + sw * b;
          return TilePixel{padded.at(g, n, a, b), n * s.in_channels * in_plane + ih * s.in_w + iw,
                           ~uint64_t(0)};
        },
        packed, pool);
  }
  return true;
}

}  // namespace

bool conv2d_indirect_input_grad(const Conv2dShape& s, const float* weight, const float* grad_output,
                                float* grad_input, ThreadPool* pool) {
  if (s.groups != 1 || s.in_channels < 16 || s.out_channels < 16) return false;
  if (s.stride_h != 1 || s.stride_w != 1) {
    if (!indirect_enabled() || s.in_h * s.in_w > 1024) return false;
    return input_grad_by_phases(s, weight, grad_output, grad_input, pool);
  }
  Conv2dShape t;
  if (!input_gradient_shape(s, t)) return false;
  // Winograd, where it serves, does a third of the multiplies (ResNet-18's 16x16 layers at
  // batch 32: 2.0 against 3.5 ms).
  if (!indirect_suitable(t) || winograd_suitable(t, false)) return false;
  thread_local AlignedBuffer input_buffer, weight_buffer;
  const int64_t taps = t.kernel_h * t.kernel_w;
  float* packed = weight_buffer.get(indirect_weights_floats(t));
  Offsets flipped(taps);
  for (int64_t i = 0; i < taps; ++i) flipped.data[i] = taps - 1 - i;
  pack_weights_transposed(t.in_channels, t.out_channels, taps, flipped.data, taps, weight, packed,
                          pool);
  run_convolution(t, pad_channels_last(t, grad_output, input_buffer, pool), packed, nullptr,
                  grad_input, pool, {});
  return true;
}

bool indirect_weight_grad_suitable(const Conv2dShape& s) {
  // The planes of indirect_suitable: on larger ones (a 2-core Zen 3, the seed network's 64x80
  // and 32x40 layers at batch 16) the im2col GEMM was 1.12-1.15x faster, and on a 3-channel
  // image's layer 1.9x. A chunk's pixels find their input values as 32-bit offsets from its
  // first row.
  if (!indirect_suitable(s)) return false;
  const int64_t plane = s.out_h * s.out_w;
  const int64_t image = padded_rows(s) * padded_cols(s) * s.in_channels;
  return plane > 0 && (kWeightGradChunk / plane + 2) * image < (int64_t(1) << 31);
}

void conv2d_indirect_weight_grad(const Conv2dShape& s, const float* input, const float* grad_output,
                                 float* grad_weight, ThreadPool* pool) {
  const int64_t channels = s.in_channels, taps = s.kernel_h * s.kernel_w, k = channels * taps;
  const int64_t plane = s.out_h * s.out_w, pixels = s.batch * plane;
  const Panels panels(s.out_channels);
  const int64_t ld = panels.ld;
  thread_local AlignedBuffer input_buffer, sums_buffer;
  const PaddedInput x = pad_channels_last(s, input, input_buffer, pool);
  // Tiles of 7 input channels of one tap x a panel of 48 output channels (6 x 64 where the
  // channels fill 64-wide panels). Each thread takes a run of them, ordered by panel, then
  // input channels, then tap (the tiles after one another read the same input), and goes
  // through the batch's pixels in chunks, each tile adding a chunk's sum to its part of the
  // sums: the chunk's output gradient for a panel (made channels-last here, 16 KiB for 64
  // channels) stays in L1 for all of a thread's tiles, and the threads need no barrier between
  // the chunks. Against each tile streaming the gradient of a block of images from L2, on a
  // 2-core Zen 3 at batch 32 (two threads, best of 12 calls): 64 channels at 16x16 4.36 -> 3.73
  // ms, 128 at 8x8 4.11 -> 4.02, 256 at 4x4 4.17 -> 3.22, 512 at 2x2 4.47 -> 3.50.
  const bool wide = ld % 64 == 0;
  const int64_t tile_channels = wide ? kWideChannels : kTilePixels;
  const int64_t panel_count = wide ? ld / 64 : panels.count;
  const int64_t channel_tiles = ceil_div(channels, tile_channels);
  const int64_t tasks = panel_count * channel_tiles * taps;
  Offsets offsets(taps);
  int64_t* offset = offsets.data;
  for (int64_t kh = 0; kh < s.kernel_h; ++kh)
    for (int64_t kw = 0; kw < s.kernel_w; ++kw) offset[kh * s.kernel_w + kw] = x.offset(s, kh, kw);
  float* sums = sums_buffer.get(k * ld);
  const int64_t chunk = kWeightGradChunk;
  parallel_for(pool, tasks, 1, [&](int64_t t0, int64_t t1) {
    // This thread's: the chunk's gradient of one panel, [channel / 16][pixel][16]; per tap, the
    // chunk's pixels that read inside the input through it (their input offsets from the chunk's
    // first row, then their indices in the chunk), and for which chunk they were made.
    thread_local AlignedBuffer g_buffer;
    thread_local std::vector<int32_t> lists;
    thread_local std::vector<int64_t> made, counts;
    float* g = g_buffer.get(chunk * 64);
    lists.resize(size_t(taps * 2 * chunk));
    made.assign(size_t(taps), -1);
    counts.resize(size_t(taps));
    for (int64_t p0 = 0, c = 0; p0 < pixels; p0 += chunk, ++c) {
      const int64_t p1 = std::min(pixels, p0 + chunk);
      const int64_t n0 = p0 / plane, oh0 = p0 % plane / s.out_w;
      const float* base = x.at(s, n0, oh0, 0);
      int64_t panel = -1, o0 = 0, width = 0;
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t q = task / (channel_tiles * taps), rest = task % (channel_tiles * taps);
        const int64_t tap = rest % taps, c0 = rest / taps * tile_channels;
        if (q != panel) {
          panel = q;
          o0 = wide ? q * 64 : panels.start(q);
          width = wide ? 64 : panels.width(q);
          // 16 x 16 blocks (channels x pixels) transposed in registers; channels past the
          // last are zeros.
          alignas(64) float block[16][16];
          for (int64_t i0 = 0; i0 < p1 - p0; i0 += 16) {
            const int64_t count = std::min<int64_t>(16, p1 - p0 - i0);
            const int64_t n = (p0 + i0) / plane, r = (p0 + i0) % plane;
            for (int64_t j0 = 0; j0 < width; j0 += 16) {
              for (int64_t j = 0; j < 16; ++j) {
                const int64_t o = o0 + j0 + j;
                if (o >= s.out_channels) {
                  v_store(block[j], v_zero());
                } else if (r + count <= plane) {
                  v_store(block[j], v_loadz(below16(count),
                                            grad_output + (n * s.out_channels + o) * plane + r));
                } else {
                  for (int64_t i = 0; i < count; ++i) {
                    const int64_t p = p0 + i0 + i;
                    block[j][i] = grad_output[(p / plane * s.out_channels + o) * plane + p % plane];
                  }
                }
              }
              store_columns(block, count, below16(16),
                            [&](int64_t i) { return g + j0 * chunk + (i0 + i) * 16; });
            }
          }
        }
        if (made[size_t(tap)] != c) {
          made[size_t(tap)] = c;
          const int64_t kh = tap / s.kernel_w, kw = tap % s.kernel_w;
          const Range rows = inside(s.out_h, s.in_h, s.stride_h, s.pad_top, kh * s.dilation_h);
          const Range cols = inside(s.out_w, s.in_w, s.stride_w, s.pad_left, kw * s.dilation_w);
          int32_t* at = lists.data() + tap * 2 * chunk;
          int32_t* index = at + chunk;
          int64_t m = 0;
          for (int64_t p = p0; p < p1;) {
            const int64_t n = p / plane, r = p % plane, oh = r / s.out_w, ow0 = r % s.out_w;
            const int64_t ow1 = std::min(s.out_w, ow0 + (p1 - p));
            if (oh >= rows.lo && oh < rows.hi) {
              const int64_t row = ((n - n0) * x.rows + (oh - oh0) * s.stride_h) * x.cols;
              for (int64_t ow = std::max(ow0, cols.lo); ow < std::min(ow1, cols.hi); ++ow) {
                at[m] = int32_t((row + ow * s.stride_w) * channels);
                index[m++] = int32_t(p - p0 + ow - ow0);
              }
            }
            p += ow1 - ow0;
          }
          counts[size_t(tap)] = m;
        }
        const int64_t mr = std::min(tile_channels, channels - c0);
        const WeightTile run = wide ? kWideWeightTiles[size_t(mr - 1)]
                                    : kWeightTiles[size_t(mr - 1)][size_t(width / 16 - 1)];
        const int32_t* at = lists.data() + tap * 2 * chunk;
        run(base + offset[tap] + c0, at, at + chunk, counts[size_t(tap)], g, 16 * chunk,
            sums + (c0 * taps + tap) * ld + o0, taps * ld, c > 0);
      }
    }
  });
  // The sums ([in][tap][out], k rows of ld) into grad_weight ([out][in][tap]): 16 x 16 blocks
  // transposed in registers, every cache line read and written whole.
  const int64_t k_blocks = ceil_div(k, 16), out_blocks = ld / 16;
  parallel_for(pool, k_blocks * out_blocks, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t task = b0; task < b1; ++task) {
      const int64_t i0 = task / out_blocks * 16, o0 = task % out_blocks * 16;
      const int64_t depth = std::min<int64_t>(16, k - i0);
      V16 block[16];
      for (int64_t i = 0; i < 16; ++i)
        block[i] = i < depth ? v_load(sums + (i0 + i) * ld + o0) : v_zero();
      v_transpose16(block);
      const Mask16 lanes = below16(depth);
      for (int64_t r = 0; r < std::min<int64_t>(16, s.out_channels - o0); ++r)
        v_storem(grad_weight + (o0 + r) * k + i0, lanes, block[r]);
    }
  });
}
#endif

}  // namespace nnx::cpu
