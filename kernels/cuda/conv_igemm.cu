// The implicit-GEMM float32 convolution (see conv_igemm.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cuda/conv_igemm.h"
#include "kernels/cuda/conv_implicit.cuh"
#include "kernels/cuda/conv_mma.cuh"
#include "kernels/cuda/launch.cuh"
#include "nnx/error.h"
#include "runtime/cuda/workspace.h"

namespace nnx::cuda {
namespace {

constexpr int kThreads = 256;  // 16 x 16 threads, each (TM / 16) x (TN / 16) outputs

// The tiles (IgemmTile): output channels x output positions per block, reduction elements per
// shared-memory stage.
template <IgemmTile T>
struct TileShape;
template <>
struct TileShape<IgemmTile::m64n64> {
  static constexpr int tm = 64, tn = 64, chunk = 16, min_blocks = 1;
};
template <>
struct TileShape<IgemmTile::m128n64> {
  static constexpr int tm = 128, tn = 64, chunk = 16, min_blocks = 2;
};
template <>
struct TileShape<IgemmTile::m128n128> {
  static constexpr int tm = 128, tn = 128, chunk = 8, min_blocks = 2;
};

int tile_rows(IgemmTile t) {
  return t == IgemmTile::m64n64 ? 64 : 128;
}
int tile_columns(IgemmTile t) {
  return t == IgemmTile::m128n128 || t == IgemmTile::tensor ? 128 : 64;
}
int tile_chunk(IgemmTile t) {
  return t == IgemmTile::m128n128 ? 8 : 16;
}

// One chunk of the weights (A, TM x chunk: `la` values per thread, in groups of 4 along the
// reduction) and of the implicit im2col matrix (B, chunk x TN: `lb` values per thread, one
// output position, consecutive reduction rows), in registers between the global loads and the
// shared-memory stores.
template <class S>
struct Staged {
  static constexpr int la = S::tm * S::chunk / kThreads;
  static constexpr int lb = S::tn * S::chunk / kThreads;
  static constexpr int a_per_row = S::chunk / la;  // threads loading one row of A
  float a[la], b[lb];

  // Thread t's A row in the tile, and the reduction offset of its group q of four A values
  // (the threads of a row take consecutive 16-byte pieces): what the loads and the store agree on.
  static __device__ __forceinline__ int a_row(int t) { return t / a_per_row; }
  static __device__ __forceinline__ int a_offset(int t, int q) {
    return q * 4 * a_per_row + (t % a_per_row) * 4;
  }
};

// The forward's operands: A the weights ([out_channels][reduction], contiguous), B the implicit
// im2col matrix of x (reduction rows (c, r, s), columns the output positions (n, p, q)). The
// thread's B column is decomposed once and its reduction position walked without dividing.
template <class S>
struct ForwardLoader {
  using St = Staged<S>;
  BCursor bc;

  __device__ __forceinline__ void init(const Geometry& g, int n0, int first_chunk) {
    const int t = threadIdx.x;
    bc = make_cursor(g, n0 + t % S::tn);
    bc.pos = decompose(g, first_chunk * S::chunk + (t / S::tn) * St::lb);
  }
  __device__ __forceinline__ void advance(const Geometry& g) { step_chunk(g, bc.pos); }

