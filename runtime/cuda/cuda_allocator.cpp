// The caching CUDA allocator. A freed block records an event on each stream that used it and
// waits in its size class's free list: the same stream takes it back at once (stream order
// already puts the new work after the old), another stream only once those events are done.
#include "runtime/cuda/cuda_allocator.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>

#include "nnx/error.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_runtime.h"

namespace nnx::cuda {
namespace {

constexpr size_t kSmallStep = 512;
constexpr size_t kSmallLimit = size_t(1) << 20;
constexpr size_t kLargeStep = size_t(2) << 20;
// Beyond this, rounding up could overflow; no device comes near it.
constexpr size_t kMaxRequest = size_t(1) << 60;

size_t round_up(size_t n, size_t step) {
  return (n + step - 1) / step * step;
}

std::string format_bytes(size_t n) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (n < 1024) return std::to_string(n) + " B";
  double value = double(n);
  int unit = 0;
  while (value >= 1024 && unit < 6) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.2f %s", value, kUnits[unit]);
  return text;
}

// A stream being captured into a graph must see neither cudaMalloc nor event queries; errors
// here (the legacy stream during another stream's global capture) read as "not capturing" and
// surface at the caller's next real call.
bool is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace

size_t CachingAllocator::round_size(size_t nbytes) {
  if (nbytes <= kSmallLimit) return std::max(kSmallStep, round_up(nbytes, kSmallStep));
  const int top = 63 - __builtin_clzll(nbytes - 1);  // 2^top < nbytes <= 2^(top+1)
  return round_up(nbytes, std::min(kLargeStep, size_t(1) << (top - 2)));
}

CachingAllocator::~CachingAllocator() {
  try {
    DeviceGuard guard(device_);
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached_locked();
  } catch (...) {  // the driver may already be shutting down at exit
  }
}

void* CachingAllocator::allocate(size_t nbytes) {
  return allocate(nbytes, current_cuda_stream(device_));
}

void* CachingAllocator::allocate(size_t nbytes, cudaStream_t stream) {
  DeviceGuard guard(device_);
  const bool capturing = is_capturing(stream);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.allocations;
  if (nbytes > kMaxRequest) throw_out_of_memory_locked(nbytes);
  const size_t size = round_size(nbytes);
  if (auto pool = pools_.find(stream); pool != pools_.end()) {
    // A block the graph being captured freed earlier: already counted as allocated.
    auto& held = pool->second->free_;
    for (size_t i = held.size(); i-- > 0;) {
      if (held[i].second != size) continue;
      void* ptr = held[i].first;
      held.erase(held.begin() + std::ptrdiff_t(i));
      pool->second->bytes_ -= size;
      LiveBlock& block = live_[ptr];
      block = LiveBlock{};
      block.size = size;
      block.streams[0] = stream;
      return ptr;
    }
  }
  void* ptr = take_cached_locked(size, stream, capturing);
  if (ptr == nullptr && capturing) {
    // A new block for a graph being captured (another stream took the cached ones): cudaMalloc
    // is refused in the capture's own mode, and allowed in the relaxed one (it queues nothing).
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    NNX_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    try {
      ptr = system_allocate_locked(size, nbytes);
    } catch (...) {
      (void)cudaThreadExchangeStreamCaptureMode(&mode);
      throw;
    }
    NNX_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  } else if (ptr == nullptr) {
    ptr = system_allocate_locked(size, nbytes);
  }
  try {
    LiveBlock& block = live_[ptr];
    block = LiveBlock{};
    block.size = size;
    block.streams[0] = stream;
  } catch (...) {  // no host memory for the bookkeeping: give the block back
    (void)cudaFree(ptr);
    stats_.reserved_bytes -= size;
    throw;
  }
  stats_.current_bytes += size;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  return ptr;
}

void* CachingAllocator::take_cached_locked(size_t size, cudaStream_t stream, bool capturing) {
  auto it = free_.find(size);
  if (it == free_.end()) return nullptr;
  std::vector<FreeBlock>& blocks = it->second;
  auto take = [&](size_t i) {
    FreeBlock block = blocks[i];
    blocks.erase(blocks.begin() + std::ptrdiff_t(i));  // keeps the rest in order of freeing
    recycle_events_locked(block);
    return block.ptr;
  };
  // Newest first: the most recently freed block is the likeliest to be in L2 still.
  for (size_t i = blocks.size(); i-- > 0;) {
    if (blocks[i].only_stream && blocks[i].stream == stream) return take(i);
  }
  if (capturing) return nullptr;
  for (size_t i = blocks.size(); i-- > 0;) {
    if (blocks[i].tracked && idle_for_locked(blocks[i], stream)) return take(i);
  }
  return nullptr;
}

void* CachingAllocator::system_allocate_locked(size_t size, size_t requested) {
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, size);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    // Emptying the cache cannot help a request larger than the whole device.
    size_t free_bytes = 0, total_bytes = 0;
    bool could_fit = true;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
      could_fit = size <= total_bytes;
    else
      (void)cudaGetLastError();
    if (could_fit && stats_.reserved_bytes > stats_.current_bytes) {
      release_cached_locked();
      status = cudaMalloc(&ptr, size);
      if (status == cudaErrorMemoryAllocation) (void)cudaGetLastError();
    }
  }
  if (status == cudaErrorMemoryAllocation) throw_out_of_memory_locked(requested);
  if (status != cudaSuccess) detail::throw_cuda_error(status, "cudaMalloc", __FILE__, __LINE__);
  stats_.reserved_bytes += size;
  ++stats_.system_allocations;
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t) noexcept {
  if (ptr == nullptr) return;
  try {
    DeviceGuard guard(device_);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(ptr);
    if (it == live_.end()) return;  // not ours: a noexcept free has no better answer
    const LiveBlock live = it->second;
    if (live.num_streams == 1) {
      if (auto pool = pools_.find(live.streams[0]); pool != pools_.end()) {
        // Freed while a graph is captured on its stream: kept for the graph (and still counted
        // as allocated: its replays write it).
        pool->second->free_.emplace_back(ptr, live.size);
        pool->second->bytes_ += live.size;
        live_.erase(it);
        return;
      }
    }
    live_.erase(it);
    stats_.current_bytes -= live.size;

    FreeBlock block;
    block.ptr = ptr;
    block.stream = live.num_streams > 0 ? live.streams[0] : nullptr;
    block.only_stream = live.num_streams == 1;
    for (int i = 0; i < live.num_streams; ++i) {
      // Work captured into a graph runs at replay, which no event recorded now can follow.
      cudaEvent_t event = is_capturing(live.streams[i]) ? nullptr : new_event_locked();
      if (event != nullptr && cudaEventRecord(event, live.streams[i]) == cudaSuccess) {
        block.events[block.num_events] = event;
        block.event_streams[block.num_events++] = live.streams[i];
        continue;
      }
      (void)cudaGetLastError();
      block.tracked = false;
      if (event != nullptr) spare_events_.push_back(event);
    }
    try {
      free_[live.size].push_back(block);
    } catch (...) {  // no host memory for the free list: wait for the block and give it back
      for (int i = 0; i < block.num_events; ++i) {
        (void)cudaEventSynchronize(block.events[i]);
        (void)cudaEventDestroy(block.events[i]);
      }
      if (!block.tracked) (void)cudaDeviceSynchronize();
      (void)cudaFree(ptr);
      stats_.reserved_bytes -= live.size;
    }
  } catch (...) {  // the device is unusable (driver error): the block is lost with it
  }
}

