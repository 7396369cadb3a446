// The implicit-GEMM convolution on tensor cores (WMMA), for TF32 and for fp16/bf16 operands with
// fp32 accumulation: the same GEMM as conv_igemm.cu's FFMA kernels (output channels x output
// positions, reduced over input channels x kernel window), 128x128 tiles per block of 8 warps,
// each warp 64x32 of the tile as 4x2 accumulator fragments of 16x16. The input stays float32 in
// memory and is rounded to the operand format as it is staged into shared memory, so no rounded
// copy of the activation is made; the weight is read in the operand format (TF32: float32,
// rounded as staged; fp16/bf16: the op's rounded copy). Included by conv_igemm.cu only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <type_traits>

#include "kernels/cuda/conv_implicit.cuh"

// WMMA's TF32 and bf16 shapes exist from sm_80: for older architectures the kernel is a trap,
// and the host never picks it there (igemm_tensor_available).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define NNX_MMA_AVAILABLE 0
#else
#define NNX_MMA_AVAILABLE 1
#endif

namespace nnx::cuda {
namespace {

constexpr int kMmaThreads = 256;
constexpr int kMmaTile = 128;  // output channels and output positions per block
constexpr int kMmaChunk = 16;  // reduction elements per shared-memory stage

#if NNX_MMA_AVAILABLE
// The operand format T as WMMA takes it: its fragment element type, the depth of one
// multiply-accumulate, the shared-memory rows' padding (keeps fragment pointers 32-byte aligned
// and spreads a fragment's rows over the banks) and the rounding from float32.
template <class T>
struct MmaFormat;
template <>
struct MmaFormat<float> {  // TF32
  using Element = nvcuda::wmma::precision::tf32;
  static constexpr int depth = 8, pad = 4;
  static __device__ __forceinline__ float round(float v) {
    return nvcuda::wmma::__float_to_tf32(v);
  }
  static __device__ __forceinline__ float weight(float v) { return round(v); }
};
template <>
struct MmaFormat<__half> {
  using Element = __half;
  static constexpr int depth = 16, pad = 8;
  static __device__ __forceinline__ __half round(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ __half weight(__half v) { return v; }
};
template <>
struct MmaFormat<__nv_bfloat16> {
  using Element = __nv_bfloat16;
  static constexpr int depth = 16, pad = 8;
  static __device__ __forceinline__ __nv_bfloat16 round(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ __nv_bfloat16 weight(__nv_bfloat16 v) { return v; }
};

#endif  // NNX_MMA_AVAILABLE

// One block: a 128x128 tile of the output (or, split, of one partial sum) over the chunks
// [blockIdx.z * chunks_per_split, ...) of the reduction, as igemm_kernel. T: the operand format
// (float: TF32); W: the weight's type in memory (float for TF32, else T). Each thread stages 8
// weights (row t / 2, reduction offsets (t % 2) * 8 + 0..7) and 8 input values (output position
// t % 128, reduction rows (t / 128) * 8 + 0..7: a warp reads 32 consecutive positions) per
// chunk, the next chunk's loads in flight while one is multiplied. The accumulators go out
// through a per-warp 16x16 scratch, each lane writing 8 consecutive positions of one row.
template <class T, class W>
__global__ void __launch_bounds__(kMmaThreads, 2)
    mma_kernel(Geometry g, const float* __restrict__ x, const W* __restrict__ w,
               const float* __restrict__ bias, const float* __restrict__ z, bool relu,
               float* __restrict__ y, float* __restrict__ partial) {
#if !NNX_MMA_AVAILABLE
  __trap();
#else
  namespace wmma = nvcuda::wmma;
  using F = MmaFormat<T>;
  constexpr int lda = kMmaChunk + F::pad;  // A: [128 rows][chunk], row-major
  constexpr int ldb = kMmaTile + F::pad;   // B: [chunk][128 positions], row-major
  __shared__ __align__(128) T a_tile[2][kMmaTile * lda];
  __shared__ __align__(128) T b_tile[2][kMmaChunk * ldb];
  // Each warp's 16x16 of results, rows 20 floats apart (16-byte aligned rows, their float4
  // reads spread over the banks).
  constexpr int lds = 20;
  __shared__ __align__(128) float scratch[kMmaThreads / 32][16 * lds];

  const int t = threadIdx.x;
  const int warp = t / 32, lane = t % 32;
  const int wm = warp / 4, wn = warp % 4;  // this warp's rows wm * 64.., positions wn * 32..
  const int n0 = blockIdx.x * kMmaTile;
  const int m0 = blockIdx.y * kMmaTile;
  const int plane = g.out_h * g.out_w;

  BCursor bc = make_cursor(g, n0 + t % kMmaTile);
  const int total_chunks = (g.reduction + kMmaChunk - 1) / kMmaChunk;
  const int first = blockIdx.z * g.chunks_per_split;
  const int last = min(total_chunks, first + g.chunks_per_split);
  bc.pos = decompose(g, first * kMmaChunk + (t / kMmaTile) * 8);

  const int am = m0 + t / 2;
  const bool row_ok = am < g.out_channels;
  const W* wrow = w + (row_ok ? am : 0) * g.reduction;
  T sa[8], sb[8];
  auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int k = k0 + (t % 2) * 8 + i;
      sa[i] = (row_ok && k < g.reduction) ? F::weight(wrow[k]) : F::round(0.0f);
    }
    const int bk = k0 + (t / kMmaTile) * 8;
    KPos pos = bc.pos;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      sb[i] = F::round(im2col_value(g, x, bc, pos, bk + i));
      step_one(g, pos);
    }
  };
  auto store = [&](int buffer) {
    T* a_row = &a_tile[buffer][(t / 2) * lda + (t % 2) * 8];  // 16-byte aligned
    if constexpr (std::is_same_v<T, float>) {
      reinterpret_cast<float4*>(a_row)[0] = make_float4(sa[0], sa[1], sa[2], sa[3]);
      reinterpret_cast<float4*>(a_row)[1] = make_float4(sa[4], sa[5], sa[6], sa[7]);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) a_row[i] = sa[i];
    }
#pragma unroll
    for (int i = 0; i < 8; ++i)
      b_tile[buffer][((t / kMmaTile) * 8 + i) * ldb + t % kMmaTile] = sb[i];
  };