  // a_src: the weights, b_src: x.
  __device__ __forceinline__ void load(const Geometry& g, const float* __restrict__ b_src,
                                       const float* __restrict__ a_src, int m0, int k0,
                                       St& st) const {
    const int t = threadIdx.x;
    // A: row m0 + a_row(t), group q of four at k0 + a_offset(t, q).
    const int am = m0 + St::a_row(t);
    const bool row_ok = am < g.out_channels;
    const float* wrow = a_src + (row_ok ? am : 0) * g.reduction;
#pragma unroll
    for (int q = 0; q < St::la / 4; ++q)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int k = k0 + St::a_offset(t, q) + i;
        st.a[q * 4 + i] = (row_ok && k < g.reduction) ? wrow[k] : 0.0f;
      }
    // B: reduction rows k0 + (t / TN) * lb + i, output position t % TN (a warp: 32 consecutive
    // positions, so consecutive input columns where the stride is 1).
    const int bk = k0 + (t / S::tn) * St::lb;
    KPos pos = bc.pos;
#pragma unroll
    for (int i = 0; i < St::lb; ++i) {
      st.b[i] = im2col_value(g, b_src, bc, pos, bk + i);
      step_one(g, pos);
    }
  }
};

// A position (n, p, q) of the forward's output, walked through the batch without dividing.
struct OutPos {
  int n, p, q;
};

__device__ __forceinline__ OutPos out_pos(const Geometry& g, int i) {
  const int plane = g.out_h * g.out_w;
  OutPos o;
  o.n = i / plane;
  const int pq = i - o.n * plane;
  o.p = pq / g.out_w;
  o.q = pq - o.p * g.out_w;
  return o;
}

__device__ __forceinline__ void out_step(const Geometry& g, OutPos& o, int d) {
  o.q += d;
  while (o.q >= g.out_w) {
    o.q -= g.out_w;
    if (++o.p == g.out_h) {
      o.p = 0;
      ++o.n;
    }
  }
}

// The filter gradient's operands (dw = dy x im2col(x)^T, Geometry::plain): A is dy
// ([out_channels] rows, the forward's output positions (n, p, q) as the reduction), B the
// transposed im2col matrix of x (rows the output positions, columns (c, r, s): this thread's
// column decomposed once, its rows walked).
template <class S>
struct FilterGradLoader {
  using St = Staged<S>;
  static constexpr int groups = St::la / 4;
  OutPos a_pos[groups];  // the first position of each group of four A values
  OutPos b_pos;          // this thread's first B row
  int b_ok, b_c, b_roff, b_soff;

  __device__ __forceinline__ void init(const Geometry& g, int n0, int first_chunk) {
    const int t = threadIdx.x;
    const int k0 = first_chunk * S::chunk;
#pragma unroll
    for (int q = 0; q < groups; ++q) a_pos[q] = out_pos(g, k0 + St::a_offset(t, q));
    b_pos = out_pos(g, k0 + (t / S::tn) * St::lb);
    const int j = n0 + t % S::tn;
    b_ok = j < g.columns;
    const int window = g.kernel_h * g.kernel_w;
    b_c = j / window;
    const int rs = j - b_c * window;
    const int r = rs / g.kernel_w;
    b_roff = r * g.dilation_h - g.pad_h;
    b_soff = (rs - r * g.kernel_w) * g.dilation_w - g.pad_w;
  }
  __device__ __forceinline__ void advance(const Geometry& g) {
#pragma unroll
    for (int q = 0; q < groups; ++q) out_step(g, a_pos[q], S::chunk);
    out_step(g, b_pos, S::chunk);
  }

  // a_src: dy, b_src: x.
  __device__ __forceinline__ void load(const Geometry& g, const float* __restrict__ b_src,
                                       const float* __restrict__ a_src, int m0, int k0,
                                       St& st) const {
    const int t = threadIdx.x;
    const int am = m0 + St::a_row(t);
    const bool row_ok = am < g.out_channels;
#pragma unroll
    for (int q = 0; q < groups; ++q) {
      OutPos o = a_pos[q];
      const int k = k0 + St::a_offset(t, q);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        st.a[q * 4 + i] = (row_ok && k + i < g.reduction)
                              ? a_src[((o.n * g.out_channels + am) * g.out_h + o.p) * g.out_w + o.q]
                              : 0.0f;
        out_step(g, o, 1);
      }
    }
    const int bk = k0 + (t / S::tn) * St::lb;
    OutPos o = b_pos;
#pragma unroll
    for (int i = 0; i < St::lb; ++i) {
      float v = 0.0f;
      if (b_ok && bk + i < g.reduction) {
        const int ih = o.p * g.stride_h + b_roff;
        const int iw = o.q * g.stride_w + b_soff;
        if (ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w)
          v = b_src[((o.n * g.channels + b_c) * g.in_h + ih) * g.in_w + iw];
      }
      st.b[i] = v;
      out_step(g, o, 1);
    }
  }
};

