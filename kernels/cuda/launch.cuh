// Launch helpers shared by the CUDA kernels: grid sizing for grid-stride loops and elementwise
// maps over contiguous float32 buffers, with 16-byte loads and stores where the buffers allow.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "runtime/cuda/cuda_check.h"

namespace nnx::cuda {

inline constexpr int kBlockSize = 256;

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Multiprocessors of the current device, asked once per device.
inline int multiprocessor_count() {
  constexpr int kCached = 64;
  static std::atomic<int> cached[kCached] = {};
  int device = 0;
  NNX_CUDA_CHECK(cudaGetDevice(&device));
  if (device < kCached) {
    if (int count = cached[device].load(std::memory_order_relaxed)) return count;
  }
  int count = 0;
  NNX_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (device < kCached) cached[device].store(count, std::memory_order_relaxed);
  return count;
}

// Blocks for a grid-stride loop over `work` items: one item per thread for small work; for
// large work, twice what fits on the device at once (2048 threads per multiprocessor on Ampere
// and Hopper), so that a straggling block does not idle a multiprocessor and no time goes to
// scheduling blocks that each do a few items.
inline unsigned grid_for(int64_t work, int block = kBlockSize) {
  const int64_t cap = int64_t(multiprocessor_count()) * (2048 / block) * 2;
  return unsigned(std::max<int64_t>(1, std::min(ceil_div(work, block), cap)));
}

// Calls f(i) for every i in [0, n) spread over the whole grid.
template <class Index, class F>
__device__ __forceinline__ void grid_stride_loop(Index n, F&& f) {
  const Index stride = Index(blockDim.x) * gridDim.x;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

// Sums across a warp (complete in lane 0) and across a block (blockDim.x a multiple of 32, at
// most 1024; returned to every thread, which must all call it), in double.
__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}
__device__ inline double block_sum(double v) {
  __shared__ double partial[32];
  __shared__ double total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double s = lane < int(blockDim.x / 32) ? partial[lane] : 0.0;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  const double result = total;
  __syncthreads();  // partial and total may be reused by a following call
  return result;
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

namespace detail {

// Elements [0, 4 * n4) as float4; the last n % 4 go to the first threads, one each.
template <class F>
__global__ void map_unary_vec4(const float* x, float* y, int64_t n, F f) {
  const int64_t n4 = n / 4;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  grid_stride_loop(n4, [&](int64_t i) {
    float4 v = x4[i];
    v.x = f(v.x);
    v.y = f(v.y);
    v.z = f(v.z);
    v.w = f(v.w);
    y4[i] = v;
  });
  const int64_t tail = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < n - 4 * n4) y[4 * n4 + tail] = f(x[4 * n4 + tail]);
}

template <class F>
__global__ void map_unary(const float* x, float* y, int64_t n, F f) {
  grid_stride_loop(n, [&](int64_t i) { y[i] = f(x[i]); });
}

template <class F>
__global__ void map_binary_vec4(const float* a, const float* b, float* out, int64_t n, F f) {
  const int64_t n4 = n / 4;
  const float4* a4 = reinterpret_cast<const float4*>(a);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  float4* out4 = reinterpret_cast<float4*>(out);
  grid_stride_loop(n4, [&](int64_t i) {
    const float4 u = a4[i], v = b4[i];
    out4[i] = make_float4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
  });
  const int64_t tail = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tail < n - 4 * n4) out[4 * n4 + tail] = f(a[4 * n4 + tail], b[4 * n4 + tail]);
}

template <class F>
__global__ void map_binary(const float* a, const float* b, float* out, int64_t n, F f) {
  grid_stride_loop(n, [&](int64_t i) { out[i] = f(a[i], b[i]); });
}

}  // namespace detail

// y[i] = f(x[i]) for i < n, with f a functor with a __device__ operator()(float). y may be x
// (in place), but the buffers must not otherwise overlap: a thread reads and writes only its
// own elements.
template <class F>
void launch_elementwise(const float* x, float* y, int64_t n, F f, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(x) && aligned16(y)) {
    detail::map_unary_vec4<<<grid_for(n / 4), kBlockSize, 0, stream>>>(x, y, n, f);
  } else {
    detail::map_unary<<<grid_for(n), kBlockSize, 0, stream>>>(x, y, n, f);
  }
  NNX_CUDA_CHECK_LAUNCH();
}

// out[i] = f(a[i], b[i]) for i < n; out may be a or b.
template <class F>
void launch_elementwise(const float* a, const float* b, float* out, int64_t n, F f,
                        cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(a) && aligned16(b) && aligned16(out)) {
    detail::map_binary_vec4<<<grid_for(n / 4), kBlockSize, 0, stream>>>(a, b, out, n, f);
  } else {
    detail::map_binary<<<grid_for(n), kBlockSize, 0, stream>>>(a, b, out, n, f);
  }
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
