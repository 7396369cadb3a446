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

// A std::vector allocator whose blocks start on a 64-byte boundary (weights that kernels read
// with aligned vector loads).
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const {
    return true;
  }
};
template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace nnx::cpu
