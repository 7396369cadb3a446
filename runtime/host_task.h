// How the core (runtime/op.cpp) runs an op's CPU body inside a CUDA graph being captured, without
// CUDA headers: the CUDA backend fills these in (cuda::init); they stay null in builds without it.
// Internal: not installed.
#pragma once

#include <functional>
#include <string>

#include "nnx/tensor.h"

namespace nnx::detail {

struct HostTaskHooks {
  // Whether work queued on `stream` is being captured into a CUDA graph.
  bool (*capturing)(void* stream) = nullptr;
  // A host tensor in page-locked memory (what a captured copy may read and write), made in any
  // capture mode; freed when the last reference goes.
  Tensor (*pinned)(const Shape& shape, DType dtype) = nullptr;
  // nbytes from src to dst, queued on `stream` (a copy node while it is captured).
  void (*copy)(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes,
               void* stream) = nullptr;
  // Queues `task` on `stream` of `device` as host work in stream order (cuda::launch_host_task).
  void (*launch)(void* stream, int device, std::function<void()> task) = nullptr;
};

const HostTaskHooks& host_task_hooks();
void set_host_task_hooks(const HostTaskHooks& hooks);

}  // namespace nnx::detail
