// 64-byte aligned float scratch that grows and is kept: one per thread (thread_local) gives the
// kernels' steady state no allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

namespace nnx::cpu {

struct AlignedBuffer {
  std::unique_ptr<float[]> storage;
  int64_t capacity = 0;
  float* get(int64_t floats) {
    if (capacity < floats) {
      storage = std::make_unique<float[]>(size_t(floats + 16));
      capacity = floats;
    }
    auto address = reinterpret_cast<uintptr_t>(storage.get());
    return storage.get() + ((64 - address % 64) % 64) / sizeof(float);
  }
};

// Blocks of 2 MiB and more on a 2 MiB boundary, marked for transparent huge pages: the
// prepared weights every inference streams through (ResNet-50's 190 MB) then take a TLB entry
// per 2 MiB, and their first touch a fault per 2 MiB, not per 4 KiB (ResNet-50 on 2 Zen 5
// cores: its 14x14 and 7x7 3x3 layers 8-10% faster, the first run 850 -> 530-690 ms; peak RSS
// 230 -> 251 MB, the blocks' last huge pages partly unused).
void* allocate_weights(size_t bytes);
void free_weights(void* p, size_t bytes);

// A std::vector allocator whose blocks start on a 64-byte boundary (weights that kernels read
// with aligned vector loads), large ones on huge pages (allocate_weights).
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(allocate_weights(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { free_weights(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const {
    return true;
  }
};
template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace nnx::cpu
