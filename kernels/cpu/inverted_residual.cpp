// The fused inverted-residual block (see inverted_residual.h).
#include "kernels/cpu/inverted_residual.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/batch_split.h"
#include "kernels/cpu/channels_last.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/int_math.h"
#include "kernels/cpu/rows.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {
namespace {

constexpr int64_t kWidth = 32;  // pixels per panel of the GEMMs' right-hand side
static_assert(kWidth == 32, "pack_columns fills panels with panel_row32");

// Columns [0, count) of rows [0, k) of a row-major matrix (row stride ld) as panels of kWidth
// columns, k-major ([k][32] each, 64-byte aligned when `out` is), zero past `count`.
void pack_columns(const float* src, int64_t ld, int64_t k, int64_t count, float* out) {
  for (int64_t j = 0; j < count; j += kWidth) {
    const int64_t cols = std::min(kWidth, count - j);
    float* panel = out + j * k;
    for (int64_t r = 0; r < k; ++r) panel_row32(src + r * ld + j, cols, panel + r * kWidth);
  }
}

// Rows of weight panels [q0, q1) (of an m x k matrix in 12-row panels) times `count` packed
// columns, plus bias, clamped to [lo, hi]: panel q's rows go to c + (q - q0) * 12 * ldc.
void multiply(const float* panels, int64_t m, int64_t k, int64_t q0, int64_t q1,
              const float* packed, int64_t count, const float* bias, float lo, float hi, float* c,
              int64_t ldc) {
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t rows = std::min(kPanelRows, m - q * kPanelRows);
    const float* a = panels + q * kPanelRows * k;
    float* out = c + (q - q0) * kPanelRows * ldc;
    for (int64_t j = 0; j < count; j += kWidth)
      panel_gemm_bias_clamp(rows, std::min(kWidth, count - j), k, a, packed + j * k, kWidth,
                            out + j, ldc, false, bias != nullptr ? bias + q * kPanelRows : nullptr,
                            lo, hi);
  }
}

// One band of output rows [o0, o1): the input rows [i0, i1) its windows cover (the rest of each
// window is padding), of which the expanded rows [i0, from) were computed for the band before
// and are kept (moved up by `shift` rows, when that is not 0) and [from, i1) are to be
// computed; and the band as a depthwise convolution of its own, its input those rows and its
// padding shifted. `h0`, `h1` (the rows held) move on to the band's.
struct Band {
  int64_t i0, i1, from, shift;
  Conv2dShape shape;
};
Band band_of(const Conv2dShape& d, int64_t o0, int64_t o1, int64_t& h0, int64_t& h1) {
  const int64_t reach = (d.kernel_h - 1) * d.dilation_h + 1;
  Band b;
  b.i0 = std::clamp<int64_t>(o0 * d.stride_h - d.pad_top, 0, d.in_h);
  b.i1 = std::clamp<int64_t>((o1 - 1) * d.stride_h - d.pad_top + reach, b.i0, d.in_h);
  b.from = b.i0;
  b.shift = 0;
  if (h0 <= b.i0 && b.i0 < h1) {
    b.shift = b.i0 - h0;
    b.from = std::min(h1, b.i1);
  }
  h0 = b.i0;
  h1 = b.i1;
  b.shape = d;
  b.shape.in_h = b.i1 - b.i0;
  b.shape.out_h = o1 - o0;
  b.shape.pad_top = d.pad_top + b.i0 - o0 * d.stride_h;
  return b;
}