// One block computes a TM x TN tile of the output (or, split, of one partial sum) over the
// chunks [blockIdx.z * chunks_per_split, ...) of the reduction. partial == nullptr: the result
// with bias, residual and ReLU goes to y; else the raw sum to partial[blockIdx.z][m][column].
// Each thread holds (TM / 64) x (TN / 64) blocks of 4 x 4 outputs, 64 rows and columns apart,
// read from shared memory as float4s; a warp's threads span 4 thread rows and 8 thread columns,
// so each of its shared-memory reads touches 128 bytes or fewer.
template <IgemmTile T, bool kFilterGrad>
__global__ void __launch_bounds__(kThreads, TileShape<T>::min_blocks)
    igemm_kernel(Geometry g, const float* __restrict__ x, const float* __restrict__ w,
                 const float* __restrict__ bias, const float* __restrict__ z, bool relu,
                 float* __restrict__ y, float* __restrict__ partial) {
  using S = TileShape<T>;
  using St = Staged<S>;
  using Loader = std::conditional_t<kFilterGrad, FilterGradLoader<S>, ForwardLoader<S>>;
  constexpr int tm = S::tm, tn = S::tn, chunk = S::chunk;
  constexpr int rm = tm / 64, rn = tn / 64;
  // A's rows padded by 4 (16-byte aligned still): in the 128-row tiles a store instruction's
  // reduction offsets, 4 apart, fall in different banks (the 64x64 tile's, 8 apart, 2-way).
  __shared__ __align__(16) float a_tile[2][chunk][tm + 4];
  __shared__ __align__(16) float b_tile[2][chunk][tn];
  const int t = threadIdx.x;
  const int n0 = blockIdx.x * tn;
  const int m0 = blockIdx.y * tm;
  const int plane = g.out_h * g.out_w;

  const int total_chunks = (g.reduction + chunk - 1) / chunk;
  const int first = blockIdx.z * g.chunks_per_split;
  const int last = min(total_chunks, first + g.chunks_per_split);

  float acc[rm * 4][rn * 4];
#pragma unroll
  for (int i = 0; i < rm * 4; ++i)
#pragma unroll
    for (int j = 0; j < rn * 4; ++j) acc[i][j] = 0.0f;

  const int lane = t % 32, warp = t / 32;
  const int ty = (warp / 2) * 4 + lane / 8;  // 0..15
  const int tx = (warp % 2) * 8 + lane % 8;  // 0..15
  Staged<S> st;
  auto store = [&](int buffer) {
    const int am = St::a_row(t);
#pragma unroll
    for (int q = 0; q < St::la / 4; ++q)
#pragma unroll
      for (int i = 0; i < 4; ++i) a_tile[buffer][St::a_offset(t, q) + i][am] = st.a[q * 4 + i];
    const int bk = (t / tn) * St::lb, bn = t % tn;
#pragma unroll
    for (int i = 0; i < St::lb; ++i) b_tile[buffer][bk + i][bn] = st.b[i];
  };
  Loader loader;
  loader.init(g, n0, first);
  if (first < last) {
    loader.load(g, x, w, m0, first * chunk, st);
    store(0);
  }
  __syncthreads();
  int buffer = 0;
  for (int c = first; c < last; ++c) {
    const bool more = c + 1 < last;
    if (more) {
      loader.advance(g);
      loader.load(g, x, w, m0, (c + 1) * chunk, st);
    }
#pragma unroll
    for (int k = 0; k < chunk; ++k) {
      float av[rm * 4], bv[rn * 4];
#pragma unroll
      for (int s = 0; s < rm; ++s) {
        const float4 a = *reinterpret_cast<const float4*>(&a_tile[buffer][k][s * 64 + ty * 4]);
        av[s * 4 + 0] = a.x;
        av[s * 4 + 1] = a.y;
        av[s * 4 + 2] = a.z;
        av[s * 4 + 3] = a.w;
      }
#pragma unroll
      for (int s = 0; s < rn; ++s) {
        const float4 b = *reinterpret_cast<const float4*>(&b_tile[buffer][k][s * 64 + tx * 4]);
        bv[s * 4 + 0] = b.x;
        bv[s * 4 + 1] = b.y;
        bv[s * 4 + 2] = b.z;
        bv[s * 4 + 3] = b.w;
      }
#pragma unroll
      for (int i = 0; i < rm * 4; ++i)
#pragma unroll
        for (int j = 0; j < rn * 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (more) store(buffer ^ 1);  // the other buffer: nobody reads it in this chunk
    __syncthreads();
    buffer ^= 1;
  }

#pragma unroll
  for (int sn = 0; sn < rn; ++sn) {
    const int c = n0 + sn * 64 + tx * 4;
    if (c >= g.columns) continue;
    const int n = c / plane;
    const int pq = c - n * plane;
#pragma unroll
    for (int i = 0; i < rm * 4; ++i) {
      const int m = m0 + (i / 4) * 64 + ty * 4 + i % 4;
      if (m >= g.out_channels) continue;
      const float v[4] = {acc[i][sn * 4 + 0], acc[i][sn * 4 + 1], acc[i][sn * 4 + 2],
                          acc[i][sn * 4 + 3]};
      write_four(g, m, c, n, pq, v, bias, z, relu, y, partial);
    }
  }
}

template <IgemmTile T, bool kFilterGrad = false>
void launch(dim3 grid, cudaStream_t stream, const Geometry& g, const float* x, const float* w,
            const float* bias, const float* z, bool relu, float* y, float* partial) {
  igemm_kernel<T, kFilterGrad><<<grid, kThreads, 0, stream>>>(g, x, w, bias, z, relu, y, partial);
  NNX_CUDA_CHECK_LAUNCH();
}

// w [k][c][r][s] transposed and flipped into wt [c][k][R-1-r][S-1-s]: the weight of the
// convolution that computes a stride-1 convolution's input gradient.
__global__ void flip_transpose_kernel(const float* __restrict__ w, int out_c, int in_c, int window,
                                      float* __restrict__ wt) {
  const int64_t n = int64_t(out_c) * in_c * window;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t rs = i % window;
    const int64_t c = (i / window) % in_c;
    const int64_t k = i / (int64_t(window) * in_c);
    wt[(c * out_c + k) * window + (window - 1 - rs)] = w[i];
  });
}

}  // namespace

