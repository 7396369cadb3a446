// Weight blocks on huge pages (see aligned_buffer.h).
#include "kernels/cpu/aligned_buffer.h"

#include <sys/mman.h>

namespace nnx::cpu {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}  // namespace

void* allocate_weights(size_t bytes) {
  if (bytes < kHugePage) return ::operator new(bytes, std::align_val_t(64));
  void* p = ::operator new(bytes, std::align_val_t(kHugePage));
  // Advice only: where the kernel has no transparent huge pages, 4 KiB pages serve as before.
  ::madvise(p, (bytes + kHugePage - 1) / kHugePage * kHugePage, MADV_HUGEPAGE);
  return p;
}

void free_weights(void* p, size_t bytes) {
  ::operator delete(p, std::align_val_t(bytes < kHugePage ? 64 : kHugePage));
}

}  // namespace nnx::cpu