// Output rows [o_begin, o_end) of one image, in bands of `band` rows: each band's expanded rows
// (those of the last band that it reads again kept, not recomputed), its depthwise rows and its
// projection, all in this thread's scratch.
void rows_pass(const InvertedResidual& b, const float* x, float* y, int64_t o_begin, int64_t o_end,
               int64_t band) {
  const Conv2dShape& d = b.depthwise;
  const int64_t E = d.in_channels, H = d.in_h, W = d.in_w, OW = d.out_w;
  const int64_t HW = H * W, OHW = d.out_h * OW;
  const int64_t reach = (d.kernel_h - 1) * d.dilation_h + 1;
  const int64_t cap = (band - 1) * d.stride_h + reach;  // input rows a band reads at most
  const bool expand = b.expands;
  thread_local AlignedBuffer ex_buffer, in_buffer, dw_buffer, packed_buffer;
  const int64_t ex_stride = cap * W;
  float* ex = expand ? ex_buffer.get(E * ex_stride) : nullptr;
  float* packed_in =
      expand ? in_buffer.get(b.in_channels * ceil_div(cap * W, kWidth) * kWidth) : nullptr;
  float* dw = dw_buffer.get(E * band * OW);
  float* packed_dw = packed_buffer.get(E * ceil_div(band * OW, kWidth) * kWidth);
  const ClampEpilogue clamp = clamp_of(b.project_epilogue);
  int64_t h0 = 0, h1 = 0;  // the expanded rows [h0, h1) held in ex, from its row 0
  for (int64_t o0 = o_begin; o0 < o_end; o0 += band) {
    const int64_t o1 = std::min(o0 + band, o_end);
    const Band in = band_of(d, o0, o1, h0, h1);
    const float* planes = x + in.i0 * W;  // channel e's row i0 at planes + e * plane_stride
    int64_t plane_stride = HW;
    if (expand) {
      if (in.shift > 0)
        for (int64_t e = 0; e < E; ++e)
          std::memmove(ex + e * ex_stride, ex + e * ex_stride + in.shift * W,
                       size_t((in.from - in.i0) * W) * sizeof(float));
      if (in.i1 > in.from) {
        const int64_t count = (in.i1 - in.from) * W;
        pack_columns(x + in.from * W, HW, b.in_channels, count, packed_in);
        multiply(b.expand_panels, E, b.in_channels, 0, ceil_div(E, kPanelRows), packed_in, count,
                 b.expand_bias, b.expand_lo, b.expand_hi, ex + (in.from - in.i0) * W, ex_stride);
      }
      planes = ex;
      plane_stride = ex_stride;
    }
    const int64_t count = (o1 - o0) * OW;
    depthwise_planes(in.shape, E, planes, plane_stride, b.depthwise_weight, b.depthwise_bias, dw,
                     count, b.depthwise_lo, b.depthwise_hi);
    pack_columns(dw, count, E, count, packed_dw);
    multiply(b.project_panels, b.out_channels, E, 0, ceil_div(b.out_channels, kPanelRows),
             packed_dw, count, b.project_bias, clamp.lo, clamp.hi, y + o0 * OW, OHW);
    if (!clamp.exact)
      for (int64_t r = 0; r < b.out_channels; ++r)
        apply_epilogue(b.project_epilogue, y + r * OHW + o0 * OW, count);
  }
}