bool igemm_applicable(const Conv2dParams& p) {
  if (p.groups != 1) return false;
  const int64_t columns = p.batch * p.out_h * p.out_w;
  const int64_t reduction = p.in_channels * p.kernel_h * p.kernel_w;
  // Indices in int (element offsets of x, y, w and dy included), with room for the tile and
  // split arithmetic and for the window's corners (padding, stride, dilation).
  const int64_t limit = INT_MAX / 4;
  const bool window_fits =
      std::abs(p.pad_h) < limit && std::abs(p.pad_w) < limit &&
      (p.out_h - 1) * p.stride_h < limit && (p.out_w - 1) * p.stride_w < limit &&
      p.dilation_h * (p.kernel_h - 1) < limit && p.dilation_w * (p.kernel_w - 1) < limit;
  return window_fits && columns > 0 && columns < limit && reduction > 0 && reduction < limit &&
         ceil_div(p.out_channels, 64) <= 65535 &&  // gridDim.y
         p.out_channels < limit && p.batch * p.in_channels * p.in_h * p.in_w < limit &&
         p.batch * p.out_channels * p.out_h * p.out_w < limit && p.out_channels * reduction < limit;
}

const char* igemm_tile_name(IgemmTile tile) {
  switch (tile) {
    case IgemmTile::m64n64:
      return "64x64";
    case IgemmTile::m128n64:
      return "128x64";
    case IgemmTile::m128n128:
      return "128x128";
    case IgemmTile::tensor:
      return "tensor";
  }
  return "?";
}

std::vector<IgemmTile> igemm_tiles_for(int64_t rows, int64_t columns) {
  std::vector<IgemmTile> tiles{IgemmTile::m64n64};
  if (rows > 64) {  // else half of each 128-row tile would be idle
    tiles.push_back(IgemmTile::m128n64);
    if (columns > 64) tiles.push_back(IgemmTile::m128n128);
  }
  return tiles;
}

bool igemm_tensor_available() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return major >= 8;
}

std::vector<IgemmTile> igemm_tiles(const Conv2dParams& p) {
  if (p.allow_tf32) {
    if (!igemm_tensor_available()) return {};
    return {IgemmTile::tensor};
  }
  return igemm_tiles_for(p.out_channels, p.batch * p.out_h * p.out_w);
}

IgemmTile default_igemm_tile(const Conv2dParams& p) {
  if (p.allow_tf32) return IgemmTile::tensor;
  // The largest tile that still gives every multiprocessor two blocks without splitting the
  // reduction (larger tiles reuse each loaded value more).
  const int64_t columns = p.batch * p.out_h * p.out_w;
  const int64_t want = 2 * int64_t(multiprocessor_count());
  IgemmTile best = IgemmTile::m64n64;
  for (IgemmTile t : igemm_tiles(p))
    if (ceil_div(p.out_channels, int64_t(tile_rows(t))) *
            ceil_div(columns, int64_t(tile_columns(t))) >=
        want)
      best = t;
  return best;
}

