// 64-byte aligned float scratch that grows and is kept: one per thread (thread_local) gives the
// kernels' steady state no allocation.
#pragma once

#include <cstdint>
#include <memory>

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

}  // namespace nnx::cpu
