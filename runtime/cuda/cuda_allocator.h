// The caching device allocator of one CUDA device: blocks rounded to size classes, kept after
// they are freed and handed out again, so that steady-state inference never calls cudaMalloc
// or cudaFree (both of which synchronise the device).
#pragma once

#include <cuda_runtime_api.h>

#include <mutex>
#include <unordered_map>
#include <vector>

#include "nnx/allocator.h"

namespace nnx::cuda {

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
  std::vector<cudaEvent_t> spare_events_;
  AllocatorStats stats_;
};

// The allocator of `device`, made on first use; throws Error(device) if there is no such device.
CachingAllocator& caching_allocator(int device);

}  // namespace nnx::cuda
