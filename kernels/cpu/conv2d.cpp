// CPU 2-D convolution (see conv2d.h). The general path lowers one group of one image, a band of
// output rows at a time, to a GEMM: weights [ocg x k] times im2col columns [k x band]. With
// enough bands each is one task of the thread pool; otherwise the threads share each band. Either
// way every GEMM call is single-threaded (kernels/cpu/gemm.h).
#include "kernels/cpu/conv2d.h"

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/winograd.h"
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
// Depthwise-like convolutions (one input channel per group) with at most this many outputs
// per group run the direct loop: as a GEMM they would have 1..4 rows and waste the kernel.
constexpr int64_t kDirectMaxMultiplier = 4;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

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
        const Span span = valid_columns(offset, s.stride_w, s.in_w, s.out_w);
        float* out = dst;
        for (int64_t oh = oh0; oh < oh1; ++oh, out += s.out_w) {
          const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
          if (ih < 0 || ih >= s.in_h) {
            std::fill(out, out + s.out_w, 0.f);
            continue;
          }
          const float* row = plane + ih * s.in_w;
          std::fill(out, out + span.lo, 0.f);
          if (s.stride_w == 1) {
            std::copy(row + (span.lo + offset), row + (span.hi + offset), out + span.lo);
          } else {
            for (int64_t ow = span.lo; ow < span.hi; ++ow) out[ow] = row[ow * s.stride_w + offset];
          }
          std::fill(out + span.hi, out + s.out_w, 0.f);
        }
      }
    }
  }
}

// One output plane of a convolution whose groups each read a single input plane.
void direct_plane(const Conv2dShape& s, const float* in, const float* w, float bias, float* out) {
  for (int64_t oh = 0; oh < s.out_h; ++oh) {
    float* out_row = out + oh * s.out_w;
    std::fill(out_row, out_row + s.out_w, bias);
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
      if (ih < 0 || ih >= s.in_h) continue;
      const float* in_row = in + ih * s.in_w;
      for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
        const float tap = w[kh * s.kernel_w + kw];
        const int64_t offset = kw * s.dilation_w - s.pad_left;
        const Span span = valid_columns(offset, s.stride_w, s.in_w, s.out_w);
        if (s.stride_w == 1) {
          const float* src = in_row + (span.lo + offset);
          for (int64_t ow = span.lo; ow < span.hi; ++ow) out_row[ow] += tap * *src++;
        } else {
          for (int64_t ow = span.lo; ow < span.hi; ++ow)
            out_row[ow] += tap * in_row[ow * s.stride_w + offset];
        }
      }
    }
  }
}

void conv2d_direct(const Conv2dShape& s, const float* input, const float* weight, const float* bias,
                   float* output, ThreadPool* pool) {
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t taps = s.kernel_h * s.kernel_w;
  parallel_for(pool, s.batch * s.out_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.out_channels, oc = plane % s.out_channels;
      const int64_t ic = oc / out_per_group;
      direct_plane(s, input + (n * s.in_channels + ic) * in_plane, weight + oc * taps,
                   bias ? bias[oc] : 0.f, output + plane * out_plane);
    }
  });
}

// NNX_CONV_WINOGRAD=0 in the environment turns the Winograd path off, for measuring against it.
bool winograd_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("NNX_CONV_WINOGRAD");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return enabled;
}

}  // namespace

void conv2d(const Conv2dShape& s, const float* input, const float* weight, const float* bias,
            float* output, ThreadPool* pool) {
  const int64_t in_per_group = s.in_channels / s.groups;
  const int64_t out_per_group = s.out_channels / s.groups;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  if (s.batch == 0 || s.out_channels == 0 || out_plane == 0) return;
  if (in_per_group == 1 && out_per_group <= kDirectMaxMultiplier)
    return conv2d_direct(s, input, weight, bias, output, pool);
  if (winograd_suitable(s) && winograd_enabled())
    return conv2d_winograd(s, input, weight, bias, output, pool);

  const bool pointwise = s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 &&
                         s.pad_top == 0 && s.pad_left == 0 && s.out_h == s.in_h &&
                         s.out_w == s.in_w;
  const int64_t k = in_per_group * s.kernel_h * s.kernel_w;
  const int64_t jobs = s.batch * s.groups;
  const int64_t threads = pool ? pool->size() : 1;

  // Bands of output rows: wide enough that packing the weights is amortised, narrow enough that
  // the im2col scratch stays near L2 (a plain GEMM reads the input in place: one band).
  const int64_t band_target = std::max(kMinBandColumns, kColumnTileFloats / k);
  const int64_t band_rows =
      pointwise ? s.out_h : std::clamp<int64_t>(ceil_div(band_target, s.out_w), 1, s.out_h);
  const int64_t bands = ceil_div(s.out_h, band_rows);

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
  auto multiply = [&](const Band& b, const float* columns, int64_t ldb, int64_t m0, int64_t m1,
                      int64_t c0, int64_t c1) {
    float* out = b.output + m0 * out_plane + c0;
    if (b.bias != nullptr) {
      for (int64_t m = m0; m < m1; ++m)
        std::fill(out + (m - m0) * out_plane, out + (m - m0) * out_plane + (c1 - c0), b.bias[m]);
    }
    gemm(m1 - m0, c1 - c0, k, b.weight + m0 * k, k, columns + c0, ldb, false, out, out_plane,
         b.bias != nullptr);
  };

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
    if (out_per_group >= kGemmRowBlock * threads) {
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

void pad2d(PadMode mode, const float* input, int64_t planes, int64_t h, int64_t w, int64_t top,
           int64_t bottom, int64_t left, int64_t right, float* output, ThreadPool* pool) {
  const int64_t out_h = h + top + bottom, out_w = w + left + right;
  // Source index of each padded row and column; -1 reads as zero.
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
  std::vector<int64_t> rows(static_cast<size_t>(out_h)), cols(static_cast<size_t>(out_w));
  for (int64_t r = 0; r < out_h; ++r) rows[r] = source(r - top, h);
  for (int64_t c = 0; c < out_w; ++c) cols[c] = source(c - left, w);
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

}  // namespace nnx::cpu
