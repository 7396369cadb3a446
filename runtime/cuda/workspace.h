// Scratch device memory for library calls (cuDNN workspaces) from the caching allocator, for the
// .cu files, which are C++17 and cannot include the core's C++20 headers (nnx/allocator.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace nnx::cuda {

// `bytes` of device memory on `device` for the scope, ordered on `stream`: it may be freed right
// after the launches that use it are queued, since the next user on that stream runs after them.
// Throws Error(device) when the device is out of memory.
class Workspace {
 public:
  Workspace(int device, size_t bytes, cudaStream_t stream);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  int device_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

}  // namespace nnx::cuda
