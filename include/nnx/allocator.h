// Memory for tensors: the Allocator interface, its statistics, and the pooled CPU allocator.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "nnx/dtype.h"

namespace nnx {

struct AllocatorStats {
  size_t current_bytes = 0;       // handed out and not yet returned
  size_t peak_bytes = 0;          // largest current_bytes seen
  size_t reserved_bytes = 0;      // held from the system, handed out or cached
  size_t allocations = 0;         // calls to allocate()
  size_t system_allocations = 0;  // of which went to the system (cache misses)
};

class NNX_API Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns memory aligned to at least kAlignment bytes; throws Error(device) when exhausted.
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) noexcept = 0;
  virtual Device device() const = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Returns cached, unused blocks to the system.
  virtual void empty_cache() {}

  static constexpr size_t kAlignment = 64;
};

// The process-wide pooled CPU allocator: 64-byte aligned blocks in size classes, freed blocks
// kept for reuse so that steady-state inference neither calls malloc nor faults pages in.
NNX_API Allocator& cpu_allocator();
NNX_API std::unique_ptr<Allocator> make_pooled_cpu_allocator();

// A block of memory that tensors view. Freed through its deleter when the last tensor goes.
class NNX_API Storage {
 public:
  // Memory from an allocator (which must outlive the storage; the global ones do).
  static std::shared_ptr<Storage> allocate(size_t nbytes, Allocator& allocator);
  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device);
  // Memory someone else owns; `deleter` (may be empty) runs when the storage dies.
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device,
                                       std::function<void(void*)> deleter = {});

  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
      : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}
  void* data_;
  size_t nbytes_;
  Device device_;
  std::function<void(void*)> deleter_;
};

// Device allocators are provided by backends (the CUDA backend registers one per device).
using DeviceAllocatorFactory = Allocator& (*)(int device_index);
NNX_API void register_device_allocator(Device::Type type, DeviceAllocatorFactory factory);
NNX_API Allocator& allocator_for(Device device);

}  // namespace nnx
