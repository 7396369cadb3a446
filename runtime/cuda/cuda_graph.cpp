// CUDA graph capture for the Executor (see cuda_graph.h).
#include "runtime/cuda/cuda_graph.h"

#include <cuda_runtime_api.h>

#include "nnx/error.h"
#include "runtime/cuda/cuda_allocator.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_runtime.h"

namespace nnx::cuda {

void GraphPoolDeleter::operator()(GraphPool* pool) const noexcept {
  delete pool;
}

GraphPoolPtr new_graph_pool() {
  return GraphPoolPtr(new GraphPool());
}

size_t graph_pool_bytes(const GraphPool& pool) {
  return pool.bytes();
}

size_t graph_pool_tasks(const GraphPool& pool) {
  return pool.tasks();
}

void release_graph_pool(GraphPool& pool, int device) {
  caching_allocator(device).release_pool(pool);
}

void keep_for_stream(void* ptr, void* stream, int device) noexcept {
  try {
    (void)caching_allocator(device).try_record_stream(ptr, static_cast<cudaStream_t>(stream));
  } catch (...) {  // no such device: nothing of ours to keep
  }
}

void* capture_graph(void* stream_handle, int device, GraphPool& pool,
                    const std::function<void()>& body) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  DeviceGuard guard(device);
  CachingAllocator& allocator = caching_allocator(device);
  allocator.begin_pool(stream, pool);  // first: nothing is left capturing if it throws
  if (const cudaError_t began = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
      began != cudaSuccess) {
    allocator.end_pool(stream);
    NNX_CUDA_CHECK(began);
  }
  cudaGraph_t graph = nullptr;
  try {
    body();
  } catch (...) {
    allocator.end_pool(stream);
    (void)cudaStreamEndCapture(stream, &graph);  // leaves capture mode; the graph is discarded
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  allocator.end_pool(stream);
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (ended != cudaSuccess || graph == nullptr) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    fail(ErrorKind::device, "CUDA graph capture failed: ", cudaGetErrorString(ended),
         " (a call in the run that a capture cannot record)");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  if (made != cudaSuccess) {
    (void)cudaGetLastError();
    fail(ErrorKind::device, "CUDA graph instantiation failed: ", cudaGetErrorString(made));
  }
  return exec;
}

void* alloc_pinned(size_t bytes) {
  void* p = nullptr;
  NNX_CUDA_CHECK(cudaMallocHost(&p, bytes));
  return p;
}

void free_pinned(void* p) noexcept {
  if (p != nullptr) (void)cudaFreeHost(p);
}

void wait_for_legacy(void* stream, int device) {
  DeviceGuard guard(device);
  cudaEvent_t event = nullptr;
  NNX_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  cudaError_t e = cudaEventRecord(event, cudaStreamLegacy);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), event, 0);
  (void)cudaEventDestroy(event);  // released once the wait is done
  NNX_CUDA_CHECK(e);
}

void launch_graph(void* exec, void* stream) {
  NNX_CUDA_CHECK(
      cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream)));
}

void destroy_graph(void* exec) noexcept {
  if (exec != nullptr) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
}

}  // namespace nnx::cuda
