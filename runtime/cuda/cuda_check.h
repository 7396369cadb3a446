// Checks for CUDA runtime, cuBLAS and cuDNN return codes: a failure throws
// nnx::Error(ErrorKind::device) naming the call, the file and line, and the library's message.
// C++17 and free of cuBLAS/cuDNN headers, so that .cu files and plain C++ files can include it.
#pragma once

#include <cuda_runtime_api.h>

namespace nnx::cuda::detail {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* expr, const char* file,
                                   int line);
// The status codes as ints: both libraries' success value is 0.
[[noreturn]] void throw_cublas_error(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cudnn_error(int status, const char* expr, const char* file, int line);

}  // namespace nnx::cuda::detail

#define NNX_CUDA_CHECK(expr)                                                         \
  do {                                                                               \
    const cudaError_t nnx_status_ = (expr);                                          \
    if (nnx_status_ != cudaSuccess)                                                  \
      ::nnx::cuda::detail::throw_cuda_error(nnx_status_, #expr, __FILE__, __LINE__); \
  } while (0)

#define NNX_CUBLAS_CHECK(expr)                                                         \
  do {                                                                                 \
    const int nnx_status_ = static_cast<int>(expr);                                    \
    if (nnx_status_ != 0)                                                              \
      ::nnx::cuda::detail::throw_cublas_error(nnx_status_, #expr, __FILE__, __LINE__); \
  } while (0)

#define NNX_CUDNN_CHECK(expr)                                                         \
  do {                                                                                \
    const int nnx_status_ = static_cast<int>(expr);                                   \
    if (nnx_status_ != 0)                                                             \
      ::nnx::cuda::detail::throw_cudnn_error(nnx_status_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: a bad configuration (grid, shared memory, missing kernel image) shows
// up only here, not at the launch itself.
#define NNX_CUDA_CHECK_LAUNCH() NNX_CUDA_CHECK(cudaGetLastError())
