// Workspaces from the caching allocator (see workspace.h).
#include "runtime/cuda/workspace.h"

#include "runtime/cuda/cuda_allocator.h"

namespace nnx::cuda {

Workspace::Workspace(int device, size_t bytes, cudaStream_t stream)
    : device_(device), bytes_(bytes) {
  if (bytes_ > 0) ptr_ = caching_allocator(device_).allocate(bytes_, stream);
}

Workspace::~Workspace() {
  if (ptr_ != nullptr) caching_allocator(device_).deallocate(ptr_, bytes_);
}

}  // namespace nnx::cuda
