// Linear on CUDA: the bias broadcast into y, then one cuBLAS SGEMM accumulating x W^T onto it.
// In cuBLAS's column-major terms the row-major y [rows, out] is y^T [out, rows] = W x^T, with
// W read transposed from its row-major [out, in] storage.
#include <cublas_v2.h>

#include <climits>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear.h"
#include "nnx/error.h"
#include "runtime/cuda/library_handles.h"

namespace nnx::cuda {
namespace {

__global__ void fill_rows_kernel(const float* bias, int64_t rows, int64_t cols, float* y) {
  grid_stride_loop(rows * cols, [&](int64_t i) { y[i] = bias != nullptr ? bias[i % cols] : 0.0f; });
}

}  // namespace

void linear(int64_t rows, int64_t in_features, int64_t out_features, const float* x, const float* w,
            const float* bias, float* y, void* stream_handle) {
  if (rows == 0 || out_features == 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const int64_t n = rows * out_features;
  if (bias != nullptr || in_features == 0) {
    fill_rows_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(bias, rows, out_features, y);
    NNX_CUDA_CHECK_LAUNCH();
  }
  if (in_features == 0) return;
  NNX_CHECK(rows <= INT_MAX && in_features <= INT_MAX && out_features <= INT_MAX,
            ErrorKind::unsupported, "Linear on CUDA: [", rows, ", ", in_features, "] x [",
            in_features, ", ", out_features, "] is beyond cuBLAS's int sizes");
  const float alpha = 1.0f, beta = bias != nullptr ? 1.0f : 0.0f;
  NNX_CUBLAS_CHECK(cublasSgemm(cublas_handle(stream), CUBLAS_OP_T, CUBLAS_OP_N, int(out_features),
                               int(rows), int(in_features), &alpha, w, int(in_features), x,
                               int(in_features), &beta, y, int(out_features)));
}

}  // namespace nnx::cuda
