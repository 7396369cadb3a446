// CPU 2-D convolution (see conv2d.h). The general path lowers one group of one image, a band of
// output rows at a time, to a GEMM: weights [ocg x k] times im2col columns [k x band]. With
// enough bands each is one task of the thread pool; otherwise the threads share each band. Either
// way every GEMM call is single-threaded (kernels/cpu/gemm.h).
// Backward: the weight gradient is grad_output [ocg x band] times the band's columns transposed,
// summed over images (one partial per thread); the input gradient is a convolution of
// grad_output with the flipped kernels when the stride is 1, else W^T * grad_output then col2im.
#include "kernels/cpu/conv2d.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/batch_split.h"
#include "kernels/cpu/channels_last.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/env_switch.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/indirect_conv.h"
#include "kernels/cpu/int_math.h"
#include "kernels/cpu/pointwise_conv.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/prepared.h"
#include "kernels/cpu/rows.h"
#include "kernels/cpu/stem_conv.h"
#include "kernels/cpu/sums.h"
#include "kernels/cpu/winograd.h"
#include "kernels/cpu/winograd_grad.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

namespace {

// A band of im2col columns holds about this many floats (1 MiB, the L2 of one core)...
constexpr int64_t kColumnTileFloats = 256 * 1024;
// ...but at least this many columns, or packing the weights for each band would dominate.
constexpr int64_t kMinBandColumns = 256;
// Blocks that threads sharing one band's GEMM split it into: rows are output channels.
constexpr int64_t kGemmRowBlock = 16;
constexpr int64_t kGemmColumnBlock = 64;
// With an epilogue, a GEMM writes at most about this many outputs (256 KiB) before the epilogue
// reads them back, so that they are still in L2; never fewer columns than kMinBandColumns.
constexpr int64_t kEpilogueBlockFloats = 64 * 1024;
// Depthwise-like convolutions (one input channel per group) with at most this many outputs
// per group run the direct loop: as a GEMM they would have 1..4 rows and waste the kernel.
constexpr int64_t kDirectMaxMultiplier = 4;

// Grows but never shrinks, so steady-state inference allocates nothing here.
float* column_scratch(int64_t floats) {
  thread_local std::vector<float> columns;
  if (int64_t(columns.size()) < floats) columns = std::vector<float>(size_t(floats));
  return columns.data();
}

// Output columns [lo, hi) whose input column ow * stride + offset falls inside [0, width).
struct Span {
  int64_t lo, hi;
};
Span valid_columns(int64_t offset, int64_t stride, int64_t width, int64_t out_w) {
  int64_t lo = offset >= 0 ? 0 : ceil_div(-offset, stride);
  int64_t hi = offset > width - 1 ? 0 : (width - 1 - offset) / stride + 1;
  lo = std::min(lo, out_w);
  hi = std::clamp(hi, lo, out_w);
  return {lo, hi};
}

// dst[i] = src[2 * i] for i < n, reading nothing past src[2 * (n - 1)].
inline void gather_even(const float* src, int64_t n, float* dst) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 9 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     even_of(_mm256_loadu_ps(src + 2 * i), _mm256_loadu_ps(src + 2 * i + 8)));
#endif
  for (; i < n; ++i) dst[i] = src[2 * i];
}

// Columns of output rows [oh0, oh1) of one group: row (ic, kh, kw) of `columns` holds, for every
// output pixel of the band, the input value under that kernel tap (0 in the padding). Writes
// the rows of input channels [ic0, ic1) only.
void im2col_band(const Conv2dShape& s, const float* group_input, int64_t oh0, int64_t oh1,
                 int64_t ic0, int64_t ic1, float* columns) {
  const int64_t band = (oh1 - oh0) * s.out_w;
  float* dst = columns + ic0 * s.kernel_h * s.kernel_w * band;
  for (int64_t ic = ic0; ic < ic1; ++ic) {
    const float* plane = group_input + ic * s.in_h * s.in_w;
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < s.kernel_w; ++kw, dst += band) {
        const int64_t offset = kw * s.dilation_w - s.pad_left;
#if defined(__AVX512F__) || defined(__AVX2__)
        const bool vector_rows = s.stride_w <= 2;  // gather_row: no span needed
#else
        const bool vector_rows = false;
#endif
        const Span span =
            vector_rows ? Span{0, 0} : valid_columns(offset, s.stride_w, s.in_w, s.out_w);
        float* out = dst;
        for (int64_t oh = oh0; oh < oh1; ++oh, out += s.out_w) {
          const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
          if (ih < 0 || ih >= s.in_h) {
#if defined(__AVX512F__)
            for (int64_t i = 0; i < s.out_w; i += 16)
              _mm512_mask_storeu_ps(out + i, lanes_below(s.out_w - i), _mm512_setzero_ps());
#else
            std::fill(out, out + s.out_w, 0.f);
#endif
            continue;
          }
          const float* row = plane + ih * s.in_w;
#if defined(__AVX512F__) || defined(__AVX2__)
          if (s.stride_w <= 2) {
            gather_row(row, offset, s.stride_w, s.in_w, s.out_w, out);
            continue;
          }
#endif
          std::fill(out, out + span.lo, 0.f);
          if (s.stride_w == 1) {
            std::copy(row + (span.lo + offset), row + (span.hi + offset), out + span.lo);
          } else if (s.stride_w == 2) {
            gather_even(row + (2 * span.lo + offset), span.hi - span.lo, out + span.lo);
          } else {
            for (int64_t ow = span.lo; ow < span.hi; ++ow) out[ow] = row[ow * s.stride_w + offset];
          }
          std::fill(out + span.hi, out + s.out_w, 0.f);
        }
      }
    }
  }
}

}  // namespace

bool reads_input_in_place(const Conv2dShape& s) {
  return s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 &&
         s.pad_top == 0 && s.pad_left == 0 && s.out_h == s.in_h && s.out_w == s.in_w;
}

void sample_image(const Conv2dShape& s, const float* image, float* sampled) {
  // For a 1x1 kernel without padding, im2col's columns are the sampled image.
  im2col_band(s, image, 0, s.out_h, 0, s.in_channels, sampled);
}

namespace {

void conv2d_direct(const Conv2dShape& s, const float* input, const float* weight, const float* bias,
                   float* output, ThreadPool* pool, const Epilogue& epilogue) {
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t taps = s.kernel_h * s.kernel_w;
  const ClampEpilogue clamp = clamp_of(epilogue);
  // An activation the clamp does not give (Hardswish, SiLU, ...) and no residual: the depthwise
  // kernels apply it themselves.
  const bool in_kernel = !clamp.exact && epilogue.residual == nullptr;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  if (out_per_group == 1 && depthwise_channels_last_suitable(s)) {
    // Small planes: blocks of 16 channels channels-last, runs of blocks of one image at once.
    const int64_t blocks = ceil_div(s.out_channels, 16);
    parallel_for(pool, s.batch * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end;) {
        const int64_t n = t / blocks, b0 = t % blocks;
        const int64_t run = std::min(end - t, blocks - b0);
        const int64_t c0 = b0 * 16, count = std::min(run * 16, s.out_channels - c0);
        const int64_t plane = n * s.out_channels + c0;
        float* out = output + plane * out_plane;
        depthwise_channels_last(s, count, input + plane * in_plane, in_plane, weight + c0 * taps,
                                bias != nullptr ? bias + c0 : nullptr, out, out_plane, clamp.lo,
                                clamp.hi, in_kernel ? &epilogue : nullptr);
        if (!clamp.exact && !in_kernel) apply_epilogue(epilogue, out, count * out_plane);
        t += run;
      }
    });
    return;
  }
#endif
  if (out_per_group == 1) {
    // One input plane per output plane: runs of planes of one image at once. With a residual,
    // it and the activation go over the run's planes while in cache: runs of at most 32 KB of
    // output then (one plane from 91x91 on), else of the thread's share.
    const int64_t most =
        clamp.exact || in_kernel
            ? s.out_channels
            : std::clamp<int64_t>((32 << 10) / (out_plane * int64_t(sizeof(float))), 1,
                                  s.out_channels);
    parallel_for(pool, s.batch * s.out_channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end;) {
        const int64_t oc = plane % s.out_channels;
        const int64_t count = std::min({end - plane, s.out_channels - oc, most});
        float* out = output + plane * out_plane;
        depthwise_planes(s, count, input + plane * in_plane, in_plane, weight + oc * taps,
                         bias != nullptr ? bias + oc : nullptr, out, out_plane, clamp.lo, clamp.hi,
                         in_kernel ? &epilogue : nullptr);
        if (!clamp.exact && !in_kernel) apply_epilogue(epilogue, out, count * out_plane);
        plane += count;
      }
    });
    return;
  }
  parallel_for(pool, s.batch * s.out_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.out_channels, oc = plane % s.out_channels;
      const int64_t ic = oc / out_per_group;
      float* out = output + plane * out_plane;
      depthwise_plane(s, input + (n * s.in_channels + ic) * in_plane, weight + oc * taps,
                      bias ? bias[oc] : 0.f, out, clamp.lo, clamp.hi);
      if (!clamp.exact) apply_epilogue(epilogue, out, out_plane);  // the plane, still in cache
    }
  });
}

// NNX_CONV_WINOGRAD=0 in the environment turns the Winograd path off, for measuring against it.
bool winograd_enabled() {
  static const bool enabled = env_switch("NNX_CONV_WINOGRAD");
  return enabled;
}

// NNX_CONV_PANELS=0 turns the panel path (prepared weights) off, likewise.
bool panels_enabled() {
  static const bool enabled = env_switch("NNX_CONV_PANELS");
  return enabled;
}

}  // namespace

