// The throwing side of the NNX_CUDA_CHECK / NNX_CUBLAS_CHECK / NNX_CUDNN_CHECK macros.
#include "runtime/cuda/cuda_check.h"

#include <cublas_v2.h>
#include <cudnn.h>

#include <cstring>
#include <string>

#include "nnx/error.h"

namespace nnx::cuda::detail {
namespace {

// The path below the repository root where the macro was used, which is what a reader can open;
// __FILE__ is absolute in CMake builds.
const char* short_path(const char* file) {
  for (const char* root : {"/runtime/", "/kernels/", "/ops/", "/tests/"}) {
    if (const char* p = std::strstr(file, root)) return p + 1;
  }
  return file;
}

[[noreturn]] void throw_failure(const char* expr, const char* file, int line,
                                const std::string& what) {
  throw Error(ErrorKind::device,
              ::nnx::detail::concat(expr, " failed at ", short_path(file), ":", line, ": ", what));
}

}  // namespace

void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
  // Reset the thread's last-error slot so that a later launch check does not report this call
  // again (sticky errors, which poison the context, stay set regardless).
  (void)cudaGetLastError();
  throw_failure(
      expr, file, line,
      ::nnx::detail::concat(cudaGetErrorString(status), " (", cudaGetErrorName(status), ")"));
}

void throw_cublas_error(int status, const char* expr, const char* file, int line) {
  throw_failure(expr, file, line, cublasGetStatusString(static_cast<cublasStatus_t>(status)));
}

void throw_cudnn_error(int status, const char* expr, const char* file, int line) {
  throw_failure(expr, file, line, cudnnGetErrorString(static_cast<cudnnStatus_t>(status)));
}

}  // namespace nnx::cuda::detail
