// The CUDA emulator's own semantics (README.md), with kernels written here: barriers and shared
// memory, every warp shuffle, a divergent shuffle stopped, launch configuration errors, copies
// checked against the device allocations, and stream capture (recording, replay with the
// recorded arguments, and the calls that invalidate a capture). Built only with
// -DNNX_CUDA_EMULATOR=ON, through cu_to_cpp.py like the runtime's kernels.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <numeric>
#include <thread>
#include <vector>

namespace {

__global__ void reverse_each_block(const int* in, int* out) {
  __shared__ int tile[256];
  const int base = blockIdx.x * blockDim.x;
  tile[threadIdx.x] = in[base + threadIdx.x];
  __syncthreads();
  out[base + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

// out[4 * t + k]: what thread t received from shuffle k (down 3, up 5, xor 9, from lane 7).
__global__ void shuffles(int* out) {
  const int t = threadIdx.x, v = 100 + t;
  out[4 * t + 0] = __shfl_down_sync(0xffffffffu, v, 3);
  out[4 * t + 1] = __shfl_up_sync(0xffffffffu, v, 5);
  out[4 * t + 2] = __shfl_xor_sync(0xffffffffu, v, 9);
  out[4 * t + 3] = __shfl_sync(0xffffffffu, v, 7);
}

// out[t]: thread t's view of a shared word nobody wrote (each block anew), then 8-lane segments'
// shuffles: xor 12 (may reach an earlier segment), down 5, from lane -1 (lane 7 of the segment).
__global__ void fresh_and_segments(unsigned* out, int* seg) {
  __shared__ unsigned never_written;
  out[blockIdx.x * blockDim.x + threadIdx.x] = never_written;
  __syncthreads();
  if (threadIdx.x == 0) never_written = 1;
  const int t = threadIdx.x;
  seg[3 * t + 0] = __shfl_xor_sync(0xffffffffu, t, 12, 8);
  seg[3 * t + 1] = __shfl_down_sync(0xffffffffu, t, 5, 8);
  seg[3 * t + 2] = __shfl_sync(0xffffffffu, t, -1, 8);
}

__global__ void shuffle_outside_mask(int* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, int(threadIdx.x), 20);
}

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2;
  }
}

__global__ void divergent_shuffle(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0xffffffffu, int(threadIdx.x), 20);
}

__global__ void add(float* x, int n, float v) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) x[i] += v;
}