namespace {

// Ungrouped convolutions with weights prepared as 12-row panels (the ones Winograd does not
// take: 1x1, strided, larger kernels; on AVX-512 builds 1x1 ones only, the others going to the
// indirect convolution, or the stem kernel on few channels): each task packs the im2col
// columns of a block of output pixels of one image straight into 32-wide panels and multiplies
// every weight panel with them, bias and ReLU-like epilogues applied in registers
// (panel_gemm_bias_clamp), so neither the weights nor the columns are packed again per call and
// the output is written once. With few blocks (small planes at batch 1) the columns are packed
// once, split over input channels, and the threads share the weight panels instead.
// Measured against the band path (2-core EPYC, ResNet-50 and MobileNetV2 layers): a first layer
// with a large kernel on few input channels (ResNet's 7x7 stem on 3: 1.62 against 1.55 ms),
// whose long, thin patches are packed a run of pixels at a time, stays on the band path, and so
// do 1x1 layers that reduce the channels from a depth over 384 on planes over 64 pixels
// (ResNet-50's 512 -> 128 at 28x28 and 1024 -> 256 at 14x14: 0.69 against 0.79-0.85 ms on
// panels, whose depth blocks read and write the output again). MobileNetV2's 3x3 stem on 3
// channels gains (0.24 against 0.35 ms), as do its projections (2.92 -> 2.45 ms in all) and
// ResNet-50's 256 -> 64 at 56x56 (0.82 -> 0.74 ms).
// Whatever the plane's size (what decides whether the weights are needed besides the panels).
bool panels_suitable_any_size(const Conv2dShape& s) {
  if (s.groups != 1) return false;
  if (s.kernel_h * s.kernel_w == 1) return s.out_channels >= s.in_channels || s.in_channels <= 384;
  return s.in_channels >= 16 || s.kernel_h * s.kernel_w <= 9;
}
bool panels_suitable(const Conv2dShape& s) {
  return panels_suitable_any_size(s) ||
         (s.groups == 1 && s.kernel_h * s.kernel_w == 1 && s.out_h * s.out_w <= 64);
}

constexpr int64_t kPixelPanel = 32;
static_assert(kPixelPanel == 32, "the dense 1x1 packing fills panels with panel_row32");

// The im2col columns of output pixels [p0, p1) of one image as panels of kPixelPanel pixels
// ([k][32] each, k = (input channel, kernel row, kernel column) as the weights order them), for
// input channels [c0, c1); zero where a tap falls in the padding and past the last pixel.
void pack_patches(const Conv2dShape& s, const float* image, int64_t p0, int64_t p1, int64_t c0,
                  int64_t c1, float* out) {
  const int64_t in_plane = s.in_h * s.in_w, count = p1 - p0;
  const int64_t taps = s.kernel_h * s.kernel_w, k = s.in_channels * taps;
  const bool dense = reads_input_in_place(s);
  // Channel by channel, so that the reads go through each input plane in order (visiting every
  // channel's row for each panel instead made them jump from plane to plane).
  for (int64_t c = c0; c < c1; ++c) {
    const float* plane = image + c * in_plane;
    for (int64_t j = 0; j < count; j += kPixelPanel) {
      const int64_t cols = std::min(kPixelPanel, count - j);
      float* panel = out + j * k;
      if (dense) {
        panel_row32(plane + p0 + j, cols, panel + c * kPixelPanel);
        continue;
      }
      // Runs of the panel's pixels within one output row.
      for (int64_t lane = 0; lane < cols;) {
        const int64_t pixel = p0 + j + lane, oh = pixel / s.out_w, ow0 = pixel % s.out_w;
        const int64_t n = std::min(cols - lane, s.out_w - ow0);
        for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
          const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
          for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
            float* dst = panel + ((c * s.kernel_h + kh) * s.kernel_w + kw) * kPixelPanel + lane;
            if (ih < 0 || ih >= s.in_h) {
              std::fill(dst, dst + n, 0.f);
              continue;
            }
            const int64_t x0 = ow0 * s.stride_w - s.pad_left + kw * s.dilation_w;
            const float* row = plane + ih * s.in_w;
#if defined(__AVX512F__) || defined(__AVX2__)
            // Strides 1 and 2 in registers: loads masked to the row's columns (zero in the
            // padding), even lanes picked for stride 2, stores masked to the run's n lanes.
            if (s.stride_w <= 2) {
              gather_row(row, x0, s.stride_w, s.in_w, n, dst);
              continue;
            }
#endif
            const Span span = valid_columns(x0, s.stride_w, s.in_w, n);
            std::fill(dst, dst + span.lo, 0.f);
            if (s.stride_w == 1)
              std::copy(row + x0 + span.lo, row + x0 + span.hi, dst + span.lo);
            else if (s.stride_w == 2)
              gather_even(row + x0 + 2 * span.lo, span.hi - span.lo, dst + span.lo);
            else
              for (int64_t i = span.lo; i < span.hi; ++i) dst[i] = row[x0 + i * s.stride_w];
            std::fill(dst + span.hi, dst + n, 0.f);
          }
        }
        lane += n;
      }
      if (cols < kPixelPanel)
        for (int64_t r = c * taps; r < (c + 1) * taps; ++r)
          std::fill(panel + r * kPixelPanel + cols, panel + (r + 1) * kPixelPanel, 0.f);
    }
  }
}

// Output channels of weight panels [q0, q1) x packed pixels [p0, p0 + count) of image n.
void multiply_pixels(const Conv2dShape& s, const float* panels, const float* packed, int64_t count,
                     int64_t q0, int64_t q1, const float* bias, const Epilogue& epilogue,
                     float* image_out, int64_t p0) {
  const int64_t k = s.in_channels * s.kernel_h * s.kernel_w, out_plane = s.out_h * s.out_w;
  // A residual is added in the kernel's store, before a clamping activation.
  const ClampEpilogue fused = activation_clamp_of(epilogue);
  const bool in_store = epilogue.residual != nullptr && fused.exact;
  const ClampEpilogue clamp = in_store ? fused : clamp_of(epilogue);
  // Depth in blocks of kDepth, so that a weight panel's block stays in L1 while the pixel
  // panels stream past it; the last block adds bias and epilogue.
  constexpr int64_t kDepth = 256;
  for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
    const int64_t depth = std::min(kDepth, k - k0);
    const bool first = k0 == 0, last = k0 + depth == k;
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t rows = std::min(kPanelRows, s.out_channels - q * kPanelRows);
      const float* a = panels + q * kPanelRows * k + k0 * kPanelRows;
      for (int64_t j = 0; j < count; j += kPixelPanel) {
        const int64_t cols = std::min(kPixelPanel, count - j);
        float* c = image_out + q * kPanelRows * out_plane + p0 + j;
        const float* b = packed + j * k + k0 * kPixelPanel;
        if (!last) {
          panel_gemm(rows, cols, depth, a, b, kPixelPanel, c, out_plane, !first);
          continue;
        }
        panel_gemm_bias_clamp(rows, cols, depth, a, b, kPixelPanel, c, out_plane, !first,
                              bias != nullptr ? bias + q * kPanelRows : nullptr, clamp.lo, clamp.hi,
                              in_store ? epilogue.residual + (c - epilogue.output) : nullptr);
      }
      // Other activations once the panel's tiles are stored: not straight after a tile's masked
      // stores, which a load cannot take before they reach the cache.
      if (last && !clamp.exact)
        for (int64_t r = 0; r < rows; ++r)
          apply_epilogue(epilogue, image_out + (q * kPanelRows + r) * out_plane + p0, count);
    }
  }
}

void conv2d_panels(const Conv2dShape& s, const float* input, const float* panels, const float* bias,
                   float* output, ThreadPool* pool, const Epilogue& epilogue) {
  const int64_t threads = pool ? pool->size() : 1;
  const int64_t out_plane = s.out_h * s.out_w, in_plane = s.in_h * s.in_w;
  const int64_t weight_panels = ceil_div(s.out_channels, kPanelRows);
  const int64_t k = s.in_channels * s.kernel_h * s.kernel_w;
  // Pixel blocks of about 256 KiB of packed input (L2), in whole panels, as many per image as
  // the threads divide where there are enough (batch 1), the panels dealt out evenly: blocks
  // of a fixed size left one thread a block more (ResNet-50's 256 -> 512 at 28x28: 448 pixels
  // against 336).
  const int64_t pixel_panels = ceil_div(out_plane, kPixelPanel);
  const int64_t target = std::clamp<int64_t>((64 * 1024 / k) / kPixelPanel, 1, 32);
  int64_t blocks_per_image = ceil_div(pixel_panels, target);
  if (s.batch == 1 && threads > 1 && blocks_per_image >= 2 * threads)
    blocks_per_image = std::min(pixel_panels, ceil_div(blocks_per_image, threads) * threads);
  const int64_t block_panels = ceil_div(pixel_panels, blocks_per_image);
  const int64_t tasks = s.batch * blocks_per_image;
  if (threads == 1 || tasks >= 2 * threads) {
    parallel_for(pool, tasks, 1, [&](int64_t t0, int64_t t1) {
      thread_local AlignedBuffer buffer;
      float* packed = buffer.get(block_panels * kPixelPanel * k);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / blocks_per_image, b = t % blocks_per_image;
        const int64_t p0 = b * pixel_panels / blocks_per_image * kPixelPanel;
        const int64_t count =
            std::min(out_plane, (b + 1) * pixel_panels / blocks_per_image * kPixelPanel) - p0;
        pack_patches(s, input + n * s.in_channels * in_plane, p0, p0 + count, 0, s.in_channels,
                     packed);
        multiply_pixels(s, panels, packed, count, 0, weight_panels, bias, epilogue,
                        output + n * s.out_channels * out_plane, p0);
      }
    });
    return;
  }
  // Few pixels: each image's pixels packed together, the weight panels split over threads.
  static thread_local AlignedBuffer shared;
  float* packed = shared.get(ceil_div(out_plane, kPixelPanel) * kPixelPanel * k);
  for (int64_t n = 0; n < s.batch; ++n) {
    const float* image = input + n * s.in_channels * in_plane;
    parallel_for(pool, s.in_channels, 16, [&](int64_t c0, int64_t c1) {
      pack_patches(s, image, 0, out_plane, c0, c1, packed);
    });
    parallel_for(pool, weight_panels, 1, [&](int64_t q0, int64_t q1) {
      multiply_pixels(s, panels, packed, out_plane, q0, q1, bias, epilogue,
                      output + n * s.out_channels * out_plane, 0);
    });
  }
}

