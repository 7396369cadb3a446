// The fused inverted-residual block (see inverted_residual.h).
#include "kernels/cpu/inverted_residual.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rows.h"
#include "nnx/thread_pool.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nnx::cpu {
namespace {

constexpr int64_t kWidth = 32;  // pixels per panel of the GEMMs' right-hand side

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Columns [0, count) of rows [0, k) of a row-major matrix (row stride ld) as panels of kWidth
// columns, k-major ([k][32] each, 64-byte aligned when `out` is), zero past `count`.
void pack_columns(const float* src, int64_t ld, int64_t k, int64_t count, float* out) {
  for (int64_t j = 0; j < count; j += kWidth) {
    const int64_t cols = std::min(kWidth, count - j);
    float* panel = out + j * k;
    for (int64_t r = 0; r < k; ++r) {
      const float* from = src + r * ld + j;
      float* to = panel + r * kWidth;
#if defined(__AVX512F__)
      _mm512_store_ps(to, _mm512_maskz_loadu_ps(lanes_below(cols), from));
      _mm512_store_ps(to + 16, _mm512_maskz_loadu_ps(lanes_below(cols - 16), from + 16));
#else
      std::copy(from, from + cols, to);
      std::fill(to + cols, to + kWidth, 0.f);
#endif
    }
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

// The projection's epilogue as the GEMM's clamp where it is one (none, ReLU, ReLU6), else none
// (applied after the store).
struct Clamp {
  float lo = -INFINITY, hi = INFINITY;
  bool exact = true;
};
Clamp clamp_of(const Epilogue& e) {
  if (e.residual != nullptr) return {-INFINITY, INFINITY, false};
  if (!e.active) return {};
  if (e.kind == Activation::relu) return {0.f, INFINITY, true};
  if (e.kind == Activation::hardtanh) return {e.args.lo, e.args.hi, true};
  return {-INFINITY, INFINITY, false};
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
  const bool expand = b.expand_panels != nullptr;
  thread_local AlignedBuffer ex_buffer, in_buffer, dw_buffer, packed_buffer;
  const int64_t ex_stride = cap * W;
  float* ex = expand ? ex_buffer.get(E * ex_stride) : nullptr;
  float* packed_in =
      expand ? in_buffer.get(b.in_channels * ceil_div(cap * W, kWidth) * kWidth) : nullptr;
  float* dw = dw_buffer.get(E * band * OW);
  float* packed_dw = packed_buffer.get(E * ceil_div(band * OW, kWidth) * kWidth);
  const Clamp clamp = clamp_of(b.project_epilogue);
  int64_t h0 = 0, h1 = 0;  // the expanded rows [h0, h1) held in ex, from its row 0
  for (int64_t o0 = o_begin; o0 < o_end; o0 += band) {
    const int64_t o1 = std::min(o0 + band, o_end);
    // The input rows the band's windows cover (the rest of each window is padding).
    const int64_t i0 = std::clamp<int64_t>(o0 * d.stride_h - d.pad_top, 0, H);
    const int64_t i1 = std::clamp<int64_t>((o1 - 1) * d.stride_h - d.pad_top + reach, i0, H);
    const float* planes = x + i0 * W;  // channel e's row i0 at planes + e * plane_stride
    int64_t plane_stride = HW;
    if (expand) {
      int64_t from = i0;  // the first row to compute
      if (h0 <= i0 && i0 < h1) {
        if (i0 > h0)
          for (int64_t e = 0; e < E; ++e)
            std::memmove(ex + e * ex_stride, ex + e * ex_stride + (i0 - h0) * W,
                         size_t((h1 - i0) * W) * sizeof(float));
        from = std::min(h1, i1);
      }
      if (i1 > from) {
        const int64_t count = (i1 - from) * W;
        pack_columns(x + from * W, HW, b.in_channels, count, packed_in);
        multiply(b.expand_panels, E, b.in_channels, 0, ceil_div(E, kPanelRows), packed_in, count,
                 b.expand_bias, b.expand_lo, b.expand_hi, ex + (from - i0) * W, ex_stride);
      }
      h0 = i0;
      h1 = i1;
      planes = ex;
      plane_stride = ex_stride;
    }
    // The band as a convolution of its own: its input the rows [i0, i1), its padding shifted.
    Conv2dShape s = d;
    s.in_h = i1 - i0;
    s.out_h = o1 - o0;
    s.pad_top = d.pad_top + i0 - o0 * d.stride_h;
    const int64_t count = (o1 - o0) * OW;
    depthwise_planes(s, E, planes, plane_stride, b.depthwise_weight, b.depthwise_bias, dw, count,
                     b.depthwise_lo, b.depthwise_hi);
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
  const bool expand = b.expand_panels != nullptr;
  thread_local AlignedBuffer shared;
  float* packed_dw = shared.get(E * ceil_div(OHW, kWidth) * kWidth);
  Conv2dShape s = d;
  s.batch = 1;
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
    depthwise_planes(s, e1 - e0, planes, HW, b.depthwise_weight + e0 * taps,
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
  const Clamp clamp = clamp_of(b.project_epilogue);
  parallel_for(pool, ceil_div(b.out_channels, kPanelRows), 1, [&](int64_t q0, int64_t q1) {
    float* out = y + q0 * kPanelRows * OHW;
    multiply(b.project_panels, b.out_channels, E, q0, q1, packed_dw, OHW, b.project_bias, clamp.lo,
             clamp.hi, out, OHW);
    if (!clamp.exact)
      for (int64_t r = q0 * kPanelRows; r < std::min(b.out_channels, q1 * kPanelRows); ++r)
        apply_epilogue(b.project_epilogue, y + r * OHW, OHW);
  });
}

int64_t env_or(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoll(v) : fallback;
}

}  // namespace

void inverted_residual(const InvertedResidual& b, const float* input, float* output,
                       ThreadPool* pool) {
  const Conv2dShape& d = b.depthwise;
  const int64_t threads = pool != nullptr ? pool->size() : 1;
  const int64_t in_image = b.in_channels * b.in_h * b.in_w;
  const int64_t out_image = b.out_channels * d.out_h * d.out_w;
  static const int64_t small = env_or("NNX_IR_SMALL", 256);
  static const int64_t target = env_or("NNX_IR_KB", 256) * 1024;
  // Bands whose expanded rows take about `target` bytes (L2 holds them with the rest).
  const int64_t row_bytes = d.in_channels * d.in_w * int64_t(sizeof(float));
  const int64_t reach = (d.kernel_h - 1) * d.dilation_h + 1;
  const int64_t rows = std::max<int64_t>(target / row_bytes, reach);
  int64_t band = std::clamp<int64_t>((rows - reach) / d.stride_h + 1, 1, d.out_h);
  // Whole blocks of the depthwise kernel's 4 rows (2 for larger kernels) where that is possible.
  const int64_t step = d.kernel_h <= 3 ? 4 : 2;
  if (band > step) band = band / step * step;
  for (int64_t n = 0; n < b.batch; ++n) {
    const float* x = input + n * in_image;
    float* y = output + n * out_image;
    if (threads > 1 && d.out_h * d.out_w <= small) {
      channels_pass(b, x, y, pool);
      continue;
    }
    parallel_for(pool, d.out_h, 1, [&](int64_t o0, int64_t o1) {
      rows_pass(b, x, y, o0, o1, std::min(band, o1 - o0));
    });
  }
}

}  // namespace nnx::cpu
