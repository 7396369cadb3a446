// The caching device allocator of one CUDA device: blocks rounded to size classes, kept after
// they are freed and handed out again, so that steady-state inference never calls cudaMalloc
// or cudaFree (both of which synchronise the device).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "nnx/allocator.h"

namespace nnx::cuda {

// The memory of the CUDA graphs one Executor captures on its stream: between begin_pool and
// end_pool, blocks freed on that stream are kept here instead of in the shared cache, and
// allocations on it take them back first, so that the graph's temporaries are addresses no one
// else is handed while the graph can be replayed. They count as allocated until release_pool.
class GraphPool {
 public:
  GraphPool() = default;
  GraphPool(const GraphPool&) = delete;
  GraphPool& operator=(const GraphPool&) = delete;
  size_t bytes() const { return bytes_; }  // held free for the graphs
  size_t tasks() const { return kept_.size(); }

 private:
  friend class CachingAllocator;
  std::vector<std::pair<void*, size_t>> free_;  // block, size class
  size_t bytes_ = 0;
  std::vector<std::shared_ptr<void>> kept_;  // host tasks the graphs call (keep_with_pool)
};

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  ~CachingAllocator() override;

  // On this thread's current stream for the device.
  void* allocate(size_t nbytes) override;
  // A block for use on `stream`: a cached block last used there is taken at once; one from
  // another stream only once the work queued on it before its free has finished.
  void* allocate(size_t nbytes, cudaStream_t stream);
  void deallocate(void* ptr, size_t nbytes) noexcept override;
  // The block at ptr is also used on `stream` (see nnx::cuda::record_stream).
  void record_stream(void* ptr, cudaStream_t stream);
  // The same where ptr starts a live block with room for another stream; false (nothing done)
  // elsewhere, memory this allocator did not hand out included.
  bool try_record_stream(void* ptr, cudaStream_t stream) noexcept;

  // `stream` is being destroyed, its work finished: blocks used on it no longer wait for it.
  void forget_stream(cudaStream_t stream);

  // Blocks freed on `stream` go to `pool` until end_pool (see GraphPool); one pool per stream.
  void begin_pool(cudaStream_t stream, GraphPool& pool);
  void end_pool(cudaStream_t stream);
  // Keeps `object` (a host task the graph being captured on `stream` calls) until the stream's
  // pool is released; false when the stream has no pool.
  bool keep_with_pool(cudaStream_t stream, std::shared_ptr<void> object);
  // Returns the pool's blocks to the cache. The work that used them must be finished (the
  // graphs' stream synchronised).
  void release_pool(GraphPool& pool);

  Device device() const override { return Device::cuda(device_); }
  AllocatorStats stats() const override;
  void reset_peak() override;
  void empty_cache() override;

  // The size class a request is served from: 512-byte steps up to 1 MiB; above that four
  // classes per power of two, at most 2 MiB apart, which bounds the waste to a quarter of the
  // request and to 2 MiB.
  static size_t round_size(size_t nbytes);

  // Streams one block can be used on (the allocating one plus record_stream's).
  static constexpr int kMaxStreamsPerBlock = 4;

 private:
  struct LiveBlock {
    size_t size = 0;
    cudaStream_t streams[kMaxStreamsPerBlock] = {};
    int num_streams = 1;  // streams[0] allocated it
  };
  struct FreeBlock {
    void* ptr = nullptr;
    cudaStream_t stream = nullptr;  // where it can be reused at once, if only_stream
    bool only_stream = true;        // used on `stream` alone
    bool tracked = true;            // every event below was recorded
    cudaEvent_t events[kMaxStreamsPerBlock] = {};
    cudaStream_t event_streams[kMaxStreamsPerBlock] = {};  // where each event was recorded
    int num_events = 0;
  };

  void* take_cached_locked(size_t size, cudaStream_t stream, bool capturing);
  void* system_allocate_locked(size_t size, size_t requested);
  cudaEvent_t new_event_locked();
  void recycle_events_locked(FreeBlock& block);
  // Whether the work before the block's free is done on every stream but `stream` (whose own
  // order already puts new work after it).
  bool idle_for_locked(const FreeBlock& block, cudaStream_t stream);
  // Waits for every cached block's pending work and returns the blocks to the system.
  void release_cached_locked() noexcept;
  [[noreturn]] void throw_out_of_memory_locked(size_t requested);

  const int device_;
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<FreeBlock>> free_;  // by size class
  std::unordered_map<void*, LiveBlock> live_;
  std::unordered_map<cudaStream_t, GraphPool*> pools_;  // streams between begin_ and end_pool
  std::vector<cudaEvent_t> spare_events_;
  AllocatorStats stats_;
};

// The allocator of `device`, made on first use; throws Error(device) if there is no such device.
CachingAllocator& caching_allocator(int device);
// CachingAllocator::forget_stream on every device's allocator made so far (destroy_stream).
void forget_stream(cudaStream_t stream);

}  // namespace nnx::cuda