#if defined(NNX_CL_GEMM)
// NNX_CONV_CHANNELS_LAST=0 turns the channels-last path for small planes off.
bool channels_last_enabled() {
  static const bool enabled = env_switch("NNX_CONV_CHANNELS_LAST");
  return enabled;
}

// Convolutions whose output planes have at most 100 pixels (ResNet-50's 7x7 layers, MobileNetV2's
// last one): the 32-pixel tiles of the panel path leave lanes idle there (a 7x7 plane fills 49
// of 64), the channels-last GEMM's 7-pixel tiles none. On 14x14 planes (196 pixels, 94% of
// seven tiles) the in-place and panel paths won (alternating runs, 2-core Zen 5: ResNet-50's
// 1024 -> 256 0.35-0.37 -> 0.32 ms, 256 -> 1024 with its residual 0.35-0.36 -> 0.30-0.31 ms).
// AVX2 builds (no indirect convolution) take the larger kernels on 14x14 planes too: in
// ResNet-50 (x86-64-v3 on Zen 5, per node, 5 alternating profiled runs) its 256 -> 256 3x3/2
// 2.40 -> 1.81 ms; its 1x1 layers there lost (0.65 -> 0.72 ms) and stay in place. Their 1x1
// layers of up to 1152 input channels stay in place on small planes too, since the in-place tiles
// take a plane's last pixels with the channels as the vector (pointwise_conv.cpp): on a Zen 3,
// each round's ratio over 8-10 alternating rounds, EfficientNet-B0's 7x7 1x1 layers 0.8-0.95 and
// its squeeze-and-excitation 1x1s 0.6-0.9, MobileNetV3-small's 0.65-0.95, ResNet-50's 512 ->
// 2048 ones (with their residual) 0.82-0.98; its 2048 -> 512 ones lost (1.05-1.17, where its
// other layers moved 0.90) and stayed channels-last until the tiles packed small planes
// (pointwise_packs): packed, 0.89-0.94 of the channels-last GEMM per round. NNX_POINTWISE_SMALL_
// PLANES=0 sends them all channels-last, for measuring.
#if !defined(__AVX512F__)
bool pointwise_small_planes(const Conv2dShape& s) {
  static const bool enabled = env_switch("NNX_POINTWISE_SMALL_PLANES");
  return enabled && pointwise_suitable(s) && (s.in_channels <= 1152 || pointwise_packs(s));
}
#endif

bool channels_last_suitable(const Conv2dShape& s) {
  const int64_t pixels = s.out_h * s.out_w;
#if defined(__AVX512F__)
  const bool small = pixels <= 100;
#else
  const bool small = (pixels <= 100 && !pointwise_small_planes(s)) ||
                     (pixels <= 196 && s.kernel_h * s.kernel_w > 1);
#endif
  return channels_last_enabled() && s.groups == 1 && small;
}

// Each thread takes a run of 16-channel groups of the output, computed from the whole input
// (a dense 1x1 layer's read in place, channels-first, any other's im2col columns, made first
// over the threads) and stored channels-first.
void conv2d_channels_last(const Conv2dShape& s, const float* input, const float* weight_t,
                          const float* bias, float* output, ThreadPool* pool,
                          const Epilogue& epilogue) {
  const int64_t plane = s.out_h * s.out_w, in_plane = s.in_h * s.in_w;
  const int64_t ld = (s.out_channels + 15) / 16 * 16, k = s.in_channels * s.kernel_h * s.kernel_w;
  const bool dense = reads_input_in_place(s);
  // A residual goes in after the tiles, vectorised over each channel's plane (added in the
  // tiles' transposing store instead, a value at a time, ResNet-50's 14x14 layers took 10% more).
  const ClampEpilogue clamp = clamp_of(epilogue);
#if defined(__AVX512F__)
  const bool tiled = false;
#else
  static const bool tiling = env_switch("NNX_CL_TILED");
  const bool tiled = tiling && !dense;
#endif
  // Image n, split over `p`'s threads (im2col by input channels, the GEMM by output channels);
  // the bias and columns in the calling thread's buffers.
  auto image = [&](int64_t n, ThreadPool* p) {
    thread_local AlignedBuffer bias_buffer, column_buffer;
    float* padded_bias = bias_buffer.get(ld);
    for (int64_t o = 0; o < ld; ++o)
      padded_bias[o] = bias != nullptr && o < s.out_channels ? bias[o] : 0.f;
    const float* x = input + n * s.in_channels * in_plane;
    float* y = output + n * s.out_channels * plane;
    if (!dense) {
      float* columns = column_buffer.get(k * plane);
      if (tiled) {
#if !defined(__AVX512F__)
        // AVX2: the columns of 8 input channels at a time (in L1), then copied into cl_gemm's
        // tiled layout (cl_tile_rows): ResNet-50's 512 -> 512 3x3/2 at 7x7, per node, 0.87-0.94
        // of the columns read in place (ResNet-18's 0.87; the 14x14 ones 0.96-0.97).
        parallel_for(p, s.in_channels, 8, [&](int64_t c0, int64_t c1) {
          thread_local AlignedBuffer chunk_buffer;
          const int64_t taps = s.kernel_h * s.kernel_w;
          float* chunk = chunk_buffer.get(8 * taps * plane);
          for (int64_t c = c0; c < c1; c += 8) {
            const int64_t e = std::min(c1, c + 8);
            im2col_band(s, x + c * in_plane, 0, s.out_h, 0, e - c, chunk);
            cl_tile_rows(chunk, plane, k, c * taps, e * taps, columns);
          }
        });
#endif
      } else {
        parallel_for(p, s.in_channels, 8, [&](int64_t c0, int64_t c1) {
          im2col_band(s, x, 0, s.out_h, c0, c1, columns);
        });
      }
      x = columns;
    }
    parallel_for(p, ld / 16, 1, [&](int64_t g0, int64_t g1) {
      cl_gemm(plane, k, x, 1, plane, weight_t, ld, padded_bias, clamp.lo, clamp.hi, g0, g1, y,
              plane, true, s.out_channels, tiled);
      if (!clamp.exact)
        for (int64_t c = g0 * 16; c < std::min(s.out_channels, g1 * 16); ++c)
          apply_epilogue(epilogue, y + c * plane, plane);
    });
  };
  // Weights that stay in L2 with at least an image per thread: each thread takes whole images
  // (no meeting of the threads per image, twice for a lowered one, around a few microseconds of
  // work: MobileNetV3's 96 -> 576 layers at 7x7). Larger weights (ResNet's 7x7 layers, 2-8 MB)
  // keep the split, each thread streaming half of them per image.
  for_each_image(pool, s.batch, k * ld * int64_t(sizeof(float)) <= (512 << 10), image);
}

// 1x1 layers on planes too large for the channels-last GEMM read their input in place
// (pointwise_conv.h). Measured against the panel path (2-core Zen 5, ResNet-50's layers, per
// node, 3 alternating profiled runs in one sitting): 64 -> 64 at 56x56 0.17-0.19 -> 0.10-0.12 ms,
// 64 -> 256 at 56x56 0.55-0.57 -> 0.33-0.39 ms (0.49-0.52 -> 0.38-0.43 with its residual), 128 ->
// 512 at 28x28 with its residual 0.45-0.50 -> 0.33-0.35 ms; the whole network 29.2 -> 27.7 ms
// (medians of 15 alternating runs, a slow hour). An earlier sitting had measured the expanding
// layers on large planes and those of under 128 input channels 0-30% slower in place, and kept
// them on panels; these runs reverse that.
bool pointwise_preferred(const Conv2dShape& s) {
  return pointwise_suitable(s) && !channels_last_suitable(s);
}
#endif

// Images per block when output planes are small: enough columns for the GEMM's register tile
// and to pack the weights once per block rather than once per image.
int64_t images_per_block(const Conv2dShape& s) {
  const int64_t out_plane = s.out_h * s.out_w;
  return std::clamp<int64_t>(ceil_div(kMinBandColumns, out_plane), 1, s.batch);
}

// Lowers images [n0, n1) of group g side by side: rows of the [k x (n1-n0)*out_plane] matrix
// `columns` (row stride ld), image i's columns at offset (i - n0) * out_plane.
void im2col_images(const Conv2dShape& s, const float* input, int64_t g, int64_t n0, int64_t n1,
                   float* columns, int64_t ld, ThreadPool* pool) {
  const int64_t in_per_group = s.in_channels / s.groups;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t k = in_per_group * s.kernel_h * s.kernel_w;
  parallel_for(pool, n1 - n0, 1, [&](int64_t i0, int64_t i1) {
    float* own = column_scratch(k * out_plane);
    for (int64_t i = i0; i < i1; ++i) {
      const float* x = input + ((n0 + i) * s.in_channels + g * in_per_group) * in_plane;
      im2col_band(s, x, 0, s.out_h, 0, in_per_group, own);
      for (int64_t r = 0; r < k; ++r)
        std::copy(own + r * out_plane, own + (r + 1) * out_plane, columns + r * ld + i * out_plane);
    }
  });
}

