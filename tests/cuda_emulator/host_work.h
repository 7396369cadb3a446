// The CUDA emulator's entry points for the host-side stand-ins of NVIDIA's libraries
// (libraries.cpp): work queued on a stream like a kernel (run at once, or recorded while the
// stream is captured into a CUDA graph), and the check that a pointer is device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>

namespace nnx::emu {

cudaError_t submit_host_work(cudaStream_t stream, std::function<void()> work);
bool is_device_memory(const void* p, size_t bytes);
// Counts a call for NNX_EMU_STATS=1, which prints every call's count at exit.
void count(const char* what);

}  // namespace nnx::emu
