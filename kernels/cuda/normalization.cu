// Normalisation and affine maps on CUDA (see normalization.h). Reductions accumulate in double,
// as the CPU kernels do, so that the statistics agree to far below fp32 rounding.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/normalization.h"

namespace nnx::cuda {
namespace {

constexpr int kWarp = 32;

__global__ void channel_affine_kernel(const float* x, const float* scale, const float* shift,
                                      float* y, int64_t channels, int64_t plane, int64_t n) {
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t c = (i / plane) % channels;
    y[i] = shift != nullptr ? x[i] * scale[c] + shift[c] : x[i] * scale[c];
  });
}

// One warp per row: two passes in double for the statistics, then the map.
__global__ void layer_norm_kernel(const float* x, int64_t rows, int64_t n, const float* weight,
                                  const float* bias, float eps, float* y) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t first = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / kWarp;
  const int64_t step = int64_t(gridDim.x) * warps_per_block;
  for (int64_t r = first; r < rows; r += step) {
    const float* in = x + r * n;
    float* out = y + r * n;
    double sum = 0;
    for (int64_t i = lane; i < n; i += kWarp) sum += in[i];
    const double mean = __shfl_sync(0xffffffffu, warp_sum(sum), 0) / double(n);
    double sq = 0;
    for (int64_t i = lane; i < n; i += kWarp) {
      const double d = double(in[i]) - mean;
      sq += d * d;
    }
    sq = __shfl_sync(0xffffffffu, warp_sum(sq), 0);
    const float inv_std = float(1.0 / sqrt(sq / double(n) + double(eps)));
    const float m = float(mean);
    for (int64_t i = lane; i < n; i += kWarp) {
      float v = (in[i] - m) * inv_std;
      if (weight != nullptr) v *= weight[i];
      if (bias != nullptr) v += bias[i];
      out[i] = v;
    }
  }
}

struct AffineFn {
  float scale, shift;
  __device__ float operator()(float v) const { return v * scale + shift; }
};

}  // namespace

void channel_affine(const float* x, const float* scale, const float* shift, float* y, int64_t batch,
                    int64_t channels, int64_t plane, void* stream) {
  const int64_t n = batch * channels * plane;
  if (n <= 0) return;
  channel_affine_kernel<<<grid_for(n), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      x, scale, shift, y, channels, plane, n);
  NNX_CUDA_CHECK_LAUNCH();
}

void layer_norm(const float* x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, float* y, void* stream) {
  if (rows <= 0 || n <= 0) return;
  // One warp per row: blocks of kBlockSize / 32 rows.
  layer_norm_kernel<<<grid_for(rows * kWarp), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      x, rows, n, weight, bias, eps, y);
  NNX_CUDA_CHECK_LAUNCH();
}

void affine(const float* x, int64_t n, float scale, float shift, float* y, void* stream) {
  launch_elementwise(x, y, n, AffineFn{scale, shift}, static_cast<cudaStream_t>(stream));
}

}  // namespace nnx::cuda