// Small output planes at batch > 1 (deep layers in training): blocks of images lowered side by
// side and multiplied together.
void conv2d_image_blocks(const Conv2dShape& s, const float* input, const float* weight,
                         const float* bias, float* output, ThreadPool* pool,
                         const Epilogue& epilogue) {
  const int64_t in_per_group = s.in_channels / s.groups;
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t out_plane = s.out_h * s.out_w;
  const int64_t k = in_per_group * s.kernel_h * s.kernel_w;
  const int64_t per_block = images_per_block(s);
  // This thread's scratch, kept (the lambdas below see it through the locals).
  static thread_local AlignedBuffer column_buffer, product_buffer;
  float* columns = column_buffer.get(k * per_block * out_plane);
  float* product = product_buffer.get(out_per_group * per_block * out_plane);
  for (int64_t g = 0; g < s.groups; ++g) {
    const float* w = weight + g * out_per_group * k;
    for (int64_t n0 = 0; n0 < s.batch; n0 += per_block) {
      const int64_t n1 = std::min(s.batch, n0 + per_block), cols = (n1 - n0) * out_plane;
      im2col_images(s, input, g, n0, n1, columns, cols, pool);
      // Rows of output channels per thread: a GEMM, then each image's planes into place.
      parallel_for(pool, ceil_div(out_per_group, 8), 1, [&](int64_t b0, int64_t b1) {
        const int64_t m0 = b0 * 8, m1 = std::min(out_per_group, b1 * 8);
        gemm(m1 - m0, cols, k, w + m0 * k, k, columns, cols, false, product + m0 * cols, cols,
             false);
        for (int64_t m = m0; m < m1; ++m) {
          const float add = bias ? bias[g * out_per_group + m] : 0.f;
          for (int64_t n = n0; n < n1; ++n) {
            const float* src = product + m * cols + (n - n0) * out_plane;
            float* dst = output + (n * s.out_channels + g * out_per_group + m) * out_plane;
            for (int64_t i = 0; i < out_plane; ++i) dst[i] = src[i] + add;
            apply_epilogue(epilogue, dst, out_plane);
          }
        }
      });
    }
  }
}

}  // namespace

bool conv2d_uses_winograd_prepared(const Conv2dShape& s) {
  return winograd_enabled() && winograd_suitable(s, true) &&
         !(s.in_channels / s.groups == 1 && s.out_channels / s.groups <= kDirectMaxMultiplier);
}

namespace {

// A strided 1x1 layer without padding (ResNet's downsampling 1x1/2) reads only its sampled
// pixels: with prepared weights conv2d copies those into a dense image, once, and runs the
// dense layer of this shape on it, whose paths read their input in place (the panel path
// otherwise gathered every pixel panel's samples from the whole image, and the channels-last
// path made the same copy, slower, as im2col columns).
bool sampled_pointwise(const Conv2dShape& s) {
  return s.groups == 1 && s.kernel_h == 1 && s.kernel_w == 1 && s.pad_top == 0 && s.pad_left == 0 &&
         (s.stride_h > 1 || s.stride_w > 1) && (s.out_h - 1) * s.stride_h < s.in_h &&
         (s.out_w - 1) * s.stride_w < s.in_w;
}
Conv2dShape sampled_shape(const Conv2dShape& s) {
  Conv2dShape d = s;
  d.in_h = s.out_h;
  d.in_w = s.out_w;
  d.stride_h = d.stride_w = 1;
  return d;
}

}  // namespace

bool conv2d_reads_prepared_only(const Conv2dShape& s) {
  if (sampled_pointwise(s)) return conv2d_reads_prepared_only(sampled_shape(s));
  if (s.in_channels / s.groups == 1 && s.out_channels / s.groups <= kDirectMaxMultiplier)
    return false;  // the direct (depthwise) loop
#if defined(NNX_INDIRECT_CONV)
  if (indirect_suitable(s, true)) return true;
#endif
#if defined(NNX_POINTWISE_CONV)
  // Whatever the plane: conv2d_pointwise or (small planes) the channels-last GEMM.
  if (pointwise_suitable(s)) return true;
#endif
  // Not panels_suitable: made before the plane's size is known, this must hold for every size.
  return conv2d_uses_winograd_prepared(s) || (panels_suitable_any_size(s) && panels_enabled());
}

namespace {

// The kernel conv2d runs a (dense, after sampled_pointwise's copy) shape on; the order is the
// order of preference.
enum class ConvPath { direct, stem, winograd, indirect, pointwise, channels_last, panels, bands };

ConvPath conv_path(const Conv2dShape& s, bool prepared, bool has_weight) {
  if (s.in_channels / s.groups == 1 && s.out_channels / s.groups <= kDirectMaxMultiplier)
    return ConvPath::direct;
#if defined(NNX_STEM_CONV)
  if (stem_suitable(s)) return ConvPath::stem;
#endif
  if (winograd_enabled() && winograd_suitable(s, prepared)) return ConvPath::winograd;
#if defined(NNX_INDIRECT_CONV)
  if (indirect_suitable(s, prepared)) return ConvPath::indirect;
#endif
#if defined(NNX_POINTWISE_CONV)
  if (prepared && pointwise_preferred(s)) return ConvPath::pointwise;
#endif
#if defined(NNX_CL_GEMM)
  if (prepared && channels_last_suitable(s)) return ConvPath::channels_last;
#endif
  // Without weights (dropped where conv2d_reads_prepared_only) the panels are the only form.
  if (prepared && panels_enabled() && (panels_suitable(s) || !has_weight)) return ConvPath::panels;
  return ConvPath::bands;
}

}  // namespace

bool conv2d_residual_in_place(const Conv2dShape& s, bool prepared, const Epilogue& epilogue) {
  // The in-place 1x1 tiles add the residual in their store, which reads each element just before
  // it writes the output there (with a clamping activation or none; others go after the store).
  // The other paths store first and add the residual after (or, on panels, store partial sums).
  const Conv2dShape d = prepared && sampled_pointwise(s) ? sampled_shape(s) : s;
  return prepared && activation_clamp_of(epilogue).exact &&
         conv_path(d, prepared, true) == ConvPath::pointwise;
}