void CachingAllocator::record_stream(void* ptr, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  NNX_CHECK(it != live_.end(), ErrorKind::usage, "record_stream: ", ptr,
            " is not the start of a live block of the CUDA allocator of ", device().str());
  LiveBlock& block = it->second;
  for (int i = 0; i < block.num_streams; ++i) {
    if (block.streams[i] == stream) return;
  }
  NNX_CHECK(block.num_streams < kMaxStreamsPerBlock, ErrorKind::usage, "record_stream: block ", ptr,
            " used on more than ", kMaxStreamsPerBlock, " streams");
  block.streams[block.num_streams++] = stream;
}

bool CachingAllocator::try_record_stream(void* ptr, cudaStream_t stream) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return false;
  LiveBlock& block = it->second;
  for (int i = 0; i < block.num_streams; ++i) {
    if (block.streams[i] == stream) return true;
  }
  if (block.num_streams == kMaxStreamsPerBlock) return false;
  block.streams[block.num_streams++] = stream;
  return true;
}

cudaEvent_t CachingAllocator::new_event_locked() {
  if (!spare_events_.empty()) {
    cudaEvent_t event = spare_events_.back();
    spare_events_.pop_back();
    return event;
  }
  cudaEvent_t event = nullptr;
  if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess) return nullptr;
  return event;
}

void CachingAllocator::recycle_events_locked(FreeBlock& block) {
  for (int i = 0; i < block.num_events; ++i) spare_events_.push_back(block.events[i]);
  block.num_events = 0;
}

