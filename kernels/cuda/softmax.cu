// Softmax on CUDA: a warp per row when the reduced dimension is contiguous (inner == 1), else a
// thread per (outer, inner) position walking the dimension with stride inner, which keeps the
// reads of neighbouring threads together.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/softmax.h"

namespace nnx::cuda {
namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;  // in every lane
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;  // in every lane
}

__global__ void softmax_rows_kernel(const float* x, float* y, int64_t rows, int64_t dim, bool log) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t first = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / kWarp;
  const int64_t step = int64_t(gridDim.x) * warps_per_block;
  for (int64_t r = first; r < rows; r += step) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float max = -INFINITY;
    for (int64_t c = lane; c < dim; c += kWarp) max = fmaxf(max, xr[c]);
    max = warp_max(max);
    float sum = 0.0f;
    for (int64_t c = lane; c < dim; c += kWarp) sum += expf(xr[c] - max);
    sum = warp_sum(sum);
    if (log) {
      const float shift = max + logf(sum);
      for (int64_t c = lane; c < dim; c += kWarp) yr[c] = xr[c] - shift;
    } else {
      const float scale = 1.0f / sum;
      for (int64_t c = lane; c < dim; c += kWarp) yr[c] = expf(xr[c] - max) * scale;
    }
  }
}

__global__ void softmax_strided_kernel(const float* x, float* y, int64_t outer, int64_t dim,
                                       int64_t inner, bool log) {
  grid_stride_loop(outer * inner, [&](int64_t t) {
    const int64_t o = t / inner, j = t % inner;
    const float* xs = x + o * dim * inner + j;
    float* ys = y + o * dim * inner + j;
    float max = -INFINITY;
    for (int64_t c = 0; c < dim; ++c) max = fmaxf(max, xs[c * inner]);
    float sum = 0.0f;
    for (int64_t c = 0; c < dim; ++c) sum += expf(xs[c * inner] - max);
    if (log) {
      const float shift = max + logf(sum);
      for (int64_t c = 0; c < dim; ++c) ys[c * inner] = xs[c * inner] - shift;
    } else {
      const float scale = 1.0f / sum;
      for (int64_t c = 0; c < dim; ++c) ys[c * inner] = expf(xs[c * inner] - max) * scale;
    }
  });
}

}  // namespace

void softmax(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log,
             void* stream_handle) {
  if (outer <= 0 || dim <= 0 || inner <= 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (inner == 1) {
    softmax_rows_kernel<<<grid_for(outer * kWarp), kBlockSize, 0, stream>>>(x, y, outer, dim, log);
  } else {
    softmax_strided_kernel<<<grid_for(outer * inner), kBlockSize, 0, stream>>>(x, y, outer, dim,
                                                                               inner, log);
  }
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