void conv2d(const Conv2dShape& s, const float* input, const float* weight, const float* bias,
            float* output, ThreadPool* pool, const Epilogue& epilogue, ConvPrepared* prepared) {
  const int64_t in_per_group = s.in_channels / s.groups;
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  if (s.batch == 0 || s.out_channels == 0 || out_plane == 0) return;
  const int64_t out_floats = s.batch * s.out_channels * out_plane;
  const float* residual =
      epilogue.residual != nullptr ? epilogue.residual + (output - epilogue.output) : nullptr;
  if (residual != nullptr && residual < output + out_floats && output < residual + out_floats &&
      !conv2d_residual_in_place(s, prepared != nullptr, epilogue)) {
    // A residual in the output's memory that this shape's kernel would overwrite before reading
    // (the planner gives a fused Add's dying operand to the output only where it would not): a
    // copy of it, and the epilogue reads that.
    static thread_local AlignedBuffer residual_buffer;
    float* copy = residual_buffer.get(out_floats);
    std::copy(residual, residual + out_floats, copy);
    Epilogue moved = epilogue;
    moved.residual = copy;
    moved.output = output;
    return conv2d(s, input, weight, bias, output, pool, moved, prepared);
  }
  if (prepared != nullptr && sampled_pointwise(s)) {
#if defined(NNX_POINTWISE_CONV)
    // With at least two images per thread, each thread samples the images it convolves, just
    // before their tiles: no pass over the batch first, and the samples read from L2.
    const int64_t threads = pool != nullptr ? pool->size() : 1;
    const Conv2dShape d = sampled_shape(s);
    if (s.batch >= 2 * threads && conv_path(d, true, true) == ConvPath::pointwise)
      return conv2d_pointwise_sampled(s, d, input, prepared->panels(d, weight, pool), bias, output,
                                      pool, epilogue);
#endif
    static thread_local AlignedBuffer sample_buffer;
    const int64_t image = s.in_channels * out_plane;
    float* sampled = sample_buffer.get(s.batch * image);
    // For a 1x1 kernel without padding, im2col's columns are the sampled image.
    parallel_for(pool, s.batch * s.in_channels, 8, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1;) {
        const int64_t n = i / s.in_channels, c0 = i % s.in_channels;
        const int64_t c1 = std::min(s.in_channels, c0 + (i1 - i));
        im2col_band(s, input + n * s.in_channels * in_plane, 0, s.out_h, c0, c1,
                    sampled + n * image);
        i += c1 - c0;
      }
    });
    return conv2d(sampled_shape(s), sampled, weight, bias, output, pool, epilogue, prepared);
  }
  switch (conv_path(s, prepared != nullptr, weight != nullptr)) {
    case ConvPath::direct:
      return conv2d_direct(s, input, weight, bias, output, pool, epilogue);
#if defined(NNX_STEM_CONV)
    case ConvPath::stem:
      return conv2d_stem(s, input, weight, prepared ? prepared->panels(s, weight, pool) : nullptr,
                         bias, output, pool, epilogue);
#endif
    case ConvPath::winograd: {
      // The transform first: it sets the tile.
      const float* u = prepared ? prepared->winograd(s, weight, pool) : nullptr;
      return conv2d_winograd(s, input, weight, bias, output, pool, epilogue, u,
                             prepared ? prepared->winograd_tile() : 2);
    }
#if defined(NNX_INDIRECT_CONV)
    case ConvPath::indirect:
      return conv2d_indirect(s, input, weight, bias, output, pool, epilogue,
                             prepared ? prepared->indirect(s, weight, pool) : nullptr);
#endif
#if defined(NNX_POINTWISE_CONV)
    case ConvPath::pointwise:
      return conv2d_pointwise(s, input, prepared->panels(s, weight, pool), bias, output, pool,
                              epilogue);
#endif
#if defined(NNX_CL_GEMM)
    case ConvPath::channels_last:
      return conv2d_channels_last(s, input, prepared->channels_last(s, weight, pool), bias, output,
                                  pool, epilogue);
#endif
    case ConvPath::panels:
      return conv2d_panels(s, input, prepared->panels(s, weight, pool), bias, output, pool,
                           epilogue);
    default:
      break;
  }

  const bool pointwise = reads_input_in_place(s);
  const int64_t k = in_per_group * s.kernel_h * s.kernel_w;
  const int64_t jobs = s.batch * s.groups;
  const int64_t threads = pool ? pool->size() : 1;

  // Bands of output rows: wide enough that packing the weights is amortised, narrow enough that
  // the im2col scratch stays near L2 (a plain GEMM reads the input in place: one band).
  const int64_t band_target = std::max(kMinBandColumns, kColumnTileFloats / k);
  int64_t band_rows =
      pointwise ? s.out_h : std::clamp<int64_t>(ceil_div(band_target, s.out_w), 1, s.out_h);
  int64_t bands = ceil_div(s.out_h, band_rows);
  // A few bands that the threads do not divide (a mid-sized layer at batch 1): narrower bands,
  // as many as the threads divide, let each thread lower and multiply whole bands of its own
  // rather than share each one, as long as a band keeps enough columns for the GEMM.
  if (!pointwise && threads > 1 && jobs * bands < 4 * threads && (jobs * bands) % threads != 0) {
    const int64_t want = ceil_div(jobs * bands, threads) * threads;
    if (want % jobs == 0) {
      const int64_t rows = ceil_div(s.out_h, want / jobs);
      if (rows * s.out_w >= kMinBandColumns && (jobs * ceil_div(s.out_h, rows)) % threads == 0) {
        band_rows = rows;
        bands = ceil_div(s.out_h, rows);
      }
    }
  }

  struct Band {
    const float* group_input;
    const float* weight;
    const float* bias;  // of the group, or null
    float* output;      // first output pixel of the band, in the group's first channel
    int64_t oh0, oh1, cols;
  };
  auto band_of = [&](int64_t job, int64_t band) {
    const int64_t n = job / s.groups, g = job % s.groups;
    Band b;
    b.group_input = input + (n * s.in_channels + g * in_per_group) * in_plane;
    b.weight = weight + g * out_per_group * k;
    b.bias = bias ? bias + g * out_per_group : nullptr;
    b.oh0 = band * band_rows;
    b.oh1 = std::min(s.out_h, b.oh0 + band_rows);
    b.cols = (b.oh1 - b.oh0) * s.out_w;
    b.output = output + (n * s.out_channels + g * out_per_group) * out_plane + b.oh0 * s.out_w;
    return b;
  };
  // Output channels [m0, m1) x band columns [c0, c1) of a band whose columns are ready.
  auto multiply_block = [&](const Band& b, const float* columns, int64_t ldb, int64_t m0,
                            int64_t m1, int64_t c0, int64_t c1) {
    float* out = b.output + m0 * out_plane + c0;
    if (b.bias != nullptr) {
      for (int64_t m = m0; m < m1; ++m)
        std::fill(out + (m - m0) * out_plane, out + (m - m0) * out_plane + (c1 - c0), b.bias[m]);
    }
    gemm(m1 - m0, c1 - c0, k, b.weight + m0 * k, k, columns + c0, ldb, false, out, out_plane,
         b.bias != nullptr);
    if (epilogue.needed())
      for (int64_t m = m0; m < m1; ++m)
        apply_epilogue(epilogue, out + (m - m0) * out_plane, c1 - c0);
  };
  // The same, in column blocks small enough for the epilogue to find them in cache.
  auto multiply = [&](const Band& b, const float* columns, int64_t ldb, int64_t m0, int64_t m1,
                      int64_t c0, int64_t c1) {
    const int64_t step =
        epilogue.needed() ? std::max(kMinBandColumns, kEpilogueBlockFloats / (m1 - m0)) : c1 - c0;
    for (int64_t c = c0; c < c1; c += step)
      multiply_block(b, columns, ldb, m0, m1, c, std::min(c1, c + step));
  };

  if (s.batch > 1 && out_plane < kMinBandColumns)
    return conv2d_image_blocks(s, input, weight, bias, output, pool, epilogue);

  const int64_t tasks = jobs * bands;
  if (threads == 1 || tasks >= 4 * threads || tasks % threads == 0) {
    // Plenty of (image, group, band) tasks: each thread lowers and multiplies its own bands.
    parallel_for(pool, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const Band b = band_of(task / bands, task % bands);
        if (pointwise) {
          multiply(b, b.group_input + b.oh0 * s.out_w, in_plane, 0, out_per_group, 0, b.cols);
        } else {
          float* columns = column_scratch(k * b.cols);
          im2col_band(s, b.group_input, b.oh0, b.oh1, 0, in_per_group, columns);
          multiply(b, columns, b.cols, 0, out_per_group, 0, b.cols);
        }
      }
    });
    return;
  }
  // Few tasks (a large layer at batch 1): the threads share each band, lowering its input
  // channels and then multiplying blocks of output channels (or of columns when few).
  for (int64_t task = 0; task < tasks; ++task) {
    const Band b = band_of(task / bands, task % bands);
    const float* columns = b.group_input + b.oh0 * s.out_w;
    int64_t ldb = in_plane;
    if (!pointwise) {
      float* scratch = column_scratch(k * b.cols);
      parallel_for(pool, in_per_group, 1, [&](int64_t ic0, int64_t ic1) {
        im2col_band(s, b.group_input, b.oh0, b.oh1, ic0, ic1, scratch);
      });
      columns = scratch;
      ldb = b.cols;
    }
    // Rows, unless the band is much wider than the layer is deep (a 1x1 layer on a large
    // plane): then each thread takes columns and packs only its part of B, not all of it.
    if (out_per_group >= kGemmRowBlock * threads && b.cols < 4 * out_per_group) {
      parallel_for(pool, ceil_div(out_per_group, kGemmRowBlock), 1, [&](int64_t i0, int64_t i1) {
        multiply(b, columns, ldb, i0 * kGemmRowBlock, std::min(out_per_group, i1 * kGemmRowBlock),
                 0, b.cols);
      });
    } else {
      parallel_for(pool, ceil_div(b.cols, kGemmColumnBlock), 1, [&](int64_t j0, int64_t j1) {
        multiply(b, columns, ldb, 0, out_per_group, j0 * kGemmColumnBlock,
                 std::min(b.cols, j1 * kGemmColumnBlock));
      });
    }
  }
}

namespace {

// The adjoint of im2col_band for input channels [ic0, ic1): adds each column value into the
// input element it was read from (padding taps are dropped).
void col2im_band(const Conv2dShape& s, const float* columns, int64_t oh0, int64_t oh1, int64_t ic0,
                 int64_t ic1, float* group_grad) {
  const int64_t band = (oh1 - oh0) * s.out_w;
  const float* src = columns + ic0 * s.kernel_h * s.kernel_w * band;
  for (int64_t ic = ic0; ic < ic1; ++ic) {
    float* plane = group_grad + ic * s.in_h * s.in_w;
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < s.kernel_w; ++kw, src += band) {
        const int64_t offset = kw * s.dilation_w - s.pad_left;
        const Span span = valid_columns(offset, s.stride_w, s.in_w, s.out_w);
        const float* in = src;
        for (int64_t oh = oh0; oh < oh1; ++oh, in += s.out_w) {
          const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
          if (ih < 0 || ih >= s.in_h) continue;
          float* row = plane + ih * s.in_w + offset;
          if (s.stride_w == 1) {
            for (int64_t ow = span.lo; ow < span.hi; ++ow) row[ow] += in[ow];
          } else {
            for (int64_t ow = span.lo; ow < span.hi; ++ow) row[ow * s.stride_w] += in[ow];
          }
        }
      }
    }
  }
}

float* gradient_column_scratch(int64_t floats) {
  thread_local std::vector<float> columns;
  if (int64_t(columns.size()) < floats) columns = std::vector<float>(size_t(floats));
  return columns.data();
}

// Backward of conv2d_direct (one input plane per group): grad_input plane by plane, grad_weight
// output channel by output channel, both without reductions across threads.
void conv2d_direct_backward(const Conv2dShape& s, const float* input, const float* weight,
                            const float* grad_output, float* grad_input, float* grad_weight,
                            ThreadPool* pool) {
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t taps = s.kernel_h * s.kernel_w;
  if (grad_input != nullptr) {
    parallel_for(pool, s.batch * s.in_channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / s.in_channels, ic = plane % s.in_channels;
        float* gin = grad_input + plane * in_plane;
        std::fill(gin, gin + in_plane, 0.f);
        for (int64_t oc = ic * out_per_group; oc < (ic + 1) * out_per_group; ++oc) {
          const float* gout = grad_output + (n * s.out_channels + oc) * out_plane;
          const float* w = weight + oc * taps;
          for (int64_t oh = 0; oh < s.out_h; ++oh) {
            const float* g_row = gout + oh * s.out_w;
            for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
              const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
              if (ih < 0 || ih >= s.in_h) continue;
              float* in_row = gin + ih * s.in_w;
              for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
                const float tap = w[kh * s.kernel_w + kw];
                const int64_t offset = kw * s.dilation_w - s.pad_left;
                const Span span = valid_columns(offset, s.stride_w, s.in_w, s.out_w);
                float* dst = in_row + offset;
                if (s.stride_w == 1) {
                  for (int64_t ow = span.lo; ow < span.hi; ++ow) dst[ow] += tap * g_row[ow];
                } else {
                  for (int64_t ow = span.lo; ow < span.hi; ++ow)
                    dst[ow * s.stride_w] += tap * g_row[ow];
                }
              }
            }
          }
        }
      }
    });
  }
  if (grad_weight != nullptr) {
    parallel_for(pool, s.out_channels, 1, [&](int64_t begin, int64_t end) {
      // Per tap, products summed down the output rows column by column (vectorises), then
      // across the columns once per image.
      std::vector<float> rows(static_cast<size_t>(taps * s.out_w));
      std::vector<double> acc(static_cast<size_t>(taps));
      for (int64_t oc = begin; oc < end; ++oc) {
        const int64_t ic = oc / out_per_group;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t n = 0; n < s.batch; ++n) {
          const float* in = input + (n * s.in_channels + ic) * in_plane;
          const float* gout = grad_output + (n * s.out_channels + oc) * out_plane;
          std::fill(rows.begin(), rows.end(), 0.f);
          for (int64_t oh = 0; oh < s.out_h; ++oh) {
            const float* g_row = gout + oh * s.out_w;
            for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
              const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
              if (ih < 0 || ih >= s.in_h) continue;
              for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
                const int64_t offset = kw * s.dilation_w - s.pad_left;
                const Span span = valid_columns(offset, s.stride_w, s.in_w, s.out_w);
                const float* in_row = in + ih * s.in_w + offset;
                float* r = rows.data() + (kh * s.kernel_w + kw) * s.out_w;
                if (s.stride_w == 1) {
                  for (int64_t ow = span.lo; ow < span.hi; ++ow) r[ow] += in_row[ow] * g_row[ow];
                } else {
                  for (int64_t ow = span.lo; ow < span.hi; ++ow)
                    r[ow] += in_row[ow * s.stride_w] * g_row[ow];
                }
              }
            }
          }
          for (int64_t t = 0; t < taps; ++t)
            acc[size_t(t)] += sum_floats(rows.data() + t * s.out_w, s.out_w);
        }
        for (int64_t t = 0; t < taps; ++t) grad_weight[oc * taps + t] = float(acc[size_t(t)]);
      }
    });
  }
}

}  // namespace

