// The implicit-GEMM float32 convolution (see conv_igemm.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "kernels/cuda/conv_igemm.h"
#include "kernels/cuda/launch.cuh"
#include "nnx/error.h"
#include "runtime/cuda/workspace.h"

namespace nnx::cuda {
namespace {

constexpr int kTileM = 64;     // output channels per block
constexpr int kTileN = 64;     // output positions per block
constexpr int kChunk = 16;     // reduction elements per shared-memory stage
constexpr int kThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

struct Geometry {
  int batch, channels, in_h, in_w;
  int out_channels, out_h, out_w;
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int columns;    // batch * out_h * out_w
  int reduction;  // channels * kernel_h * kernel_w
  int chunks_per_split;
};

// A position in the reduction: input channel c, kernel row r, kernel column s.
struct KPos {
  int c, r, s;
};

// k as a KPos (divisions: once per thread, not per element).
__device__ __forceinline__ KPos decompose(const Geometry& g, int k) {
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

// p moved on by d (a KPos of kChunk positions, decompose(kChunk)): each part at most one carry.
__device__ __forceinline__ void step_by(const Geometry& g, KPos& p, const KPos& d) {
  p.s += d.s;
  int carry = 0;
  if (p.s >= g.kernel_w) {
    p.s -= g.kernel_w;
    carry = 1;
  }
  p.r += d.r + carry;
  carry = 0;
  if (p.r >= g.kernel_h) {
    p.r -= g.kernel_h;
    carry = 1;
  }
  p.c += d.c + carry;
}

// Loads one chunk of the weights (A, kTileM x kChunk) and of the implicit im2col matrix (B,
// kChunk x kTileN) into registers: 4 values of each per thread. `b_pos` is the reduction
// position of this thread's first B row in the chunk at k0.
struct Staged {
  float a[4], b[4];
};

__device__ __forceinline__ void load_chunk(const Geometry& g, const float* __restrict__ x,
                                           const float* __restrict__ w, int m0, int k0,
                                           int b_col_ok, int b_n, int b_ih0, int b_iw0, KPos b_pos,
                                           Staged& s) {
  const int t = threadIdx.x;
  // A: row m0 + t / 4, reduction k0 + (t % 4) * 4 + i: four threads read 64 contiguous bytes.
  const int am = m0 + t / 4;
  const int ak = k0 + (t % 4) * 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int k = ak + i;
    s.a[i] = (am < g.out_channels && k < g.reduction) ? w[size_t(am) * g.reduction + k] : 0.0f;
  }
  // B: reduction rows k0 + (t / 64) * 4 + i, column t % 64 (this thread's output position).
  const int bk = k0 + (t / kTileN) * 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float v = 0.0f;
    if (b_col_ok && bk + i < g.reduction) {
      const int ih = b_ih0 + b_pos.r * g.dilation_h;
      const int iw = b_iw0 + b_pos.s * g.dilation_w;
      if (ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w)
        v = x[((size_t(b_n) * g.channels + b_pos.c) * g.in_h + ih) * g.in_w + iw];
    }
    s.b[i] = v;
    step_one(g, b_pos);
  }
}

// One block computes a 64 x 64 tile of the output (or, split, of one partial sum) over the
// chunks [blockIdx.z * chunks_per_split, ...) of the reduction. partial == nullptr: the result
// with bias, residual and ReLU goes to y; else the raw sum to partial[blockIdx.z][m][column].
__global__ void __launch_bounds__(kThreads)
    igemm_kernel(Geometry g, const float* __restrict__ x, const float* __restrict__ w,
                 const float* __restrict__ bias, const float* __restrict__ z, bool relu,
                 float* __restrict__ y, float* __restrict__ partial) {
  // A's rows padded by 4: the transposed stores of a warp's four reduction offsets fall in two
  // banks' worth of rows instead of one (2-way, not 4-way, conflicts); rows stay 16-byte aligned.
  __shared__ __align__(16) float a_tile[2][kChunk][kTileM + 4];
  __shared__ __align__(16) float b_tile[2][kChunk][kTileN];
  const int t = threadIdx.x;
  const int n0 = blockIdx.x * kTileN;
  const int m0 = blockIdx.y * kTileM;
  const int plane = g.out_h * g.out_w;

  // The output position this thread loads B for, decomposed once.
  const int col = n0 + t % kTileN;
  const int b_col_ok = col < g.columns;
  int b_n = 0, b_ih0 = 0, b_iw0 = 0;
  if (b_col_ok) {
    b_n = col / plane;
    const int pq = col - b_n * plane;
    const int p = pq / g.out_w;
    const int q = pq - p * g.out_w;
    b_ih0 = p * g.stride_h - g.pad_h;
    b_iw0 = q * g.stride_w - g.pad_w;
  }

  const int total_chunks = (g.reduction + kChunk - 1) / kChunk;
  const int first = blockIdx.z * g.chunks_per_split;
  const int last = min(total_chunks, first + g.chunks_per_split);

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  const int tx = t % 16, ty = t / 16;
  Staged s;
  auto store = [&](int buffer) {
    const int am = t / 4, ak = (t % 4) * 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) a_tile[buffer][ak + i][am] = s.a[i];
    const int bk = (t / kTileN) * 4, bn = t % kTileN;
#pragma unroll
    for (int i = 0; i < 4; ++i) b_tile[buffer][bk + i][bn] = s.b[i];
  };
  // This thread's first B row, walked through the reduction without dividing.
  KPos b_pos = decompose(g, first * kChunk + (t / kTileN) * 4);
  const KPos chunk_step = decompose(g, kChunk);
  if (first < last) {
    load_chunk(g, x, w, m0, first * kChunk, b_col_ok, b_n, b_ih0, b_iw0, b_pos, s);
    store(0);
  }
  __syncthreads();
  int buffer = 0;
  for (int chunk = first; chunk < last; ++chunk) {
    const bool more = chunk + 1 < last;
    if (more) {
      step_by(g, b_pos, chunk_step);
      load_chunk(g, x, w, m0, (chunk + 1) * kChunk, b_col_ok, b_n, b_ih0, b_iw0, b_pos, s);
    }
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&a_tile[buffer][k][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&b_tile[buffer][k][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w};
      const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (more) store(buffer ^ 1);  // the other buffer: nobody reads it in this chunk
    __syncthreads();
    buffer ^= 1;
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= g.out_channels) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = n0 + tx * 4 + j;
      if (c >= g.columns) continue;
      if (partial != nullptr) {
        partial[(size_t(blockIdx.z) * g.out_channels + m) * g.columns + c] = acc[i][j];
        continue;
      }
      const int n = c / plane;
      const size_t at = (size_t(n) * g.out_channels + m) * plane + (c - n * plane);
      float v = acc[i][j];
      if (bias != nullptr) v += bias[m];
      if (z != nullptr) v += z[at];
      if (relu && v < 0.0f) v = 0.0f;  // NaN stays NaN
      y[at] = v;
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
    const int n = c / plane;
    const size_t at = (size_t(n) * g.out_channels + m) * plane + (c - n * plane);
    if (bias != nullptr) v += bias[m];
    if (z != nullptr) v += z[at];
    if (relu && v < 0.0f) v = 0.0f;
    y[at] = v;
  });
}

}  // namespace

