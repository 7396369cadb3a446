// Host work in stream order that a CUDA graph can hold (cudaLaunchHostFunc): what lets an op
// without a CUDA body (a user op running its CPU body on host copies) be part of a captured CUDA
// graph, its copies to and from page-locked memory nodes of the graph too.
#pragma once

#include <functional>
#include <string>

#include "nnx/tensor.h"

namespace nnx::cuda {

// Whether `stream` (a cudaStream_t; the legacy one: never) is being captured into a CUDA graph.
bool stream_capturing(void* stream);

// A host tensor in page-locked memory, allocated in relaxed capture mode (allowed while this
// thread captures), released with cudaFreeHost when the last reference goes.
Tensor pinned_tensor(const Shape& shape, DType dtype);

// Adds task() to the CUDA graph being captured on `stream` of `device` (Error(usage) when none
// is): at every replay it runs on a driver thread once the work before it is done, and the work
// after it waits for it. It must make no CUDA call (nor free what it holds: the graph's memory
// pool, GraphPool, keeps the task and all it holds until the pool is released). What it throws
// is kept for take_host_task_error(stream).
void launch_host_task(void* stream, int device, std::function<void()> task);

// The first error a host task of `stream` threw since the last call; empty when none did.
std::string take_host_task_error(void* stream);

}  // namespace nnx::cuda
