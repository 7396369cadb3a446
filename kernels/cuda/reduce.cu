// Mean on CUDA: a warp per output when the reduced elements are contiguous (inner == 1, global
// pooling), else a thread per output walking the reduced dimension with stride inner.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.h"

namespace nnx::cuda {
namespace {

constexpr int kWarp = 32;

__global__ void mean_rows_kernel(const float* x, int64_t rows, int64_t reduced, float* y) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t first = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / kWarp;
  const int64_t step = int64_t(gridDim.x) * warps_per_block;
  const double scale = 1.0 / double(reduced);
  for (int64_t r = first; r < rows; r += step) {
    const float* row = x + r * reduced;
    double sum = 0;
    for (int64_t i = lane; i < reduced; i += kWarp) sum += row[i];
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) y[r] = float(sum * scale);
  }
}

__global__ void mean_strided_kernel(const float* x, int64_t outer, int64_t reduced, int64_t inner,
                                    float* y) {
  const double scale = 1.0 / double(reduced);
  grid_stride_loop(outer * inner, [&](int64_t t) {
    const int64_t o = t / inner, j = t % inner;
    const float* src = x + o * reduced * inner + j;
    double sum = 0;
    for (int64_t r = 0; r < reduced; ++r) sum += src[r * inner];
    y[t] = float(sum * scale);
  });
}

__global__ void fill_kernel(float* y, int64_t n, float value) {
  grid_stride_loop(n, [&](int64_t i) { y[i] = value; });
}

}  // namespace

void mean_middle(const float* x, int64_t outer, int64_t reduced, int64_t inner, float* y,
                 void* stream_handle) {
  const int64_t n = outer * inner;
  if (n <= 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (reduced == 0) {
    fill_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(y, n, NAN);
  } else if (inner == 1) {
    mean_rows_kernel<<<grid_for(outer * kWarp), kBlockSize, 0, stream>>>(x, outer, reduced, y);
  } else {
    mean_strided_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(x, outer, reduced, inner, y);
  }
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