bool input_gradient_shape(const Conv2dShape& s, Conv2dShape& t) {
  if (s.stride_h != 1 || s.stride_w != 1) return false;
  const int64_t extent_h = (s.kernel_h - 1) * s.dilation_h;
  const int64_t extent_w = (s.kernel_w - 1) * s.dilation_w;
  const int64_t pad_bottom = s.out_h - 1 + extent_h - s.pad_top - (s.in_h - 1);
  const int64_t pad_right = s.out_w - 1 + extent_w - s.pad_left - (s.in_w - 1);
  if (s.pad_top > extent_h || s.pad_left > extent_w || pad_bottom > extent_h ||
      pad_right > extent_w || pad_bottom < 0 || pad_right < 0)
    return false;
  t = s;
  t.in_channels = s.out_channels;
  t.in_h = s.out_h;
  t.in_w = s.out_w;
  t.out_channels = s.in_channels;
  t.out_h = s.in_h;
  t.out_w = s.in_w;
  t.pad_top = extent_h - s.pad_top;
  t.pad_left = extent_w - s.pad_left;
  return true;
}

namespace {

// The input gradient as a convolution (input_gradient_shape), on conv2d's fastest path for it
// (Winograd, the direct loop). Returns false when the shape does not allow it.
bool input_gradient_as_convolution(const Conv2dShape& s, const float* weight,
                                   const float* grad_output, float* grad_input, ThreadPool* pool) {
  Conv2dShape t;
  if (!input_gradient_shape(s, t)) return false;
  const int64_t in_per_group = s.in_channels / s.groups;
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t taps = s.kernel_h * s.kernel_w;
  // flipped[g * ipg + i][o][kh][kw] = weight[g * opg + o][i][K - 1 - kh][K - 1 - kw].
  static thread_local AlignedBuffer flipped_buffer;  // kept: no allocation per call
  float* flipped = flipped_buffer.get(s.in_channels * out_per_group * taps);
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t o = 0; o < out_per_group; ++o)
      for (int64_t i = 0; i < in_per_group; ++i) {
        const float* src = weight + ((g * out_per_group + o) * in_per_group + i) * taps;
        float* dst = flipped + ((g * in_per_group + i) * out_per_group + o) * taps;
        for (int64_t t2 = 0; t2 < taps; ++t2) dst[t2] = src[taps - 1 - t2];
      }
  conv2d(t, grad_output, flipped, nullptr, grad_input, pool);
  return true;
}

}  // namespace

void conv2d_max_pool(const Conv2dShape& s, const Pool2dShape& p, const float* input,
                     const float* weight, const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue, ConvPrepared* prepared) {
  const int64_t reach = (s.kernel_h - 1) * s.dilation_h;
  const int64_t pad_bottom = (s.out_h - 1) * s.stride_h + reach + 1 - s.pad_top - s.in_h;
  const int64_t conv_plane = s.out_h * s.out_w, pool_plane = p.out_h * p.out_w;
  if (s.pad_top > reach || pad_bottom > reach || p.out_h == 0 || s.batch == 0) {
    // Rows that see no input at all would leave a band without input rows: unbanded.
    std::vector<float> full(size_t(s.batch * s.out_channels * conv_plane));
    conv2d(s, input, weight, bias, full.data(), pool, epilogue, prepared);
    return max_pool2d(p, full.data(), output, pool);
  }
  // Bands of pooled rows whose convolution rows fill about 512 KiB.
  const int64_t rows_floats = s.out_channels * s.out_w * std::max<int64_t>(1, p.stride_h);
  int64_t band = std::clamp<int64_t>(128 * 1024 / rows_floats, 1, p.out_h);
  const int64_t threads = pool ? pool->size() : 1;
  if (s.batch == 1 && threads > 1 && ceil_div(p.out_h, band) >= 2 * threads) {
    // As many bands as the threads divide (each one's rows are recomputed where windows meet).
    const int64_t even = ceil_div(ceil_div(p.out_h, band), threads) * threads;
    band = ceil_div(p.out_h, even);
  }
  // A Winograd convolution's band holds at least 4 convolution rows, a whole F(4x4, 3x3) tile
  // (or two of F(2x2)): with 2 (the seed network's 256 channels at 160 wide, pooled 2x2) half
  // of every 4x4 tile fell outside the band.
  if (winograd_enabled() && winograd_suitable(s, prepared != nullptr))
    band = std::min(p.out_h, std::max(band, ceil_div(4, std::max<int64_t>(1, p.stride_h))));
  const int64_t bands = ceil_div(p.out_h, band), tasks = s.batch * bands;
  const int64_t in_plane = s.in_h * s.in_w;

  // Where consecutive bands' windows share one convolution row (ResNet's 3x3 stride-2 pooling),
  // a thread that runs the next band of the same image keeps that row's maxima across each
  // window's columns instead of convolving the row again (a band of 7 pooled rows recomputed
  // 1 row in 15). ResNet's stem with its pooling alone (each round's ratio, medians of 10):
  // batch 1 1.7% faster, batch 8 3.6%.
  const bool carry = (p.kernel_h - 1) * p.dilation_h + 1 - p.stride_h == 1;
  // The carried row's column maxima, [out_channels][p.out_w], and the row itself.
  struct Carry {
    AlignedBuffer row, maxima;
  };

  // Pooled rows [q0, q1) of image n, on `inner` (null: this thread alone). With `carried`, the
  // previous band's last convolution row, the first of this band's first window, is not
  // computed again: its maxima are in `kept`. With `keep`, this band's last row's go there.
  auto run_band = [&](int64_t n, int64_t q0, int64_t q1, ThreadPool* inner, AlignedBuffer& in_buf,
                      AlignedBuffer& conv_buf, Carry& kept, bool carried, bool keep) {
    const int64_t w0 = q0 * p.stride_h - p.pad_h;  // first window row, in convolution rows
    carried = carried && w0 >= 0;
    const int64_t r0 = carried ? w0 + 1 : std::max<int64_t>(0, w0);
    const int64_t r1 =
        std::min(s.out_h, (q1 - 1) * p.stride_h - p.pad_h + (p.kernel_h - 1) * p.dilation_h + 1);
    const int64_t i0 = r0 * s.stride_h - s.pad_top;  // input rows they read
    const int64_t i1 = (r1 - 1) * s.stride_h - s.pad_top + reach + 1;
    const int64_t c0 = std::max<int64_t>(0, i0), c1 = std::min(s.in_h, i1);
    Conv2dShape b = s;
    b.batch = 1;
    b.in_h = c1 - c0;
    b.pad_top = c0 - i0;
    b.out_h = r1 - r0;
    float* conv_rows = conv_buf.get(s.out_channels * b.out_h * s.out_w);
    const float* band_input = input + n * s.in_channels * in_plane + c0 * s.in_w;
#if defined(NNX_STEM_CONV)
    if (conv_path(b, prepared != nullptr, weight != nullptr) == ConvPath::stem) {
      // The band's input rows read in place (the stem kernel copies them anyway).
      conv2d_stem(b, band_input, weight, prepared ? prepared->panels(b, weight, inner) : nullptr,
                  bias, conv_rows, inner, epilogue, in_plane);
    } else
#endif
    {
      float* rows = in_buf.get(s.in_channels * b.in_h * s.in_w);
      for (int64_t ic = 0; ic < s.in_channels; ++ic) {
        const float* src = band_input + ic * in_plane;
        std::copy(src, src + b.in_h * s.in_w, rows + ic * b.in_h * s.in_w);
      }
      conv2d(b, rows, weight, bias, conv_rows, inner, epilogue, prepared);
    }
    Pool2dShape q = p;
    q.planes = s.out_channels;
    q.in_h = b.out_h;
    q.pad_h = r0 - w0;  // the carried row as padding, put back below
    q.out_h = q1 - q0;
    // Pooled straight into the output's rows [q0, q1) of each plane.
    float* out = output + n * s.out_channels * pool_plane + q0 * p.out_w;
    max_pool2d(q, conv_rows, out, inner, pool_plane);
    if (carried) {
      const float* m = kept.maxima.get(s.out_channels * p.out_w);
      for (int64_t c = 0; c < s.out_channels; ++c) {
        float* o = out + c * pool_plane;
        const float* v = m + c * p.out_w;
        // NaN wins, as in max_pool2d.
        for (int64_t j = 0; j < p.out_w; ++j) o[j] = v[j] > o[j] || v[j] != v[j] ? v[j] : o[j];
      }
    }
    // The next band's first window row is this band's last row: its maxima across the windows'
    // columns (the pooling of a 1-row plane per channel).
    if (keep && r1 == q1 * p.stride_h - p.pad_h + 1) {
      float* row = kept.row.get(s.out_channels * s.out_w);
      for (int64_t c = 0; c < s.out_channels; ++c) {
        const float* src = conv_rows + (c * b.out_h + b.out_h - 1) * s.out_w;
        std::copy(src, src + s.out_w, row + c * s.out_w);
      }
      Pool2dShape h = p;
      h.planes = s.out_channels;
      h.in_h = h.out_h = 1;
      h.kernel_h = h.stride_h = h.dilation_h = 1;
      h.pad_h = 0;
      max_pool2d(h, row, kept.maxima.get(s.out_channels * p.out_w), inner);
      return true;
    }
    return false;
  };

  if (threads > 1 && tasks >= 2 * threads) {
    // Many bands: each thread runs whole bands on its own.
    parallel_for(pool, tasks, 1, [&](int64_t t0, int64_t t1) {
      thread_local AlignedBuffer in_buf, conv_buf;
      thread_local Carry kept;
      bool carried = false;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / bands, q0 = (t % bands) * band;
        const bool keep = carry && t + 1 < t1 && (t + 1) / bands == n;
        carried = run_band(n, q0, std::min(p.out_h, q0 + band), nullptr, in_buf, conv_buf, kept,
                           carried, keep);
      }
    });
    return;
  }
  static thread_local AlignedBuffer in_buf, conv_buf;
  static thread_local Carry kept;
  bool carried = false;
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t n = t / bands, q0 = (t % bands) * band;
    const bool keep = carry && t + 1 < tasks && (t + 1) / bands == n;
    carried =
        run_band(n, q0, std::min(p.out_h, q0 + band), pool, in_buf, conv_buf, kept, carried, keep);
  }
}