void conv2d_igemm(const Conv2dParams& p, const float* x, const float* w, const float* bias,
                  const float* z, bool relu, float* y, int device, void* stream_handle,
                  IgemmTile tile) {
  NNX_CHECK(igemm_applicable(p), ErrorKind::unsupported,
            "Conv2d on CUDA: the implicit-GEMM kernel takes groups 1 only");
  NNX_CHECK(tile != IgemmTile::tensor || p.allow_tf32, ErrorKind::unsupported,
            "Conv2d on CUDA: the tensor-core kernel computes in TF32, which the problem does not "
            "allow");
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  Geometry g = make_geometry(p, y, z);
  const int tiles_n = int(ceil_div(g.columns, tile_columns(tile)));
  const int tiles_m = int(ceil_div(g.out_channels, tile_rows(tile)));
  const int chunks = int(ceil_div(g.reduction, tile_chunk(tile)));
  const int splits = plan_splits(g, int64_t(tiles_n) * tiles_m, chunks, tile_chunk(tile));
  set_chunk(g, tile_chunk(tile));
  run_tiled(g, tiles_n, tiles_m, splits, device, stream, bias, z, relu, y,
            [&](dim3 grid, const float* b, const float* r, bool act, float* out, float* sums) {
              switch (tile) {
                case IgemmTile::m64n64:
                  return launch<IgemmTile::m64n64>(grid, stream, g, x, w, b, r, act, out, sums);
                case IgemmTile::m128n64:
                  return launch<IgemmTile::m128n64>(grid, stream, g, x, w, b, r, act, out, sums);
                case IgemmTile::m128n128:
                  return launch<IgemmTile::m128n128>(grid, stream, g, x, w, b, r, act, out, sums);
                case IgemmTile::tensor:
                  return conv2d_tensor_tf32(g, grid, stream, x, w, b, r, act, out, sums);
              }
            });
}

bool igemm_data_grad_applicable(const Conv2dParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && igemm_applicable(data_grad_problem(p));
}

Conv2dParams data_grad_problem(const Conv2dParams& p) {
  Conv2dParams q = p;
  q.in_channels = p.out_channels;
  q.in_h = p.out_h;
  q.in_w = p.out_w;
  q.out_channels = p.in_channels;
  q.out_h = p.in_h;
  q.out_w = p.in_w;
  q.pad_h = p.dilation_h * (p.kernel_h - 1) - p.pad_h;  // may be negative: an offset all the same
  q.pad_w = p.dilation_w * (p.kernel_w - 1) - p.pad_w;
  return q;
}

void conv2d_igemm_data_grad(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                            int device, void* stream_handle, IgemmTile tile) {
  NNX_CHECK(igemm_data_grad_applicable(p) && tile != IgemmTile::tensor, ErrorKind::unsupported,
            "Conv2d on CUDA: the implicit-GEMM input gradient takes stride 1, groups 1, float32");
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const int64_t n = p.out_channels * p.in_channels * p.kernel_h * p.kernel_w;
  const Workspace flipped(device, size_t(n) * sizeof(float), stream);
  float* wt = static_cast<float*>(flipped.get());
  flip_transpose_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(
      w, int(p.out_channels), int(p.in_channels), int(p.kernel_h * p.kernel_w), wt);
  NNX_CUDA_CHECK_LAUNCH();
  conv2d_igemm(data_grad_problem(p), dy, wt, nullptr, nullptr, false, dx, device, stream, tile);
}

bool igemm_filter_grad_applicable(const Conv2dParams& p) {
  // The same int limits, with the roles of the sizes exchanged.
  return igemm_applicable(p) && p.batch * p.out_h * p.out_w < INT_MAX / 4 - 64;
}

