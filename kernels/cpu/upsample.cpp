// CPU 2-D resampling (see upsample.h). Each axis is reduced to a table of source indices and
// weights, computed with the same float/double conversions as PyTorch's CPU kernels so that
// index choices at exact boundaries agree; the planes then gather through the tables.
#include "kernels/cpu/upsample.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "nnx/thread_pool.h"

namespace nnx::cpu {

namespace {

// Source indices and weights of every output index along one axis, `taps` per output.
struct AxisTable {
  int taps = 1;
  std::vector<int64_t> index;
  std::vector<float> weight;
};

// Output-to-input coordinate scale.
float coordinate_scale(int64_t in, int64_t out, bool align_corners, double scale_factor) {
  if (align_corners) return out > 1 ? float(in - 1) / float(out - 1) : 0.f;
  return scale_factor > 0 ? float(1.0 / scale_factor) : float(in) / float(out);
}

// Fractional source coordinate of output index i (half-pixel centres unless align_corners).
float source_coordinate(float scale, int64_t i, bool align_corners, bool clamp_negative) {
  if (align_corners) return scale * float(i);
  const float x = float(double(scale) * (double(i) + 0.5) - 0.5);
  return clamp_negative && x < 0 ? 0.f : x;
}

void cubic_weights(float t, float w[4]) {
  constexpr float a = -0.75f;
  auto near = [](float x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };       // |x| <= 1
  auto far = [](float x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };  // 1 < |x| < 2
  w[0] = far(t + 1.f);
  w[1] = near(t);
  w[2] = near(1.f - t);
  w[3] = far(2.f - t);
}

AxisTable axis_table(ResampleMode mode, bool align_corners, int64_t in, int64_t out,
                     double scale_factor) {
  AxisTable t;
  t.taps = mode == ResampleMode::bilinear ? 2 : mode == ResampleMode::bicubic ? 4 : 1;
  t.index.resize(size_t(out * t.taps));
  t.weight.resize(size_t(out * t.taps), 1.f);
  const float scale = coordinate_scale(in, out, align_corners, scale_factor);
  for (int64_t i = 0; i < out; ++i) {
    int64_t* index = &t.index[size_t(i * t.taps)];
    float* weight = &t.weight[size_t(i * t.taps)];
    switch (mode) {
      case ResampleMode::nearest: {
        // PyTorch maps an unchanged or exactly doubled size by index arithmetic, whatever the
        // scale factor handed down says.
        if (out == in) {
          index[0] = i;
        } else if (out == 2 * in) {
          index[0] = i / 2;
        } else {
          index[0] = std::min(int64_t(std::floor(float(i) * scale)), in - 1);
        }
        break;
      }
      case ResampleMode::nearest_exact: {
        const float x = source_coordinate(scale, i, false, true);
        const int64_t src = int64_t(std::floor(float(double(x) + 0.5)));
        index[0] = std::min(src, in - 1);
        break;
      }
      case ResampleMode::bilinear: {
        if (in == out) {  // PyTorch copies when the size is unchanged, whatever the scale
          index[0] = index[1] = i;
          weight[0] = 1.f;
          weight[1] = 0.f;
          break;
        }
        const float x = source_coordinate(scale, i, align_corners, true);
        const int64_t i0 = int64_t(x);
        const float lambda = std::clamp(x - float(i0), 0.f, 1.f);
        index[0] = i0;
        index[1] = i0 + (i0 < in - 1 ? 1 : 0);
        weight[0] = 1.f - lambda;
        weight[1] = lambda;
        break;
      }
      case ResampleMode::bicubic: {
        const float x = source_coordinate(scale, i, align_corners, false);
        const int64_t i0 = int64_t(std::floor(x));
        cubic_weights(x - float(i0), weight);
        for (int j = 0; j < 4; ++j) index[j] = std::clamp<int64_t>(i0 - 1 + j, 0, in - 1);
        break;
      }
    }
  }
  return t;
}

// Nearest: a gather through the tables.
void nearest_plane(const AxisTable& rows, const AxisTable& cols, const float* in, int64_t in_w,
                   float* out, int64_t out_h, int64_t out_w) {
  for (int64_t oh = 0; oh < out_h; ++oh, out += out_w) {
    if (oh > 0 && rows.index[size_t(oh)] == rows.index[size_t(oh - 1)]) {
      std::copy(out - out_w, out, out);  // upsampling repeats rows: copy the one just made
      continue;
    }
    const float* src = in + rows.index[size_t(oh)] * in_w;
    for (int64_t ow = 0; ow < out_w; ++ow) out[ow] = src[cols.index[size_t(ow)]];
  }
}

// Interpolating modes, separably: each input row that some output row reads is resampled
// along its width into `scratch` ([in_h, out_w]) once, then output rows blend those rows. This
// is also PyTorch's order of operations: (x00 w0 + x01 w1) h0 + (x10 w0 + x11 w1) h1.
template <int Taps>
void interpolate_plane(const AxisTable& rows, const AxisTable& cols,
                       const std::vector<char>& rows_read, const float* in, int64_t in_h,
                       int64_t in_w, float* out, int64_t out_h, int64_t out_w, float* scratch) {
  for (int64_t r = 0; r < in_h; ++r) {
    if (!rows_read[size_t(r)]) continue;
    const float* src = in + r * in_w;
    float* dst = scratch + r * out_w;
    for (int64_t ow = 0; ow < out_w; ++ow) {
      const int64_t* index = &cols.index[size_t(ow * Taps)];
      const float* weight = &cols.weight[size_t(ow * Taps)];
      float value = 0.f;
      for (int j = 0; j < Taps; ++j) value += src[index[j]] * weight[j];
      dst[ow] = value;
    }
  }
  for (int64_t oh = 0; oh < out_h; ++oh, out += out_w) {
    const int64_t* index = &rows.index[size_t(oh * Taps)];
    const float* weight = &rows.weight[size_t(oh * Taps)];
    const float* src[Taps];
    for (int i = 0; i < Taps; ++i) src[i] = scratch + index[i] * out_w;
    for (int64_t ow = 0; ow < out_w; ++ow) {
      float value = 0.f;
      for (int i = 0; i < Taps; ++i) value += src[i][ow] * weight[i];
      out[ow] = value;
    }
  }
}

}  // namespace

void resample2d(ResampleMode mode, bool align_corners, const Resample2dShape& s, const float* input,
                float* output, ThreadPool* pool) {
  const AxisTable rows = axis_table(mode, align_corners, s.in_h, s.out_h, s.scale_factor_h);
  const AxisTable cols = axis_table(mode, align_corners, s.in_w, s.out_w, s.scale_factor_w);
  std::vector<char> rows_read(static_cast<size_t>(s.in_h), 0);
  for (int64_t index : rows.index) rows_read[size_t(index)] = 1;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, out_plane));
  parallel_for(pool, s.planes, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
    if (rows.taps > 1) scratch.resize(size_t(s.in_h * s.out_w));
    for (int64_t p = begin; p < end; ++p) {
      const float* in = input + p * in_plane;
      float* out = output + p * out_plane;
      switch (mode) {
        case ResampleMode::nearest:
        case ResampleMode::nearest_exact:
          nearest_plane(rows, cols, in, s.in_w, out, s.out_h, s.out_w);
          break;
        case ResampleMode::bilinear:
          interpolate_plane<2>(rows, cols, rows_read, in, s.in_h, s.in_w, out, s.out_h, s.out_w,
                               scratch.data());
          break;
        case ResampleMode::bicubic:
          interpolate_plane<4>(rows, cols, rows_read, in, s.in_h, s.in_w, out, s.out_h, s.out_w,
                               scratch.data());
          break;
      }
    }
  });
}