void conv2d_backward(const Conv2dShape& s, const float* input, const float* weight,
                     const float* grad_output, float* grad_input, float* grad_weight,
                     float* grad_bias, ThreadPool* pool) {
  const int64_t in_per_group = s.in_channels / s.groups;
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t taps = s.kernel_h * s.kernel_w;
  const int64_t k = in_per_group * taps;
  if (grad_bias != nullptr) {
    parallel_for(pool, s.out_channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t oc = begin; oc < end; ++oc) {
        double sum = 0;
        for (int64_t n = 0; n < s.batch; ++n) {
          const float* g = grad_output + (n * s.out_channels + oc) * out_plane;
          for (int64_t i = 0; i < out_plane; i += 4096)
            sum += sum_floats(g + i, std::min<int64_t>(4096, out_plane - i));
        }
        grad_bias[oc] = float(sum);
      }
    });
  }
  if (grad_input == nullptr && grad_weight == nullptr) return;
  if (s.batch == 0 || out_plane == 0) {
    if (grad_input) std::fill(grad_input, grad_input + s.batch * s.in_channels * in_plane, 0.f);
    if (grad_weight) std::fill(grad_weight, grad_weight + s.out_channels * k, 0.f);
    return;
  }
  const bool direct = in_per_group == 1 && out_per_group <= kDirectMaxMultiplier;
#if defined(NNX_INDIRECT_CONV)
  if (grad_input != nullptr && !direct &&
      conv2d_indirect_input_grad(s, weight, grad_output, grad_input, pool))
    grad_input = nullptr;
#endif
  if (grad_input != nullptr && (!direct || out_per_group == 1) &&
      input_gradient_as_convolution(s, weight, grad_output, grad_input, pool))
    grad_input = nullptr;
  if (grad_input == nullptr && grad_weight == nullptr) return;
#if defined(NNX_WINOGRAD_WEIGHT_GRAD)
  if (grad_weight != nullptr && winograd_weight_grad_suitable(s)) {
    conv2d_winograd_weight_grad(s, input, grad_output, grad_weight, pool);
    grad_weight = nullptr;
    if (grad_input == nullptr) return;
  }
#endif
#if defined(NNX_INDIRECT_CONV)
  if (grad_weight != nullptr && !direct && indirect_weight_grad_suitable(s)) {
    conv2d_indirect_weight_grad(s, input, grad_output, grad_weight, pool);
    grad_weight = nullptr;
    if (grad_input == nullptr) return;
  }
