// Capturing an Executor's kernels as CUDA graphs and replaying them (runtime/executor.cpp).
// Handles travel as void* so that the executor needs no CUDA headers; builds without the CUDA
// backend never call these.
#pragma once

#include <functional>
#include <memory>

namespace nnx::cuda {

class GraphPool;  // runtime/cuda/cuda_allocator.h
struct GraphPoolDeleter {
  void operator()(GraphPool* pool) const noexcept;
};
using GraphPoolPtr = std::unique_ptr<GraphPool, GraphPoolDeleter>;
GraphPoolPtr new_graph_pool();
// Bytes the pool holds for its graphs' replays.
size_t graph_pool_bytes(const GraphPool& pool);
// Host tasks (runtime/cuda/host_task.h) its graphs call.
size_t graph_pool_tasks(const GraphPool& pool);
// Returns the pool's memory to device's allocator; the graphs using it must be finished and
// destroyed.
void release_graph_pool(GraphPool& pool, int device);

// Captures what body() queues on `stream` (of `device`) into an executable graph, memory that
// body frees kept in `pool`. Capture mode is thread-local: other threads' Executors go on.
// Anything body throws, or a capture the driver refuses (a synchronising call inside, say),
// comes out as an Error, with the stream no longer capturing; nothing was run.
// A caller's tensor memory that work queued on `stream` reads: kept from reuse until that work
// is done where the caching allocator of `device` handed it out; other memory is left alone.
void keep_for_stream(void* ptr, void* stream, int device) noexcept;

void* capture_graph(void* stream, int device, GraphPool& pool, const std::function<void()>& body);

// Page-locked host memory (what a captured copy to the host may write), and its release.
void* alloc_pinned(size_t bytes);
void free_pinned(void* p) noexcept;
// `stream` (of `device`) waits for the work queued so far on the device's legacy stream.
void wait_for_legacy(void* stream, int device);
void launch_graph(void* exec, void* stream);
void destroy_graph(void* exec) noexcept;

}  // namespace nnx::cuda