bool CachingAllocator::idle_for_locked(const FreeBlock& block, cudaStream_t stream) {
  for (int i = 0; i < block.num_events; ++i) {
    if (block.event_streams[i] == stream) continue;
    const cudaError_t status = cudaEventQuery(block.events[i]);
    if (status == cudaSuccess) continue;
    (void)cudaGetLastError();  // cudaErrorNotReady is reported as the last error too
    return false;
  }
  return true;
}

void CachingAllocator::release_cached_locked() noexcept {
  bool untracked = false;
  for (const auto& [size, blocks] : free_) {
    for (const FreeBlock& block : blocks) untracked |= !block.tracked;
  }
  if (untracked) (void)cudaDeviceSynchronize();
  for (auto& [size, blocks] : free_) {
    for (FreeBlock& block : blocks) {
      for (int i = 0; i < block.num_events; ++i) {
        (void)cudaEventSynchronize(block.events[i]);
        (void)cudaEventDestroy(block.events[i]);
      }
      (void)cudaFree(block.ptr);
      stats_.reserved_bytes -= size;
    }
  }
  free_.clear();
  for (cudaEvent_t event : spare_events_) (void)cudaEventDestroy(event);
  spare_events_.clear();
  (void)cudaGetLastError();
}

void CachingAllocator::throw_out_of_memory_locked(size_t requested) {
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) (void)cudaGetLastError();
  fail(ErrorKind::device, "CUDA out of memory on ", device().str(), ": asked for ", requested,
       " bytes (", format_bytes(requested), "), ", format_bytes(stats_.current_bytes),
       " allocated, ", format_bytes(stats_.reserved_bytes), " reserved, ", format_bytes(free_bytes),
       " free of ", format_bytes(total_bytes), " total");
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
}

void CachingAllocator::empty_cache() {
  DeviceGuard guard(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::forget_stream(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [ptr, block] : live_) {
    int kept = 0;
    for (int i = 0; i < block.num_streams; ++i)
      if (block.streams[i] != stream) block.streams[kept++] = block.streams[i];
    block.num_streams = kept;  // 0: no work pending anywhere, reusable by any stream once freed
  }
  // A later stream may get the same handle: it must not take these blocks as its own.
  for (auto& [size, blocks] : free_)
    for (FreeBlock& block : blocks)
      if (block.stream == stream) block.only_stream = false;
}

void CachingAllocator::begin_pool(cudaStream_t stream, GraphPool& pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  NNX_CHECK(pools_.emplace(stream, &pool).second, ErrorKind::usage,
            "begin_pool: the stream already has a graph pool");
}

void CachingAllocator::end_pool(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  pools_.erase(stream);
}

bool CachingAllocator::keep_with_pool(cudaStream_t stream, std::shared_ptr<void> object) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto pool = pools_.find(stream);
  if (pool == pools_.end()) return false;
  pool->second->kept_.push_back(std::move(object));
  return true;
}

void CachingAllocator::release_pool(GraphPool& pool) {
  std::vector<std::shared_ptr<void>> kept;  // released after the lock (they free host memory)
  std::lock_guard<std::mutex> lock(mutex_);
  kept.swap(pool.kept_);
  for (auto& [ptr, size] : pool.free_) {
    // Idle on every stream (the caller synchronised): any stream may take it at once.
    FreeBlock block;
    block.ptr = ptr;
    block.only_stream = false;
    try {
      free_[size].push_back(block);
    } catch (...) {  // no host memory for the free list: give the block back
      (void)cudaFree(ptr);
      stats_.reserved_bytes -= size;
    }
    stats_.current_bytes -= size;
  }
  pool.free_.clear();
  pool.bytes_ = 0;
}

namespace {
// Never destroyed: tensors in static objects may outlive any destruction order, and the CUDA
// runtime may be torn down before static destructors run.
std::atomic<CachingAllocator*> allocators[kMaxDevices] = {};
}  // namespace

void forget_stream(cudaStream_t stream) {
  for (auto& slot : allocators)
    if (CachingAllocator* allocator = slot.load(std::memory_order_acquire))
      allocator->forget_stream(stream);
}

CachingAllocator& caching_allocator(int device) {
  check_device(device);
  static std::mutex create_mutex;
  CachingAllocator* allocator = allocators[device].load(std::memory_order_acquire);
  if (allocator == nullptr) {
    std::lock_guard<std::mutex> lock(create_mutex);
    allocator = allocators[device].load(std::memory_order_relaxed);
    if (allocator == nullptr) {
      allocator = new CachingAllocator(device);
      allocators[device].store(allocator, std::memory_order_release);
    }
  }
  return *allocator;
}

}  // namespace nnx::cuda