#endif
  if (direct)
    return conv2d_direct_backward(s, input, weight, grad_output, grad_input, grad_weight, pool);

  const bool pointwise = reads_input_in_place(s);
  const int64_t jobs = s.batch * s.groups;
  const int64_t threads = pool ? pool->size() : 1;
  const int64_t band_target = std::max(kMinBandColumns, kColumnTileFloats / k);
  const int64_t band_rows =
      pointwise ? s.out_h : std::clamp<int64_t>(ceil_div(band_target, s.out_w), 1, s.out_h);
  const int64_t bands = ceil_div(s.out_h, band_rows);

  // W^T per group, [k x out_per_group]: the A operand of grad_columns = W^T * grad_output.
  // Transposed in 16 x 16 blocks, over the threads: element by element, the writes strode
  // out_per_group floats apart, and a 512-channel 3x3 layer's transpose (1.2M floats) took a
  // quarter of its backward pass where the indirect convolution does not serve it (AVX2 builds).
  // The scratch below is this thread's and kept, so that a training step's steady state
  // allocates (and faults in) nothing here; the lambdas see it through locals.
  static thread_local AlignedBuffer weight_t_buffer;
  float* weight_t = nullptr;
  if (grad_input != nullptr) {
    weight_t = weight_t_buffer.get(s.groups * k * out_per_group);
    constexpr int64_t kBlock = 16;
    const int64_t row_blocks = ceil_div(out_per_group, kBlock);
    parallel_for(pool, s.groups * row_blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t g = b / row_blocks, m0 = b % row_blocks * kBlock;
        const int64_t m1 = std::min(out_per_group, m0 + kBlock);
        const float* w = weight + g * out_per_group * k;
        float* t = weight_t + g * k * out_per_group;
        for (int64_t j0 = 0; j0 < k; j0 += kBlock)
          for (int64_t j = j0; j < std::min(k, j0 + kBlock); ++j)
            for (int64_t m = m0; m < m1; ++m) t[j * out_per_group + m] = w[m * k + j];
      }
    });
  }
  auto group_input = [&](int64_t job) {
    return input + (job / s.groups * s.in_channels + job % s.groups * in_per_group) * in_plane;
  };
  auto group_grad_input = [&](int64_t job) {
    return grad_input + (job / s.groups * s.in_channels + job % s.groups * in_per_group) * in_plane;
  };
  auto group_grad_output = [&](int64_t job) {
    return grad_output +
           (job / s.groups * s.out_channels + job % s.groups * out_per_group) * out_plane;
  };
  const int64_t weight_floats = s.out_channels * k;

  if (s.batch > 1 && out_plane < kMinBandColumns) {
    // Small output planes: blocks of images side by side, so that grad_weight is read and
    // written once per block (not once per image) and the GEMMs get enough columns.
    const int64_t per_block = images_per_block(s), most = per_block * out_plane;
    static thread_local AlignedBuffer column_buffer, gy_buffer, grad_column_buffer;
    float* columns = grad_weight ? column_buffer.get(k * most) : nullptr;
    float* gy_block = gy_buffer.get(out_per_group * most);
    float* grad_columns = grad_input ? grad_column_buffer.get(k * most) : nullptr;
    for (int64_t g = 0; g < s.groups; ++g) {
      float* dw = grad_weight ? grad_weight + g * out_per_group * k : nullptr;
      const float* wt = grad_input ? weight_t + g * k * out_per_group : nullptr;
      for (int64_t n0 = 0; n0 < s.batch; n0 += per_block) {
        const int64_t n1 = std::min(s.batch, n0 + per_block), cols = (n1 - n0) * out_plane;
        parallel_for(pool, out_per_group, 16, [&](int64_t m0, int64_t m1) {
          for (int64_t m = m0; m < m1; ++m)
            for (int64_t n = n0; n < n1; ++n) {
              const float* src =
                  grad_output + (n * s.out_channels + g * out_per_group + m) * out_plane;
              std::copy(src, src + out_plane, gy_block + m * cols + (n - n0) * out_plane);
            }
        });
        if (dw) {
          im2col_images(s, input, g, n0, n1, columns, cols, pool);
          parallel_for(pool, ceil_div(out_per_group, 8), 1, [&](int64_t b0, int64_t b1) {
            const int64_t m0 = b0 * 8, m1 = std::min(out_per_group, b1 * 8);
            gemm(m1 - m0, k, cols, gy_block + m0 * cols, cols, columns, cols, true, dw + m0 * k, k,
                 n0 > 0);
          });
        }
        if (grad_input) {
          parallel_for(pool, ceil_div(k, 16), 1, [&](int64_t b0, int64_t b1) {
            const int64_t r0 = b0 * 16, r1 = std::min(k, b1 * 16);
            gemm(r1 - r0, cols, out_per_group, wt + r0 * out_per_group, out_per_group, gy_block,
                 cols, false, grad_columns + r0 * cols, cols, false);
          });
          parallel_for(pool, n1 - n0, 1, [&](int64_t i0, int64_t i1) {
            float* own = gradient_column_scratch(k * out_plane);
            for (int64_t i = i0; i < i1; ++i) {
              for (int64_t r = 0; r < k; ++r)
                std::copy(grad_columns + r * cols + i * out_plane,
                          grad_columns + r * cols + (i + 1) * out_plane, own + r * out_plane);
              float* gx = grad_input + ((n0 + i) * s.in_channels + g * in_per_group) * in_plane;
              std::fill(gx, gx + in_per_group * in_plane, 0.f);
              col2im_band(s, own, 0, s.out_h, 0, in_per_group, gx);
            }
          });
        }
      }
    }
    return;
  }

  if (threads == 1 || jobs >= 2 * threads || jobs % threads == 0) {
    // Each thread takes whole (image, group) jobs: its own grad_input planes, and a partial
    // grad_weight summed after.
    // A partial sum per chunk (the caller may run several chunks itself), in buffers of the
    // calling thread's that are kept across calls.
    static thread_local std::vector<AlignedBuffer> partial_kept;
    if (partial_kept.size() < size_t(threads)) partial_kept.resize(size_t(threads));
    std::vector<AlignedBuffer>& partial_buffers = partial_kept;  // the lambda runs elsewhere too
    std::vector<float*> partial(size_t(grad_weight ? threads : 0));
    std::atomic<int64_t> next_slot{0};
    parallel_for(pool, jobs, 1, [&](int64_t begin, int64_t end) {
      float* dw = nullptr;
      if (grad_weight != nullptr) {
        const int64_t slot = next_slot++;
        dw = partial_buffers[size_t(slot)].get(weight_floats);
        std::fill(dw, dw + weight_floats, 0.f);
        partial[size_t(slot)] = dw;
      }
      for (int64_t job = begin; job < end; ++job) {
        const int64_t g = job % s.groups;
        const float* x = grad_weight ? group_input(job) : nullptr;
        const float* gy = group_grad_output(job);
        float* gx = grad_input ? group_grad_input(job) : nullptr;
        float* dw_g = dw ? dw + g * out_per_group * k : nullptr;
        const float* wt = grad_input ? weight_t + g * k * out_per_group : nullptr;
        if (pointwise) {
          if (dw_g)
            gemm(out_per_group, k, out_plane, gy, out_plane, x, in_plane, true, dw_g, k, true);
          if (gx)
            gemm(k, out_plane, out_per_group, wt, out_per_group, gy, out_plane, false, gx, in_plane,
                 false);
          continue;
        }
        if (gx) std::fill(gx, gx + in_per_group * in_plane, 0.f);
        for (int64_t band = 0; band < bands; ++band) {
          const int64_t oh0 = band * band_rows, oh1 = std::min(s.out_h, oh0 + band_rows);
          const int64_t cols = (oh1 - oh0) * s.out_w;
          const float* gy_band = gy + oh0 * s.out_w;
          if (dw_g) {
            float* columns = column_scratch(k * cols);
            im2col_band(s, x, oh0, oh1, 0, in_per_group, columns);
            gemm(out_per_group, k, cols, gy_band, out_plane, columns, cols, true, dw_g, k, true);
          }
          if (gx) {
            float* grad_columns = gradient_column_scratch(k * cols);
            gemm(k, cols, out_per_group, wt, out_per_group, gy_band, out_plane, false, grad_columns,
                 cols, false);
            col2im_band(s, grad_columns, oh0, oh1, 0, in_per_group, gx);
          }
        }
      }
    });
    if (grad_weight != nullptr) {
      const int64_t used = next_slot.load();
      parallel_for(pool, weight_floats, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          float sum = 0.f;
          for (int64_t t = 0; t < used; ++t) sum += partial[size_t(t)][i];
          grad_weight[i] = sum;
        }
      });
    }
    return;
  }

  // Few jobs (batch 1): the threads share each band, splitting grad_weight by output channels
  // (or columns when few) and grad_input by input channels.
  if (grad_weight != nullptr) std::fill(grad_weight, grad_weight + weight_floats, 0.f);
  static thread_local AlignedBuffer band_column_buffer, band_grad_column_buffer;
  const int64_t most = k * band_rows * s.out_w;
  float* columns = grad_weight != nullptr && !pointwise ? band_column_buffer.get(most) : nullptr;
  float* grad_columns =
      grad_input != nullptr && !pointwise ? band_grad_column_buffer.get(most) : nullptr;
  for (int64_t job = 0; job < jobs; ++job) {
    const int64_t g = job % s.groups;
    const float* x = grad_weight ? group_input(job) : nullptr;
    const float* gy = group_grad_output(job);
    float* gx = grad_input ? group_grad_input(job) : nullptr;
    float* dw_g = grad_weight ? grad_weight + g * out_per_group * k : nullptr;
    const float* wt = grad_input ? weight_t + g * k * out_per_group : nullptr;
    if (gx && !pointwise) std::fill(gx, gx + in_per_group * in_plane, 0.f);
    for (int64_t band = 0; band < bands; ++band) {
      const int64_t oh0 = band * band_rows, oh1 = std::min(s.out_h, oh0 + band_rows);
      const int64_t cols = (oh1 - oh0) * s.out_w;
      const float* gy_band = gy + oh0 * s.out_w;
      if (dw_g) {
        const float* b = x;
        int64_t ldb = in_plane;
        if (!pointwise) {
          parallel_for(pool, in_per_group, 1, [&](int64_t ic0, int64_t ic1) {
            im2col_band(s, x, oh0, oh1, ic0, ic1, columns);
          });
          b = columns;
          ldb = cols;
        }
        if (out_per_group >= kGemmRowBlock * threads) {
          parallel_for(pool, ceil_div(out_per_group, kGemmRowBlock), 1,
                       [&](int64_t i0, int64_t i1) {
                         const int64_t m0 = i0 * kGemmRowBlock,
                                       m1 = std::min(out_per_group, i1 * kGemmRowBlock);
                         gemm(m1 - m0, k, cols, gy_band + m0 * out_plane, out_plane, b, ldb, true,
                              dw_g + m0 * k, k, true);
                       });
        } else {
          parallel_for(pool, ceil_div(k, kGemmColumnBlock), 1, [&](int64_t j0, int64_t j1) {
            const int64_t c0 = j0 * kGemmColumnBlock, c1 = std::min(k, j1 * kGemmColumnBlock);
            gemm(out_per_group, c1 - c0, cols, gy_band, out_plane, b + c0 * ldb, ldb, true,
                 dw_g + c0, k, true);
          });
        }
      }
      if (gx) {
        if (pointwise) {
          parallel_for(pool, in_per_group, 1, [&](int64_t ic0, int64_t ic1) {
            gemm(ic1 - ic0, cols, out_per_group, wt + ic0 * out_per_group, out_per_group, gy_band,
                 out_plane, false, gx + ic0 * in_plane, in_plane, false);
          });
        } else {
          parallel_for(pool, in_per_group, 1, [&](int64_t ic0, int64_t ic1) {
            gemm((ic1 - ic0) * taps, cols, out_per_group, wt + ic0 * taps * out_per_group,
                 out_per_group, gy_band, out_plane, false, grad_columns + ic0 * taps * cols, cols,
                 false);
            col2im_band(s, grad_columns, oh0, oh1, ic0, ic1, gx);
          });
        }
      }
    }
  }
}

namespace {

// Source index of each padded row and column as F.pad picks it; -1 reads as zero.
void pad_sources(PadMode mode, int64_t h, int64_t w, int64_t top, int64_t left, int64_t out_h,
                 int64_t out_w, std::vector<int64_t>& rows, std::vector<int64_t>& cols) {
  auto source = [mode](int64_t i, int64_t size) -> int64_t {
    if (i >= 0 && i < size) return i;
    switch (mode) {
      case PadMode::zeros:
        return -1;
      case PadMode::reflect:
        return i < 0 ? -i : 2 * (size - 1) - i;
      case PadMode::replicate:
        return i < 0 ? 0 : size - 1;
      case PadMode::circular:
        return ((i % size) + size) % size;
    }
    return -1;
  };
  rows.resize(size_t(out_h));
  cols.resize(size_t(out_w));
  for (int64_t r = 0; r < out_h; ++r) rows[r] = source(r - top, h);
  for (int64_t c = 0; c < out_w; ++c) cols[c] = source(c - left, w);
}

}  // namespace

void pad2d(PadMode mode, const float* input, int64_t planes, int64_t h, int64_t w, int64_t top,
           int64_t bottom, int64_t left, int64_t right, float* output, ThreadPool* pool) {
  const int64_t out_h = h + top + bottom, out_w = w + left + right;
  std::vector<int64_t> rows, cols;
  pad_sources(mode, h, w, top, left, out_h, out_w, rows, cols);
  parallel_for(pool, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* in = input + p * h * w;
      float* out = output + p * out_h * out_w;
      for (int64_t r = 0; r < out_h; ++r, out += out_w) {
        if (rows[r] < 0) {
          std::fill(out, out + out_w, 0.f);
          continue;
        }
        const float* in_row = in + rows[r] * w;
        for (int64_t c = 0; c < out_w; ++c) out[c] = cols[c] < 0 ? 0.f : in_row[cols[c]];
      }
    }
  });
}

void pad2d_backward(PadMode mode, const float* grad_output, int64_t planes, int64_t h, int64_t w,
                    int64_t top, int64_t bottom, int64_t left, int64_t right, float* grad_input,
                    ThreadPool* pool) {
  const int64_t out_h = h + top + bottom, out_w = w + left + right;
  std::vector<int64_t> rows, cols;
  pad_sources(mode, h, w, top, left, out_h, out_w, rows, cols);
  parallel_for(pool, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* g = grad_output + p * out_h * out_w;
      float* in = grad_input + p * h * w;
      std::fill(in, in + h * w, 0.f);
      for (int64_t r = 0; r < out_h; ++r, g += out_w) {
        if (rows[r] < 0) continue;
        float* in_row = in + rows[r] * w;
        for (int64_t c = 0; c < out_w; ++c)
          if (cols[c] >= 0) in_row[cols[c]] += g[c];
      }
    }
  });
}

}  // namespace nnx::cpu