template <class T>
T* device_alloc(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

std::vector<float> read(const float* d, size_t n) {
  std::vector<float> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(CudaEmulator, BarrierOrdersSharedMemory) {
  std::vector<int> in(3 * 256);
  std::iota(in.begin(), in.end(), 0);
  int* d_in = device_alloc<int>(in.size());
  int* d_out = device_alloc<int>(in.size());
  ASSERT_EQ(cudaMemcpy(d_in, in.data(), in.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  reverse_each_block<<<3, 256>>>(d_in, d_out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<int> out(in.size());
  ASSERT_EQ(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 256; ++t) ASSERT_EQ(out[b * 256 + t], b * 256 + 255 - t) << b << " " << t;
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST(CudaEmulator, WarpShufflesFollowTheirDefinitions) {
  const int threads = 64;
  int* d = device_alloc<int>(4 * threads);
  shuffles<<<1, threads>>>(d);
  std::vector<int> out(4 * threads);
  ASSERT_EQ(cudaMemcpy(out.data(), d, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int t = 0; t < threads; ++t) {
    const int lane = t % 32, warp = t - lane;
    EXPECT_EQ(out[4 * t + 0], 100 + (lane + 3 < 32 ? t + 3 : t)) << t;
    EXPECT_EQ(out[4 * t + 1], 100 + (lane >= 5 ? t - 5 : t)) << t;
    EXPECT_EQ(out[4 * t + 2], 100 + warp + (lane ^ 9)) << t;
    EXPECT_EQ(out[4 * t + 3], 100 + warp + 7) << t;
  }
  cudaFree(d);
}

TEST(CudaEmulatorDeathTest, DivergentShufflesAndBarriersStopNamingTheKernel) {
  int* d = device_alloc<int>(32);
  EXPECT_DEATH(divergent_shuffle<<<1, 32>>>(d), "divergent_shuffle.*divergent warp");
  EXPECT_DEATH(shuffle_outside_mask<<<1, 32>>>(d), "outside the member mask|leaves out");
  EXPECT_DEATH(divergent_barrier<<<1, 32>>>(d), "divergent_barrier.*a divergent barrier");
  cudaFree(d);
}

TEST(CudaEmulator, SharedMemoryStartsAsGarbageInEveryBlock) {
  unsigned* d = device_alloc<unsigned>(2 * 32);
  int* seg = device_alloc<int>(3 * 32);
  fresh_and_segments<<<2, 32>>>(d, seg);
  std::vector<unsigned> out(2 * 32);
  ASSERT_EQ(cudaMemcpy(out.data(), d, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (unsigned v : out) EXPECT_EQ(v, 0xFFFFFFFFu) << "the first block's 1 leaked into the next";
  std::vector<int> s(3 * 32);
  ASSERT_EQ(cudaMemcpy(s.data(), seg, s.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int t = 0; t < 32; ++t) {
    const int first = t & ~7, x = t ^ 12;
    EXPECT_EQ(s[3 * t + 0], x <= first + 7 ? x : t) << t;
    EXPECT_EQ(s[3 * t + 1], t + 5 <= first + 7 ? t + 5 : t) << t;
    EXPECT_EQ(s[3 * t + 2], first + 7) << t;
  }
  cudaFree(d);
  cudaFree(seg);
}

TEST(CudaEmulator, BadLaunchConfigurationsAreLaunchErrors) {
  float* d = device_alloc<float>(4);
  ASSERT_EQ(cudaMemset(d, 0, 16), cudaSuccess);
  add<<<1, 2048>>>(d, 4, 1.0f);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  add<<<0, 32>>>(d, 4, 1.0f);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "read once";
  EXPECT_EQ(read(d, 4), std::vector<float>(4, 0.0f)) << "nothing ran";
  cudaFree(d);
}

TEST(CudaEmulator, CopiesAreCheckedAgainstTheDeviceAllocations) {
  float* d = device_alloc<float>(8);
  std::vector<float> h(16, 1.0f);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 8 * 4, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 16 * 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue)
      << "past the allocation";
  EXPECT_EQ(cudaMemcpy(h.data(), d, 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue)
      << "directions swapped";
  EXPECT_EQ(cudaMemcpy(d + 4, d, 4 * 4, cudaMemcpyDeviceToDevice), cudaSuccess);
  EXPECT_EQ(cudaFree(h.data()), cudaErrorInvalidValue) << "not a device allocation";
  (void)cudaGetLastError();
  cudaFree(d);
}

TEST(CudaEmulator, CaptureRecordsAndReplaysWithTheRecordedArguments) {
  const int n = 1000;
  float* d = device_alloc<float>(n);
  ASSERT_EQ(cudaMemset(d, 0, n * 4), cudaSuccess);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  float value = 2.0f;
  add<<<4, 128, 0, s>>>(d, n, value);
  value = 100.0f;  // a launch copies its arguments: the graph keeps 2
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(read(d, n), std::vector<float>(n, 0.0f)) << "captured work does not run";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(read(d, n), std::vector<float>(n, 4.0f));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  cudaFree(d);
}

TEST(CudaEmulator, CallsACaptureCannotRecordInvalidateIt) {
  cudaStream_t s = nullptr, blocking = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  cudaGraph_t graph = nullptr;
  void* p = nullptr;

  // cudaMalloc in thread-local mode: refused, and the capture ends invalidated.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);

  // ... unless the thread relaxed its mode.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphDestroy(graph);

  // Synchronising the captured stream.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);

  // Legacy-stream work invalidates a blocking stream's capture, not a non-blocking one's.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(p, 0, 64, nullptr), cudaSuccess);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  ASSERT_EQ(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(p, 0, 64, nullptr), cudaErrorStreamCaptureImplicit);
  EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();

  // An event recorded in a capture is no node, and nothing may wait on it.
  cudaEvent_t e = nullptr;
  ASSERT_EQ(cudaEventCreate(&e), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(e, s), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(e), cudaErrorCapturedEvent);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  EXPECT_EQ(cudaEventRecord(e, s), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
  cudaEventDestroy(e);

  // A thread-local capture ends on the thread that began it.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  cudaError_t elsewhere = cudaSuccess;
  std::thread([&] { elsewhere = cudaStreamEndCapture(s, &graph); }).join();
  EXPECT_EQ(elsewhere, cudaErrorStreamCaptureWrongThread);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  (void)cudaGetLastError();

  cudaFree(p);
  cudaStreamDestroy(s);
  cudaStreamDestroy(blocking);
}

}  // namespace