// Small planes: the threads split the expanded channels (each expands and filters its share of
// them over the whole plane, into the projection's packed input), then the projection's output
// channels. Two passes over the threads instead of three, and no halo rows computed twice.
void channels_pass(const InvertedResidual& b, const float* x, float* y, ThreadPool* pool) {
  const Conv2dShape& d = b.depthwise;
  const int64_t E = d.in_channels, HW = d.in_h * d.in_w, OHW = d.out_h * d.out_w;
  const int64_t taps = d.kernel_h * d.kernel_w;
  const bool expand = b.expands;
  thread_local AlignedBuffer shared;
  float* packed_dw = shared.get(E * ceil_div(OHW, kWidth) * kWidth);
  parallel_for(pool, ceil_div(E, kPanelRows), 1, [&](int64_t q0, int64_t q1) {
    const int64_t e0 = q0 * kPanelRows, e1 = std::min(E, q1 * kPanelRows);
    thread_local AlignedBuffer in_buffer, ex_buffer, plane_buffer;
    const float* planes = x + e0 * HW;
    if (expand) {
      float* packed_in = in_buffer.get(b.in_channels * ceil_div(HW, kWidth) * kWidth);
      float* ex = ex_buffer.get((e1 - e0) * HW);
      pack_columns(x, HW, b.in_channels, HW, packed_in);
      multiply(b.expand_panels, E, b.in_channels, q0, q1, packed_in, HW, b.expand_bias, b.expand_lo,
               b.expand_hi, ex, HW);
      planes = ex;
    }
    float* filtered = plane_buffer.get((e1 - e0) * OHW);
    depthwise_planes(d, e1 - e0, planes, HW, b.depthwise_weight + e0 * taps,
                     b.depthwise_bias != nullptr ? b.depthwise_bias + e0 : nullptr, filtered, OHW,
                     b.depthwise_lo, b.depthwise_hi);
    for (int64_t e = e0; e < e1; ++e) {
      const float* plane = filtered + (e - e0) * OHW;
      for (int64_t j = 0; j < OHW; j += kWidth) {
        const int64_t cols = std::min(kWidth, OHW - j);
        float* to = packed_dw + j * E + e * kWidth;
        std::copy(plane + j, plane + j + cols, to);
        std::fill(to + cols, to + kWidth, 0.f);
      }
    }
  });
  const ClampEpilogue clamp = clamp_of(b.project_epilogue);
  parallel_for(pool, ceil_div(b.out_channels, kPanelRows), 1, [&](int64_t q0, int64_t q1) {
    float* out = y + q0 * kPanelRows * OHW;
    multiply(b.project_panels, b.out_channels, E, q0, q1, packed_dw, OHW, b.project_bias, clamp.lo,
             clamp.hi, out, OHW);
    if (!clamp.exact)
      for (int64_t r = q0 * kPanelRows; r < std::min(b.out_channels, q1 * kPanelRows); ++r)
        apply_epilogue(b.project_epilogue, y + r * OHW, OHW);
  });
}

#if defined(NNX_CL_GEMM)
// Channels-last blocks: a pixel's channels are contiguous, so a vector holds 16 channels of one
// pixel (AVX2: 8, a 16-channel group in two); the 1x1 convolutions become GEMMs whose tiles are
// 7 pixels by 48 channels (AVX2: 6 by 16; no lanes idle on 7x7 and 14x14 planes, which the
// 32-pixel panels fill to 77% and 94%), and the depthwise convolution reads whole aligned vectors
// with no padded copy.

// Channel groups [g0, g1) of the depthwise convolution `d` on channels-last planes: input
// [in_h * in_w][ld], weights [tap][ld], output [out_h * out_w][ld]. KxK undilated kernels at
// stride S (K > 0) keep their weights in registers and read the pixels whose window lies inside
// the plane without a test per tap; K = 0 is any other kernel.
template <int K, int S>
void cl_depthwise(const Conv2dShape& d, const float* in, int64_t ld, const float* weight,
                  const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* out) {
  using vec::V;
  const V l = vec::splat(lo), h = vec::splat(hi);
  const int64_t kh_n = K > 0 ? K : d.kernel_h, kw_n = K > 0 ? K : d.kernel_w;
  const int64_t sh = K > 0 ? S : d.stride_h, sw = K > 0 ? S : d.stride_w;
  const int64_t dh = K > 0 ? 1 : d.dilation_h, dw = K > 0 ? 1 : d.dilation_w;
  for (int64_t c = g0 * 16; c < g1 * 16; c += vec::kWidth) {
    const V b = vec::load(bias + c);
    V wk[K > 0 ? K * K : 1];
    if constexpr (K > 0)
      for (int t = 0; t < K * K; ++t) wk[t] = vec::load(weight + t * ld + c);
    for (int64_t oy = 0; oy < d.out_h; ++oy) {
      const int64_t iy0 = oy * sh - d.pad_top;
      for (int64_t ox = 0; ox < d.out_w; ++ox) {
        const int64_t ix0 = ox * sw - d.pad_left;
        V acc = b;
        if (K > 0 && iy0 >= 0 && iy0 + K <= d.in_h && ix0 >= 0 && ix0 + K <= d.in_w) {
          const float* at = in + (iy0 * d.in_w + ix0) * ld + c;
          if constexpr (K > 0)
            static_for<K * K>([&]<int T>() __attribute__((always_inline)) {
              acc = vec::fmadd(wk[T], vec::load(at + ((T / K) * d.in_w + T % K) * ld), acc);
            });
        } else {
          for (int64_t kh = 0; kh < kh_n; ++kh) {
            const int64_t iy = iy0 + kh * dh;
            if (iy < 0 || iy >= d.in_h) continue;
            for (int64_t kw = 0; kw < kw_n; ++kw) {
              const int64_t ix = ix0 + kw * dw;
              if (ix < 0 || ix >= d.in_w) continue;
              acc = vec::fmadd(vec::load(weight + (kh * kw_n + kw) * ld + c),
                               vec::load(in + (iy * d.in_w + ix) * ld + c), acc);
            }
          }
        }
        vec::store(out + (oy * d.out_w + ox) * ld + c, vec::min(h, vec::max(l, acc)));
      }
    }
  }
}