  wmma::fragment<wmma::accumulator, 16, 16, F::depth, float> acc[4][2];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  if (first < last) {
    load(first * kMmaChunk);
    store(0);
  }
  __syncthreads();
  int buffer = 0;
  for (int c = first; c < last; ++c) {
    const bool more = c + 1 < last;
    if (more) {
      step_chunk(g, bc.pos);
      load((c + 1) * kMmaChunk);
    }
#pragma unroll 1  // one depth step's fragments live at a time (TF32: two steps a chunk)
    for (int k = 0; k < kMmaChunk; k += F::depth) {
      // B's two fragments, then A's four one at a time (fewer registers live).
      wmma::fragment<wmma::matrix_b, 16, 16, F::depth, typename F::Element, wmma::row_major> b[2];
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(b[j], &b_tile[buffer][k * ldb + wn * 32 + j * 16], ldb);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        wmma::fragment<wmma::matrix_a, 16, 16, F::depth, typename F::Element, wmma::row_major> a;
        wmma::load_matrix_sync(a, &a_tile[buffer][(wm * 64 + i * 16) * lda + k], lda);
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
      }
    }
    if (more) store(buffer ^ 1);  // the other buffer: nobody reads it in this chunk
    __syncthreads();
    buffer ^= 1;
  }

  float* mine = scratch[warp];
  const int r = lane / 2, half = (lane % 2) * 8;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(mine, acc[i][j], lds, wmma::mem_row_major);
      __syncwarp();
      const int m = m0 + wm * 64 + i * 16 + r;
      if (m < g.out_channels) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int c = n0 + wn * 32 + j * 16 + half + q * 4;
          if (c >= g.columns) break;
          const int n = c / plane;
          const float4 f = *reinterpret_cast<const float4*>(&mine[r * lds + half + q * 4]);
          const float v[4] = {f.x, f.y, f.z, f.w};
          write_four(g, m, c, n, c - n * plane, v, bias, z, relu, y, partial);
        }
      }
      __syncwarp();  // read before the next fragment overwrites it
    }
#endif  // NNX_MMA_AVAILABLE
}

// conv2d_igemm's TF32 tile (IgemmTile::tensor): the tensor-core kernel with float32 weights.
void conv2d_tensor_tf32(const Geometry& g, dim3 grid, cudaStream_t stream, const float* x,
                        const float* w, const float* bias, const float* z, bool relu, float* y,
                        float* partial) {
  mma_kernel<float, float><<<grid, kMmaThreads, 0, stream>>>(g, x, w, bias, z, relu, y, partial);
  NNX_CUDA_CHECK_LAUNCH();
}

// The same with fp16 or bf16 operands (w: the weight in that format).
template <class T>
void conv2d_tensor_reduced(const Geometry& g, dim3 grid, cudaStream_t stream, const float* x,
                           const void* w, const float* bias, const float* z, bool relu, float* y,
                           float* partial) {
  mma_kernel<T, T>
      <<<grid, kMmaThreads, 0, stream>>>(g, x, static_cast<const T*>(w), bias, z, relu, y, partial);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace
}  // namespace nnx::cuda