void conv2d_igemm_filter_grad(const Conv2dParams& p, const float* x, const float* dy, float* dw,
                              int device, void* stream_handle, IgemmTile tile) {
  NNX_CHECK(igemm_filter_grad_applicable(p) && tile != IgemmTile::tensor, ErrorKind::unsupported,
            "Conv2d on CUDA: the implicit-GEMM filter gradient takes groups 1, float32");
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  Geometry g = make_geometry(p, dw, nullptr);
  g.plain = 1;
  std::swap(g.columns, g.reduction);  // columns: (c, r, s); reduction: (n, p, q)
  const int tiles_n = int(ceil_div(g.columns, tile_columns(tile)));
  const int tiles_m = int(ceil_div(g.out_channels, tile_rows(tile)));
  const int chunks = int(ceil_div(g.reduction, tile_chunk(tile)));
  const int splits = plan_splits(g, int64_t(tiles_n) * tiles_m, chunks, tile_chunk(tile));
  run_tiled(g, tiles_n, tiles_m, splits, device, stream, nullptr, nullptr, false, dw,
            [&](dim3 grid, const float*, const float*, bool, float* out, float* sums) {
              switch (tile) {
                case IgemmTile::m64n64:
                  return launch<IgemmTile::m64n64, true>(grid, stream, g, x, dy, nullptr, nullptr,
                                                         false, out, sums);
                case IgemmTile::m128n64:
                  return launch<IgemmTile::m128n64, true>(grid, stream, g, x, dy, nullptr, nullptr,
                                                          false, out, sums);
                case IgemmTile::m128n128:
                  return launch<IgemmTile::m128n128, true>(grid, stream, g, x, dy, nullptr, nullptr,
                                                           false, out, sums);
                case IgemmTile::tensor:
                  break;
              }
            });
}

void conv2d_igemm_reduced(const Conv2dParams& p, ConvIo io, const float* x, const void* w_io,
                          const float* bias, const float* z, bool relu, float* y, int device,
                          void* stream_handle) {
  NNX_CHECK(igemm_applicable(p), ErrorKind::unsupported,
            "Conv2d on CUDA: the implicit-GEMM kernel takes groups 1 only");
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  Geometry g = make_geometry(p, y, z);
  g.round_io = io == ConvIo::f16 ? 1 : 2;
  const int tiles_n = int(ceil_div(g.columns, kMmaTile));
  const int tiles_m = int(ceil_div(g.out_channels, kMmaTile));
  const int chunks = int(ceil_div(g.reduction, kMmaChunk));
  const int splits = plan_splits(g, int64_t(tiles_n) * tiles_m, chunks, kMmaChunk);
  set_chunk(g, kMmaChunk);
  run_tiled(g, tiles_n, tiles_m, splits, device, stream, bias, z, relu, y,
            [&](dim3 grid, const float* b, const float* r, bool act, float* out, float* sums) {
              if (io == ConvIo::f16)
                conv2d_tensor_reduced<__half>(g, grid, stream, x, w_io, b, r, act, out, sums);
              else
                conv2d_tensor_reduced<__nv_bfloat16>(g, grid, stream, x, w_io, b, r, act, out,
                                                     sums);
            });
}

namespace {

std::atomic<int> mode_override{-1};
std::atomic<int> tile_override{-1};
std::mutex choice_mutex;
std::map<std::string, int> choices;  // problem key -> an IgemmTile, or -1: cuDNN

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;  // unknown: do not time
  }
  return status != cudaStreamCaptureStatusNone;
}

// Keeps the GPU busy for about `us` microseconds, so that the runs queued after it are all
// queued before the first starts: their time is then the GPU's, not the host's launch rate
// (cuDNN's legacy calls cost about 100 us of host time each).
__global__ void spin_kernel(int us) {
  for (int i = 0; i < us; ++i) __nanosleep(1000);
}

// Milliseconds of `reps` runs of f queued on `stream`, between two events, behind a spin.
float time_runs(const std::function<void()>& f, cudaStream_t stream, int reps) {
  spin_kernel<<<1, 1, 0, stream>>>(200 * reps);
  NNX_CUDA_CHECK_LAUNCH();
  cudaEvent_t start = nullptr, stop = nullptr;
  NNX_CUDA_CHECK(cudaEventCreate(&start));
  NNX_CUDA_CHECK(cudaEventCreate(&stop));
  struct Destroy {
    cudaEvent_t a, b;
    ~Destroy() {
      (void)cudaEventDestroy(a);
      (void)cudaEventDestroy(b);
    }
  } destroy{start, stop};
  NNX_CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < reps; ++i) f();
  NNX_CUDA_CHECK(cudaEventRecord(stop, stream));
  NNX_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  NNX_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  return ms;
}

}  // namespace

void set_igemm_mode(IgemmMode mode, std::optional<IgemmTile> tile) {
  mode_override.store(int(mode));
  tile_override.store(tile ? int(*tile) : -1);
  std::lock_guard<std::mutex> lock(choice_mutex);
  choices.clear();
}