void cl_depthwise_any(const Conv2dShape& d, const float* in, int64_t ld, const float* weight,
                      const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* out) {
  const bool plain = d.kernel_h == d.kernel_w && d.stride_h == d.stride_w && d.dilation_h == 1 &&
                     d.dilation_w == 1;
  if (plain && d.kernel_h == 3 && d.stride_h == 1)
    return cl_depthwise<3, 1>(d, in, ld, weight, bias, lo, hi, g0, g1, out);
  if (plain && d.kernel_h == 3 && d.stride_h == 2)
    return cl_depthwise<3, 2>(d, in, ld, weight, bias, lo, hi, g0, g1, out);
  if (plain && d.kernel_h == 5 && d.stride_h == 1)
    return cl_depthwise<5, 1>(d, in, ld, weight, bias, lo, hi, g0, g1, out);
  if (plain && d.kernel_h == 5 && d.stride_h == 2)
    return cl_depthwise<5, 2>(d, in, ld, weight, bias, lo, hi, g0, g1, out);
  cl_depthwise<0, 1>(d, in, ld, weight, bias, lo, hi, g0, g1, out);
}

// The small-plane pass channels-last (b.channels_last given, an expansion present).
void channels_last_pass(const InvertedResidual& b, const float* x, float* y, ThreadPool* pool) {
  const ChannelsLastWeights& w = *b.channels_last;
  const Conv2dShape& d = b.depthwise;
  const int64_t E = d.in_channels, HW = d.in_h * d.in_w, OHW = d.out_h * d.out_w;
  const int64_t ld = w.hidden_pad, ldo = w.out_pad;
  thread_local AlignedBuffer ex_buffer, dw_buffer;
  float* ex = ex_buffer.get(HW * ld);
  float* dw = dw_buffer.get(OHW * ld);
  parallel_for(pool, ld / 16, 1, [&](int64_t g0, int64_t g1) {
    cl_gemm(HW, b.in_channels, x, 1, HW, w.expand.data(), ld, w.expand_bias.data(), b.expand_lo,
            b.expand_hi, g0, g1, ex, ld);
    cl_depthwise_any(d, ex, ld, w.depthwise.data(), w.depthwise_bias.data(), b.depthwise_lo,
                     b.depthwise_hi, g0, g1, dw);
  });
  const ClampEpilogue clamp = clamp_of(b.project_epilogue);
  parallel_for(pool, ldo / 16, 1, [&](int64_t g0, int64_t g1) {
    // Stored channels-first, then what the clamp did not apply.
    cl_gemm(OHW, E, dw, ld, 1, w.project.data(), ldo, w.project_bias.data(), clamp.lo, clamp.hi, g0,
            g1, y, OHW, true, b.out_channels);
    if (!clamp.exact)
      for (int64_t c = g0 * 16; c < std::min(b.out_channels, g1 * 16); ++c)
        apply_epilogue(b.project_epilogue, y + c * OHW, OHW);
  });
}

