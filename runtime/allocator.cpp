// The pooled CPU allocator and Storage. Freed blocks are kept in per-size-class free lists and
// handed out again, so steady-state inference neither calls malloc nor touches fresh pages.
#include "nnx/allocator.h"

#include <sys/mman.h>

#include <array>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "nnx/cuda.h"
#include "nnx/error.h"

namespace nnx {

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
// Fuzz builds only (tests/fuzz): a description may legitimately declare layers of any size, so
// the targets that build ops cap single CPU allocations here, and libFuzzer's malloc limit
// flags only the allocations that no check of the input bounded.
size_t fuzz_allocation_limit = SIZE_MAX;
#endif

namespace {

// Size classes: multiples of 64 bytes up to 4 KiB, then four classes per power of two, which
// bounds the waste of a rounded-up block to 25%.
size_t size_class(size_t nbytes) {
  if (nbytes <= 4096) return std::max<size_t>(64, (nbytes + 63) & ~size_t(63));
  int top = 63 - __builtin_clzll(nbytes - 1);  // 2^top < nbytes <= 2^(top+1)
  size_t step = size_t(1) << (top - 2);
  return (nbytes + step - 1) / step * step;
}

class PooledCpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    // Exact blocks, freed at once (below): ASan then sees every overrun and use after free.
    NNX_CHECK(nbytes <= fuzz_allocation_limit, ErrorKind::device, "fuzz build: ", nbytes,
              " bytes asked for, over the limit of ", fuzz_allocation_limit);
    void* block = nullptr;
    NNX_CHECK(posix_memalign(&block, kAlignment, std::max<size_t>(nbytes, 1)) == 0,
              ErrorKind::device, "out of CPU memory: asked for ", nbytes, " bytes");
    return block;
#endif
    size_t cls = size_class(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.allocations;
    void* ptr = nullptr;
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
    } else {
      ptr = std::aligned_alloc(kAlignment, cls);
      if (ptr == nullptr) {
        release_cached_locked();
        ptr = std::aligned_alloc(kAlignment, cls);
      }
      NNX_CHECK(ptr != nullptr, ErrorKind::device, "out of CPU memory: asked for ", cls,
                " bytes with ", stats_.reserved_bytes, " bytes reserved");
      if (cls >= (size_t(2) << 20)) madvise(ptr, cls, MADV_HUGEPAGE);
      stats_.reserved_bytes += cls;
      ++stats_.system_allocations;
    }
    stats_.current_bytes += cls;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes) noexcept override {
    if (ptr == nullptr) return;
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    std::free(ptr);
    return;
#endif
    size_t cls = size_class(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.current_bytes -= cls;
    try {
      free_[cls].push_back(ptr);
    } catch (...) {  // no memory even for the free list: give the block back instead
      std::free(ptr);
      stats_.reserved_bytes -= cls;
    }
  }

  Device device() const override {
    return Device::cpu();
  }
  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes = stats_.current_bytes;
  }
  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached_locked();
  }
  ~PooledCpuAllocator() override {
    release_cached_locked();
  }

 private:
  void release_cached_locked() {
    for (auto& [cls, blocks] : free_) {
      for (void* p : blocks) std::free(p);
      stats_.reserved_bytes -= cls * blocks.size();
    }
    free_.clear();
  }

  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

std::mutex registry_mutex;
std::array<DeviceAllocatorFactory, 2> device_allocators{};

}  // namespace

Allocator& cpu_allocator() {
  // Never destroyed: tensors in static objects may outlive any destruction order.
  static Allocator* instance = new PooledCpuAllocator();
  return *instance;
}

std::unique_ptr<Allocator> make_pooled_cpu_allocator() {
  return std::make_unique<PooledCpuAllocator>();
}

void register_device_allocator(Device::Type type, DeviceAllocatorFactory factory) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  device_allocators[size_t(type)] = factory;
}

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) return cpu_allocator();
  if (device.is_cuda()) cuda::init();  // registers the CUDA allocator on first use
  DeviceAllocatorFactory factory;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    factory = device_allocators[size_t(device.type)];
  }
  NNX_CHECK(factory != nullptr, ErrorKind::device, "no allocator for device ", device.str(),
            ": this build has no CUDA backend");
  return factory(device.index);
}

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Allocator& allocator) {
  void* data = allocator.allocate(nbytes);
  Allocator* a = &allocator;
  return std::shared_ptr<Storage>(new Storage(data, nbytes, allocator.device(),
                                              [a, nbytes](void* p) { a->deallocate(p, nbytes); }));
}

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  return allocate(nbytes, allocator_for(device));
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, Device device,
                                       std::function<void(void*)> deleter) {
  return std::shared_ptr<Storage>(new Storage(data, nbytes, device, std::move(deleter)));
}

Storage::~Storage() {
  if (deleter_) deleter_(data_);
}

}  // namespace nnx
