// 2-D resampling on CUDA: one thread per output element works out its source rows and columns
// and their weights (up to 4 each) exactly as the CPU's axis tables do, with rounding
// intrinsics where the CPU rounds each step (nvcc would otherwise fuse them into an FMA and move
// a boundary), and blends rows of column blends in the CPU's order.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/upsample.h"

namespace nnx::cuda {
namespace {

// Output-to-input coordinate scale, on the host as on the CPU.
float coordinate_scale(int64_t in, int64_t out, bool align_corners, double scale_factor) {
  if (align_corners) return out > 1 ? float(in - 1) / float(out - 1) : 0.f;
  return scale_factor > 0 ? float(1.0 / scale_factor) : float(in) / float(out);
}

__device__ __forceinline__ float source_coordinate(float scale, int64_t i, bool align_corners,
                                                   bool clamp_negative) {
  if (align_corners) return __fmul_rn(scale, float(i));
  const float x = float(__dsub_rn(__dmul_rn(double(scale), double(i) + 0.5), 0.5));
  return clamp_negative && x < 0 ? 0.f : x;
}

__device__ __forceinline__ int64_t clamp_index(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

// Source indices and weights of output index i along one axis; returns the number of taps.
__device__ int axis_taps(ResampleMode mode, bool align_corners, float scale, int64_t in,
                         int64_t out, int64_t i, int64_t index[4], float weight[4]) {
  switch (mode) {
    case ResampleMode::nearest:
      if (out == in)
        index[0] = i;
      else if (out == 2 * in)
        index[0] = i / 2;
      else
        index[0] = min(int64_t(floorf(__fmul_rn(float(i), scale))), in - 1);
      weight[0] = 1.f;
      return 1;
    case ResampleMode::nearest_exact: {
      const float x = source_coordinate(scale, i, false, true);
      index[0] = min(int64_t(floorf(float(__dadd_rn(double(x), 0.5)))), in - 1);
      weight[0] = 1.f;
      return 1;
    }
    case ResampleMode::bilinear: {
      if (in == out) {  // PyTorch copies when the size is unchanged, whatever the scale
        index[0] = index[1] = i;
        weight[0] = 1.f;
        weight[1] = 0.f;
        return 2;
      }
      const float x = source_coordinate(scale, i, align_corners, true);
      const int64_t i0 = int64_t(x);
      const float lambda = fminf(fmaxf(x - float(i0), 0.f), 1.f);
      index[0] = i0;
      index[1] = i0 + (i0 < in - 1 ? 1 : 0);
      weight[0] = 1.f - lambda;
      weight[1] = lambda;
      return 2;
    }
    case ResampleMode::bicubic: {
      const float x = source_coordinate(scale, i, align_corners, false);
      const int64_t i0 = int64_t(floorf(x));
      const float t = x - float(i0);
      constexpr float a = -0.75f;
      auto near = [](float v) { return ((a + 2) * v - (a + 3)) * v * v + 1; };
      auto far = [](float v) { return ((a * v - 5 * a) * v + 8 * a) * v - 4 * a; };
      weight[0] = far(t + 1.f);
      weight[1] = near(t);
      weight[2] = near(1.f - t);
      weight[3] = far(2.f - t);
      for (int j = 0; j < 4; ++j) index[j] = clamp_index(i0 - 1 + j, 0, in - 1);
      return 4;
    }
  }
  return 0;
}

__global__ void resample2d_kernel(ResampleMode mode, bool align_corners, Resample2dGeometry g,
                                  float scale_h, float scale_w, const float* x, float* y) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t ow = i % g.out_w;
    const int64_t oh = (i / g.out_w) % g.out_h;
    const int64_t p = i / (g.out_w * g.out_h);
    int64_t rows[4], cols[4];
    float row_weight[4], col_weight[4];
    const int row_taps =
        axis_taps(mode, align_corners, scale_h, g.in_h, g.out_h, oh, rows, row_weight);
    const int col_taps =
        axis_taps(mode, align_corners, scale_w, g.in_w, g.out_w, ow, cols, col_weight);
    const float* plane = x + p * g.in_h * g.in_w;
    float value = 0.f;
    for (int a = 0; a < row_taps; ++a) {
      const float* src = plane + rows[a] * g.in_w;
      float row_value = 0.f;
      for (int b = 0; b < col_taps; ++b) row_value += src[cols[b]] * col_weight[b];
      value += row_value * row_weight[a];
    }
    y[i] = value;
  });
}

}  // namespace

void resample2d(ResampleMode mode, bool align_corners, const Resample2dGeometry& g, const float* x,
                float* y, void* stream) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  if (n <= 0) return;
  const float scale_h = coordinate_scale(g.in_h, g.out_h, align_corners, g.scale_factor_h);
  const float scale_w = coordinate_scale(g.in_w, g.out_w, align_corners, g.scale_factor_w);
  resample2d_kernel<<<grid_for(n), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      mode, align_corners, g, scale_h, scale_w, x, y);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