// Output rows [o_begin, o_end) of one image channels-last, in bands of `band` rows as rows_pass
// makes them (the expanded rows a band reads again kept), each band's projection turned back to
// channels-first rows of the output.
void channels_last_rows(const InvertedResidual& b, const float* x, float* y, int64_t o_begin,
                        int64_t o_end, int64_t band) {
  const ChannelsLastWeights& w = *b.channels_last;
  const Conv2dShape& d = b.depthwise;
  const int64_t E = d.in_channels, H = d.in_h, W = d.in_w, OW = d.out_w;
  const int64_t HW = H * W, OHW = d.out_h * OW, ld = w.hidden_pad, ldo = w.out_pad;
  const int64_t reach = (d.kernel_h - 1) * d.dilation_h + 1;
  const int64_t cap = (band - 1) * d.stride_h + reach;
  thread_local AlignedBuffer ex_buffer, dw_buffer;
  float* ex = ex_buffer.get(cap * W * ld);
  float* dw = dw_buffer.get(band * OW * ld);
  const ClampEpilogue clamp = clamp_of(b.project_epilogue);
  int64_t h0 = 0, h1 = 0;  // the expanded rows [h0, h1) held in ex, from its row 0
  for (int64_t o0 = o_begin; o0 < o_end; o0 += band) {
    const int64_t o1 = std::min(o0 + band, o_end);
    const Band in = band_of(d, o0, o1, h0, h1);
    if (in.shift > 0)
      std::memmove(ex, ex + in.shift * W * ld, size_t((in.from - in.i0) * W * ld) * sizeof(float));
    if (in.i1 > in.from)
      cl_gemm((in.i1 - in.from) * W, b.in_channels, x + in.from * W, 1, HW, w.expand.data(), ld,
              w.expand_bias.data(), b.expand_lo, b.expand_hi, 0, ld / 16,
              ex + (in.from - in.i0) * W * ld, ld);
    cl_depthwise_any(in.shape, ex, ld, w.depthwise.data(), w.depthwise_bias.data(), b.depthwise_lo,
                     b.depthwise_hi, 0, ld / 16, dw);
    const int64_t count = (o1 - o0) * OW;
    cl_gemm(count, E, dw, ld, 1, w.project.data(), ldo, w.project_bias.data(), clamp.lo, clamp.hi,
            0, ldo / 16, y + o0 * OW, OHW, true, b.out_channels);
    if (!clamp.exact)
      for (int64_t c = 0; c < b.out_channels; ++c)
        apply_epilogue(b.project_epilogue, y + c * OHW + o0 * OW, count);
  }
}
#endif

}  // namespace