bool igemm_applicable(const Conv2dParams& p) {
  if (p.groups != 1 || p.allow_tf32) return false;
  const int64_t columns = p.batch * p.out_h * p.out_w;
  const int64_t reduction = p.in_channels * p.kernel_h * p.kernel_w;
  // Indices in int, with room for the tile and split arithmetic.
  const int64_t limit = INT_MAX / 4;
  return columns > 0 && columns < limit && reduction > 0 && reduction < limit &&
         ceil_div(p.out_channels, kTileM) <= 65535 &&  // gridDim.y
         p.out_channels < limit && p.batch * p.in_channels * p.in_h * p.in_w < limit &&
         p.batch * p.out_channels * p.out_h * p.out_w < limit && p.out_channels * reduction < limit;
}

void conv2d_igemm(const Conv2dParams& p, const float* x, const float* w, const float* bias,
                  const float* z, bool relu, float* y, int device, void* stream_handle) {
  NNX_CHECK(igemm_applicable(p), ErrorKind::unsupported,
            "Conv2d on CUDA: the implicit-GEMM kernel takes groups 1 in float32 only");
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
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
  const int tiles_n = int(ceil_div(g.columns, kTileN));
  const int tiles_m = int(ceil_div(g.out_channels, kTileM));
  const int chunks = int(ceil_div(g.reduction, kChunk));
  // Split the reduction until about two blocks per multiprocessor, each keeping 8 chunks or
  // more (fewer make the partial sums' traffic dominate).
  const int64_t tiles = int64_t(tiles_n) * tiles_m;
  const int64_t want = 2 * int64_t(multiprocessor_count());
  int splits = int(std::clamp<int64_t>(ceil_div(want, tiles), 1, std::max(1, chunks / 8)));
  splits = std::min(splits, 64);
  g.chunks_per_split = int(ceil_div(chunks, splits));
  splits = int(ceil_div(chunks, g.chunks_per_split));  // none empty
  const dim3 grid{unsigned(tiles_n), unsigned(tiles_m), unsigned(splits)};
  if (splits == 1) {
    igemm_kernel<<<grid, kThreads, 0, stream>>>(g, x, w, bias, z, relu, y, nullptr);
    NNX_CUDA_CHECK_LAUNCH();
    return;
  }
  const size_t partial_bytes = size_t(splits) * size_t(g.out_channels) * size_t(g.columns) * 4;
  const Workspace partial(device, partial_bytes, stream);
  float* sums = static_cast<float*>(partial.get());
  igemm_kernel<<<grid, kThreads, 0, stream>>>(g, x, w, nullptr, nullptr, false, nullptr, sums);
  NNX_CUDA_CHECK_LAUNCH();
  const int64_t total = int64_t(g.out_channels) * g.columns;
  igemm_reduce_kernel<<<grid_for(total), kBlockSize, 0, stream>>>(g, splits, sums, bias, z, relu,
                                                                  y);
  NNX_CUDA_CHECK_LAUNCH();
}

