// What the implicit-GEMM convolutions (conv_igemm.cu's FFMA kernels, conv_mma.cu's tensor-core
// ones) share: the problem's geometry, the walk through the reduction without dividing, the
// per-thread cursor of the implicit im2col loads, the output's epilogue and the split
// reduction's sum. Included by .cu files only; everything in an unnamed namespace.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/launch.cuh"
#include "runtime/cuda/workspace.h"

namespace nnx::cuda {
namespace {

struct Geometry {
  int batch, channels, in_h, in_w;
  int out_channels, out_h, out_w;
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int columns;    // batch * out_h * out_w
  int reduction;  // channels * kernel_h * kernel_w
  int chunks_per_split;
  int aligned;   // y and z 16-byte aligned: float4 stores where a row of four allows
  int round_io;  // the sum rounded before the bias: 0 no, 1 to fp16, 2 to bf16 (as cuDNN's
                 // reduced-precision output is)
  int plain;     // y is a plain [out_channels][columns] matrix (the filter gradient), not NCHW
  // One chunk of the forward's reduction as input channels, kernel rows and columns
  // (set_chunk): the walk's step, from the kernel's parameters rather than its registers.
  int chunk_c, chunk_r, chunk_s;
};

// The finished sum as the output format has it (Geometry::round_io), widened back.
__device__ __forceinline__ float round_result(const Geometry& g, float v) {
  if (g.round_io == 1) return __half2float(__float2half_rn(v));
  if (g.round_io == 2) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

// A position in the reduction: input channel c, kernel row r, kernel column s.
struct KPos {
  int c, r, s;
};

// k as a KPos (divisions: once per thread, not per element).
__host__ __device__ __forceinline__ KPos decompose(const Geometry& g, int k) {
  const int window = g.kernel_h * g.kernel_w;
  KPos p;
  p.c = k / window;
  const int rs = k - p.c * window;
  p.r = rs / g.kernel_w;
  p.s = rs - p.r * g.kernel_w;
  return p;
}

// p moved on by one position of the reduction.
__device__ __forceinline__ void step_one(const Geometry& g, KPos& p) {
  if (++p.s == g.kernel_w) {
    p.s = 0;
    if (++p.r == g.kernel_h) {
      p.r = 0;
      ++p.c;
    }
  }
}

// p moved on by one chunk (Geometry::chunk_c, chunk_r, chunk_s): each part at most one carry.
__device__ __forceinline__ void step_chunk(const Geometry& g, KPos& p) {
  p.s += g.chunk_s;
  int carry = 0;
  if (p.s >= g.kernel_w) {
    p.s -= g.kernel_w;
    carry = 1;
  }
  p.r += g.chunk_r + carry;
  carry = 0;
  if (p.r >= g.kernel_h) {
    p.r -= g.kernel_h;
    carry = 1;
  }
  p.c += g.chunk_c + carry;
}

// The per-thread state of B's loads: this thread's output position (its image, and the input
// row and column of its window's corner) and its first reduction row, walked without dividing.
struct BCursor {
  int ok, n, ih0, iw0;
  KPos pos;
};

// The cursor of the output position `col` (ok = 0 past the last), decomposed once.
__device__ __forceinline__ BCursor make_cursor(const Geometry& g, int col) {
  BCursor bc{};
  bc.ok = col < g.columns;
  if (bc.ok) {
    const int plane = g.out_h * g.out_w;
    bc.n = col / plane;
    const int pq = col - bc.n * plane;
    const int p = pq / g.out_w;
    const int q = pq - p * g.out_w;
    bc.ih0 = p * g.stride_h - g.pad_h;
    bc.iw0 = q * g.stride_w - g.pad_w;
  }
  return bc;
}

// The input value at reduction position `pos` for the cursor's output position (0 in the
// padding or past the last position).
__device__ __forceinline__ float im2col_value(const Geometry& g, const float* __restrict__ x,
                                              const BCursor& bc, const KPos& pos, int k) {
  if (!bc.ok || k >= g.reduction) return 0.0f;
  const int ih = bc.ih0 + pos.r * g.dilation_h;
  const int iw = bc.iw0 + pos.s * g.dilation_w;
  if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) return 0.0f;
  return x[((bc.n * g.channels + pos.c) * g.in_h + ih) * g.in_w + iw];  // int: igemm_applicable
}

// Four consecutive output positions c..c+3 of row m, written with the bias, residual and ReLU
// (partial == nullptr), raw into the split's partial sums, or raw into a plain matrix y
// (Geometry::plain, which takes no bias, residual or ReLU). n, pq: c's image and position in it.
__device__ __forceinline__ void write_four(const Geometry& g, int m, int c, int n, int pq,
                                           const float (&v)[4], const float* __restrict__ bias,
                                           const float* __restrict__ z, bool relu,
                                           float* __restrict__ y, float* __restrict__ partial) {
  const int plane = g.out_h * g.out_w;
  if (partial != nullptr || g.plain) {
    float* row = partial != nullptr
                     ? partial + (size_t(blockIdx.z) * g.out_channels + m) * g.columns
                     : y + size_t(m) * g.columns;
    if (c + 3 < g.columns && g.columns % 4 == 0 && (partial != nullptr || g.aligned)) {
      *reinterpret_cast<float4*>(row + c) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (c + j < g.columns) row[c + j] = v[j];
    }
    return;
  }
  const float b = bias != nullptr ? bias[m] : 0.0f;
  auto finish = [&](float s, float r) {
    s = round_result(g, s) + b + r;
    return (relu && s < 0.0f) ? 0.0f : s;  // NaN stays NaN
  };
  if (g.aligned && c + 3 < g.columns && plane % 4 == 0) {  // one image, 16-byte aligned
    const int at = (n * g.out_channels + m) * plane + pq;
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (z != nullptr) r = *reinterpret_cast<const float4*>(z + at);
    *reinterpret_cast<float4*>(y + at) =
        make_float4(finish(v[0], r.x), finish(v[1], r.y), finish(v[2], r.z), finish(v[3], r.w));
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (c + j >= g.columns) break;
    const int at = (n * g.out_channels + m) * plane + pq;
    y[at] = finish(v[j], z != nullptr ? z[at] : 0.0f);
    if (++pq == plane) {
      pq = 0;
      ++n;
    }
  }
}

// y = the sum of the splits' partial sums (in split order) + bias + z, ReLU.
__global__ void igemm_reduce_kernel(Geometry g, int splits, const float* __restrict__ partial,
                                    const float* __restrict__ bias, const float* __restrict__ z,
                                    bool relu, float* __restrict__ y) {
  const int plane = g.out_h * g.out_w;
  const int64_t total = int64_t(g.out_channels) * g.columns;
  grid_stride_loop(total, [&](int64_t i) {
    const int m = int(i / g.columns);
    const int c = int(i - int64_t(m) * g.columns);
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += partial[size_t(s) * size_t(total) + size_t(i)];
    v = round_result(g, v);
    const int n = c / plane;
    const size_t at =
        g.plain ? size_t(i) : (size_t(n) * g.out_channels + m) * plane + (c - n * plane);
    if (bias != nullptr) v += bias[m];
    if (z != nullptr) v += z[at];
    if (relu && v < 0.0f) v = 0.0f;
    y[at] = v;
  });
}

// The geometry of p, in int (igemm_applicable's limits hold); `aligned` from y and z.
inline Geometry make_geometry(const Conv2dParams& p, const float* y, const float* z) {
  Geometry g{};
  g.batch = int(p.batch);
  g.channels = int(p.in_channels);
  g.in_h = int(p.in_h);
  g.in_w = int(p.in_w);
  g.out_channels = int(p.out_channels);
  g.out_h = int(p.out_h);
  g.out_w = int(p.out_w);
  g.kernel_h = int(p.kernel_h);
  g.kernel_w = int(p.kernel_w);
  g.stride_h = int(p.stride_h);
  g.stride_w = int(p.stride_w);
  g.pad_h = int(p.pad_h);
  g.pad_w = int(p.pad_w);
  g.dilation_h = int(p.dilation_h);
  g.dilation_w = int(p.dilation_w);
  g.columns = int(p.batch * p.out_h * p.out_w);
  g.reduction = int(p.in_channels * p.kernel_h * p.kernel_w);
  g.aligned = (reinterpret_cast<uintptr_t>(y) | reinterpret_cast<uintptr_t>(z)) % 16 == 0;
  return g;
}

// Sets the walk's chunk step for chunks of `chunk` reduction elements.
inline void set_chunk(Geometry& g, int chunk) {
  const KPos d = decompose(g, chunk);
  g.chunk_c = d.c;
  g.chunk_r = d.r;
  g.chunk_s = d.s;
}

// How many blocks split the reduction of a grid of `tiles` tiles over `chunks` chunks of `chunk`
// elements: until about two blocks per multiprocessor, each keeping 128 reduction elements or
// more (fewer make the partial sums' traffic dominate), at most 64. Sets g.chunks_per_split.
inline int plan_splits(Geometry& g, int64_t tiles, int chunks, int chunk) {
  const int64_t want = 2 * int64_t(multiprocessor_count());
  const int min_chunks = 128 / chunk;
  int splits = int(std::clamp<int64_t>(ceil_div(want, tiles), 1, std::max(1, chunks / min_chunks)));
  splits = std::min(splits, 64);
  g.chunks_per_split = int(ceil_div(chunks, splits));
  return int(ceil_div(chunks, g.chunks_per_split));  // none empty
}

// Runs a tiled kernel over a grid of tiles_n x tiles_m tiles, its reduction split `splits` ways
// (plan_splits): launch(grid, bias, z, relu, y, partial) queues the kernel; split, it writes
// raw partial sums to a workspace, which igemm_reduce_kernel adds in split order into y.
template <class Launch>
void run_tiled(const Geometry& g, int tiles_n, int tiles_m, int splits, int device,
               cudaStream_t stream, const float* bias, const float* z, bool relu, float* y,
               Launch&& launch) {
  const dim3 grid{unsigned(tiles_n), unsigned(tiles_m), unsigned(splits)};
  if (splits == 1) {
    launch(grid, bias, z, relu, y, static_cast<float*>(nullptr));
    return;
  }
  const size_t partial_bytes = size_t(splits) * size_t(g.out_channels) * size_t(g.columns) * 4;
  const Workspace partial(device, partial_bytes, stream);
  float* sums = static_cast<float*>(partial.get());
  launch(grid, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr), false,
         static_cast<float*>(nullptr), sums);
  const int64_t total = int64_t(g.out_channels) * g.columns;
  igemm_reduce_kernel<<<grid_for(total), kBlockSize, 0, stream>>>(g, splits, sums, bias, z, relu,
                                                                  y);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace
}  // namespace nnx::cuda
