// cuBLAS and cuDNN handles of the CUDA backend: one of each per (thread, device), made on first
// use and destroyed when the thread ends, bound to the stream of each call. A handle is not
// shared between threads, so two executors on two threads never race on one.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace nnx::cuda {

// This thread's cuDNN handle for the current device, set to run on `stream`.
cudnnHandle_t cudnn_handle(cudaStream_t stream);

// This thread's cuBLAS handle for the current device, set to run on `stream`, in
// CUBLAS_DEFAULT_MATH (no TF32: results comparable to PyTorch with TF32 off).
cublasHandle_t cublas_handle(cudaStream_t stream);

}  // namespace nnx::cuda