namespace {

std::atomic<int> mode_override{-1};
std::mutex choice_mutex;
std::map<std::string, bool> choices;  // problem key -> run conv2d_igemm

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

void set_igemm_mode(IgemmMode mode) {
  mode_override.store(int(mode));
  std::lock_guard<std::mutex> lock(choice_mutex);
  choices.clear();
}

void reset_igemm_mode() {
  mode_override.store(-1);
  std::lock_guard<std::mutex> lock(choice_mutex);
  choices.clear();
}

bool use_igemm(const Conv2dParams& p, const std::string& key, void* stream_handle,
               const std::function<void()>& run_cudnn, const std::function<void()>& run_igemm) {
  if (!igemm_applicable(p)) return false;
  const IgemmMode mode = igemm_mode();
  if (mode != IgemmMode::automatic) return mode == IgemmMode::on;
  {
    std::lock_guard<std::mutex> lock(choice_mutex);
    if (auto it = choices.find(key); it != choices.end()) return it->second;
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (capturing(stream)) return false;  // no timing in a capture: cuDNN, undecided
  // Each once untimed (cuDNN builds its plans, the caching allocator its blocks), then the
  // better of two rounds of three runs each.
  run_cudnn();
  run_igemm();
  float cudnn_ms = 1e30f, igemm_ms = 1e30f;
  for (int round = 0; round < 2; ++round) {
    cudnn_ms = std::min(cudnn_ms, time_runs(run_cudnn, stream, 5));
    igemm_ms = std::min(igemm_ms, time_runs(run_igemm, stream, 5));
  }
  const bool faster = igemm_ms < cudnn_ms;
  std::lock_guard<std::mutex> lock(choice_mutex);
  return choices.emplace(key, faster).first->second;
}

IgemmMode igemm_mode() {
  const int forced = mode_override.load();
  if (forced >= 0) return IgemmMode(forced);
  static const IgemmMode from_env = [] {
    const char* v = std::getenv("NNX_CONV_IGEMM");
#ifdef NNX_CUDA_EMULATOR
    // Timing on the emulator measures the host: cuDNN's stand-in unless asked for.
    if (v == nullptr) return IgemmMode::off;
#endif
    if (v == nullptr) return IgemmMode::automatic;
    if (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0) return IgemmMode::off;
    if (std::strcmp(v, "1") == 0 || std::strcmp(v, "on") == 0) return IgemmMode::on;
    return IgemmMode::automatic;
  }();
  return from_env;
}

}  // namespace nnx::cuda