void inverted_residual(const InvertedResidual& b, const float* input, float* output,
                       ThreadPool* pool) {
  const Conv2dShape& d = b.depthwise;
  const int64_t threads = pool != nullptr ? pool->size() : 1;
  const int64_t in_image = b.in_channels * b.in_h * b.in_w;
  const int64_t out_image = b.out_channels * d.out_h * d.out_w;
  // Planes of at most this many output pixels split over channels rather than rows (on two
  // threads a 14x14 plane's rows would be 7 each, a fifth of them computed twice for the halo).
  constexpr int64_t small = 256;
  // Bands whose expanded rows take about this many bytes (L2 holds them with the rest).
  constexpr int64_t target = 256 * 1024;
  const int64_t row_bytes = d.in_channels * d.in_w * int64_t(sizeof(float));
  const int64_t reach = (d.kernel_h - 1) * d.dilation_h + 1;
  const int64_t rows = std::max<int64_t>(target / row_bytes, reach);
  int64_t band = std::clamp<int64_t>((rows - reach) / d.stride_h + 1, 1, d.out_h);
  // Whole blocks of the depthwise kernel's 4 rows (2 for larger kernels) where that is possible.
  const int64_t step = d.kernel_h <= 3 ? 4 : 2;
  if (band > step) band = band / step * step;
#if defined(NNX_CL_GEMM)
  int64_t cl_band = 1;
  if (b.channels_last != nullptr) {
    const int64_t cl_rows = std::max<int64_t>(
        target / (b.channels_last->hidden_pad * d.in_w * int64_t(sizeof(float))), reach);
    cl_band = std::clamp<int64_t>((cl_rows - reach) / d.stride_h + 1, 1, d.out_h);
  }
#endif
  const bool small_plane = d.out_h * d.out_w <= small;
  // Small planes with at least an image per thread: each thread runs the whole block on its own
  // images (no meeting between the passes of every image, its image's expanded planes in its
  // own L2), the images left over split over the threads as below.
  for_each_image(pool, b.batch, small_plane, [&](int64_t n, ThreadPool* p) {
    const float* x = input + n * in_image;
    float* y = output + n * out_image;
    const bool alone = p == nullptr && threads > 1;  // this thread's own image
#if defined(NNX_CL_GEMM)
    if (b.channels_last != nullptr && b.expands) {
      if (alone || (threads > 1 && small_plane)) return channels_last_pass(b, x, y, p);
      return parallel_for(p, d.out_h, 1, [&](int64_t o0, int64_t o1) {
        channels_last_rows(b, x, y, o0, o1, std::min(cl_band, o1 - o0));
      });
    }
#endif
    if (alone || (threads > 1 && small_plane)) return channels_pass(b, x, y, p);
    parallel_for(p, d.out_h, 1, [&](int64_t o0, int64_t o1) {
      rows_pass(b, x, y, o0, o1, std::min(band, o1 - o0));
    });
  });
}

bool channels_last_available() {
#if defined(NNX_CL_GEMM)
  return true;
#else
  return false;
#endif
}

void prepare_channels_last(int64_t in_channels, int64_t hidden, int64_t out_channels, int64_t taps,
                           const float* expand_weight, const float* expand_bias,
                           const float* depthwise_weight, const float* depthwise_bias,
                           const float* project_weight, const float* project_bias,
                           ChannelsLastWeights& into) {
  const int64_t hp = (hidden + 15) / 16 * 16, op = (out_channels + 15) / 16 * 16;
  into.hidden_pad = hp;
  into.out_pad = op;
  // A weight [out][in] as [in][out rounded up], and a bias rounded up, zero-padded.
  auto transpose = [](const float* from, int64_t out, int64_t in, int64_t out_pad,
                      AlignedVector<float>& to) {
    to.assign(size_t(in * out_pad), 0.f);
    if (from == nullptr) return;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) to[size_t(i * out_pad + o)] = from[o * in + i];
  };
  auto padded = [](const float* from, int64_t n, int64_t pad, AlignedVector<float>& to) {
    to.assign(size_t(pad), 0.f);
    if (from != nullptr) std::copy(from, from + n, to.begin());
  };
  into.expand.assign(size_t(in_channels * hp), 0.f);
  if (expand_weight != nullptr)
    pack_cl_panels(expand_weight, hidden, in_channels, into.expand.data());
  padded(expand_bias, hidden, hp, into.expand_bias);
  transpose(depthwise_weight, hidden, taps, hp, into.depthwise);
  padded(depthwise_bias, hidden, hp, into.depthwise_bias);
  into.project.assign(size_t(hidden * op), 0.f);
  pack_cl_panels(project_weight, out_channels, hidden, into.project.data());
  padded(project_bias, out_channels, op, into.project_bias);
}

}  // namespace nnx::cpu
