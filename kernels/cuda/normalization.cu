// Normalisation and affine maps on CUDA (see normalization.h). Reductions accumulate in double,
// as the CPU kernels do, so that the statistics agree to far below fp32 rounding.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/normalization.h"

namespace nnx::cuda {
namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;  // complete in lane 0
}

// The sum over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
__device__ double block_sum(double v) {
  __shared__ double partial[kWarp];
  __shared__ double total;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / kWarp;
    double s = lane < warps ? partial[lane] : 0.0;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  const double result = total;
  __syncthreads();  // partial and total may be reused by a following call
  return result;
}

__global__ void channel_affine_kernel(const float* x, const float* scale, const float* shift,
                                      float* y, int64_t channels, int64_t plane, int64_t n) {
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t c = (i / plane) % channels;
    y[i] = shift != nullptr ? x[i] * scale[c] + shift[c] : x[i] * scale[c];
  });
}

// One block per channel: its moments over the batch, then its scale and shift.
__global__ void batch_stats_kernel(const float* x, const float* gamma, const float* beta,
                                   double eps, int64_t batch, int64_t channels, int64_t plane,
                                   float* scale, float* shift) {
  const int64_t c = blockIdx.x;
  const int64_t count = batch * plane;
  double sum = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t n = k / plane, i = k % plane;
    sum += x[(n * channels + c) * plane + i];
  }
  const double mean = block_sum(sum) / double(count);
  const float mean_f = float(mean);
  double squares = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t n = k / plane, i = k % plane;
    const float d = x[(n * channels + c) * plane + i] - mean_f;
    squares += double(d) * double(d);
  }
  const double variance = block_sum(squares) / double(count);
  if (threadIdx.x == 0) {
    const double inv_std = 1.0 / sqrt(variance + eps);
    const double g = gamma != nullptr ? double(gamma[c]) : 1.0;
    const double b = beta != nullptr ? double(beta[c]) : 0.0;
    scale[c] = float(inv_std * g);
    shift[c] = float(b - mean * inv_std * g);
  }
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

void batch_norm_batch_stats(const float* x, const float* gamma, const float* beta, double eps,
                            int64_t batch, int64_t channels, int64_t plane, float* scale_shift,
                            float* y, void* stream) {
  if (channels <= 0 || batch * plane <= 0) return;
  float* scale = scale_shift;
  float* shift = scale_shift + channels;
  batch_stats_kernel<<<unsigned(channels), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      x, gamma, beta, eps, batch, channels, plane, scale, shift);
  NNX_CUDA_CHECK_LAUNCH();
  channel_affine(x, scale, shift, y, batch, channels, plane, stream);
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
