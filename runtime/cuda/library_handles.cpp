// Per-thread cuBLAS and cuDNN handles (see library_handles.h).
#include "runtime/cuda/library_handles.h"

#include "nnx/error.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_runtime.h"

namespace nnx::cuda {
namespace {

// The handles this thread made, by device. Destroyed with the thread (for the main thread
// before the CUDA runtime's own exit handlers run); errors then are ignored.
struct ThreadHandles {
  cudnnHandle_t cudnn[kMaxDevices] = {};
  cublasHandle_t cublas[kMaxDevices] = {};
  ~ThreadHandles() {
    for (int d = 0; d < kMaxDevices; ++d) {
      if (cudnn[d] != nullptr) (void)cudnnDestroy(cudnn[d]);
      if (cublas[d] != nullptr) (void)cublasDestroy(cublas[d]);
    }
  }
};

thread_local ThreadHandles handles;

int current_device() {
  int device = 0;
  NNX_CUDA_CHECK(cudaGetDevice(&device));
  NNX_CHECK(device >= 0 && device < kMaxDevices, ErrorKind::device, "CUDA device index ", device,
            " out of range [0, ", kMaxDevices, ")");
  return device;
}

}  // namespace

cudnnHandle_t cudnn_handle(cudaStream_t stream) {
  const int device = current_device();
  cudnnHandle_t& handle = handles.cudnn[device];
  if (handle == nullptr) NNX_CUDNN_CHECK(cudnnCreate(&handle));
  NNX_CUDNN_CHECK(cudnnSetStream(handle, stream));
  return handle;
}

cublasHandle_t cublas_handle(cudaStream_t stream) {
  const int device = current_device();
  cublasHandle_t& handle = handles.cublas[device];
  if (handle == nullptr) {
    NNX_CUBLAS_CHECK(cublasCreate(&handle));
    NNX_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  }
  NNX_CUBLAS_CHECK(cublasSetStream(handle, stream));
  return handle;
}

}  // namespace nnx::cuda
