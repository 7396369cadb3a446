// Internal helpers of the CUDA backend shared by its runtime files: the typed current stream and
// a guard that makes a device current for a scope.
#pragma once

#include <cuda_runtime_api.h>

#include "runtime/cuda/cuda_check.h"

namespace nnx::cuda {

// The largest device index the per-thread stream table holds.
inline constexpr int kMaxDevices = 64;

// Throws Error(device) unless `device` names a visible device ("no CUDA device: <reason>").
void check_device(int device);

// This thread's current stream for `device` (nullptr, the legacy stream, until set).
cudaStream_t current_cuda_stream(int device);

// Makes `device` current for the scope and restores the previous one: the runtime's calls
// (cudaMalloc, event creation) act on the current device, and callers must not see it change.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    NNX_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ == device) {
      previous_ = -1;
      return;
    }
    NNX_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace nnx::cuda