void reset_igemm_mode() {
  mode_override.store(-1);
  tile_override.store(-1);
  std::lock_guard<std::mutex> lock(choice_mutex);
  choices.clear();
}

namespace {

struct EnvSetting {
  IgemmMode mode;
  int tile;  // -1: chosen per problem
};

EnvSetting env_setting() {
  static const EnvSetting from_env = [] {
    const char* v = std::getenv("NNX_CONV_IGEMM");
#ifdef NNX_CUDA_EMULATOR
    // Timing on the emulator measures the host: cuDNN's stand-in unless asked for.
    if (v == nullptr) return EnvSetting{IgemmMode::off, -1};
#endif
    if (v == nullptr) return EnvSetting{IgemmMode::automatic, -1};
    if (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0)
      return EnvSetting{IgemmMode::off, -1};
    if (std::strcmp(v, "1") == 0 || std::strcmp(v, "on") == 0) return EnvSetting{IgemmMode::on, -1};
    for (IgemmTile t :
         {IgemmTile::m64n64, IgemmTile::m128n64, IgemmTile::m128n128, IgemmTile::tensor})
      if (std::strcmp(v, igemm_tile_name(t)) == 0) return EnvSetting{IgemmMode::on, int(t)};
    return EnvSetting{IgemmMode::automatic, -1};
  }();
  return from_env;
}

bool log_choices() {
  static const bool on = [] {
    const char* v = std::getenv("NNX_CONV_IGEMM_LOG");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  return on;
}

}  // namespace

IgemmMode igemm_mode() {
  const int forced = mode_override.load();
  return forced >= 0 ? IgemmMode(forced) : env_setting().mode;
}

std::optional<IgemmTile> use_igemm(const Conv2dParams& p, const std::string& key,
                                   void* stream_handle, const std::function<void()>& run_cudnn,
                                   const std::function<void(IgemmTile)>& run_igemm,
                                   const std::vector<IgemmTile>& candidates) {
  if (!igemm_applicable(p)) return std::nullopt;
  const IgemmMode mode = igemm_mode();
  if (mode == IgemmMode::off) return std::nullopt;
  const std::vector<IgemmTile> tiles = candidates.empty() ? igemm_tiles(p) : candidates;
  if (tiles.empty()) return std::nullopt;  // TF32 before sm_80: cuDNN's
  if (mode == IgemmMode::on) {
    const int forced = mode_override.load() >= 0 ? tile_override.load() : env_setting().tile;
    if (forced >= 0 && std::find(tiles.begin(), tiles.end(), IgemmTile(forced)) != tiles.end())
      return IgemmTile(forced);
    return candidates.empty() ? default_igemm_tile(p) : candidates.front();
  }
  {
    std::lock_guard<std::mutex> lock(choice_mutex);
    if (auto it = choices.find(key); it != choices.end())
      return it->second < 0 ? std::nullopt : std::optional<IgemmTile>(IgemmTile(it->second));
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (capturing(stream)) return std::nullopt;  // no timing in a capture: cuDNN, undecided
  // Each candidate once untimed (cuDNN builds its plans, the caching allocator its blocks),
  // then the better of two rounds of five runs each.
  std::vector<std::function<void()>> runs{run_cudnn};
  for (IgemmTile t : tiles) runs.push_back([&run_igemm, t] { run_igemm(t); });
  for (auto& run : runs) run();
  std::vector<float> ms(runs.size(), 1e30f);
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < runs.size(); ++i) ms[i] = std::min(ms[i], time_runs(runs[i], stream, 5));
  const size_t best = size_t(std::min_element(ms.begin(), ms.end()) - ms.begin());
  const int choice = best == 0 ? -1 : int(tiles[best - 1]);
  if (log_choices()) {
    std::string line = "nnx: conv " + key + ": cuDNN " + std::to_string(ms[0] / 5) + " ms";
    for (size_t i = 0; i < tiles.size(); ++i)
      line += std::string(", ") + igemm_tile_name(tiles[i]) + " " + std::to_string(ms[i + 1] / 5) +
              " ms";
    line += std::string(" -> ") + (choice < 0 ? "cuDNN" : igemm_tile_name(IgemmTile(choice)));
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::lock_guard<std::mutex> lock(choice_mutex);
  const int kept = choices.emplace(key, choice).first->second;
  return kept < 0 ? std::nullopt : std::optional<IgemmTile>(IgemmTile(kept));
}

}  // namespace nnx::cuda