void resample2d_backward(ResampleMode mode, bool align_corners, const Resample2dShape& s,
                         const float* grad_output, float* grad_input, ThreadPool* pool) {
  // PyTorch's bicubic backward copies when the size is unchanged (its forward interpolates).
  if (mode == ResampleMode::bicubic && s.in_h == s.out_h && s.in_w == s.out_w) {
    std::copy(grad_output, grad_output + s.planes * s.in_h * s.in_w, grad_input);
    return;
  }
  const AxisTable rows = axis_table(mode, align_corners, s.in_h, s.out_h, s.scale_factor_h);
  const AxisTable cols = axis_table(mode, align_corners, s.in_w, s.out_w, s.scale_factor_w);
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, out_plane));
  parallel_for(pool, s.planes, grain, [&](int64_t begin, int64_t end) {
    // Separably: output rows onto the input rows they read ([in_h, out_w]), then columns.
    std::vector<float> scratch(size_t(s.in_h * s.out_w));
    for (int64_t p = begin; p < end; ++p) {
      const float* g = grad_output + p * out_plane;
      float* gin = grad_input + p * in_plane;
      std::fill(scratch.begin(), scratch.end(), 0.f);
      for (int64_t oh = 0; oh < s.out_h; ++oh) {
        const float* g_row = g + oh * s.out_w;
        for (int i = 0; i < rows.taps; ++i) {
          const float w = rows.weight[size_t(oh * rows.taps + i)];
          float* dst = scratch.data() + rows.index[size_t(oh * rows.taps + i)] * s.out_w;
          for (int64_t ow = 0; ow < s.out_w; ++ow) dst[ow] += w * g_row[ow];
        }
      }
      std::fill(gin, gin + in_plane, 0.f);
      for (int64_t r = 0; r < s.in_h; ++r) {
        const float* src = scratch.data() + r * s.out_w;
        float* dst = gin + r * s.in_w;
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          for (int j = 0; j < cols.taps; ++j)
            dst[cols.index[size_t(ow * cols.taps + j)]] +=
                cols.weight[size_t(ow * cols.taps + j)] * src[ow];
        }
      }
    }
  });
}

}  // namespace nnx::cpu
