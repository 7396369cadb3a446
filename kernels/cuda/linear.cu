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

// One thread per output feature, the rows summed in order.
__global__ void column_sums_kernel(const float* dy, int64_t rows, int64_t cols, float* db) {
  grid_stride_loop(cols, [&](int64_t c) {
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) sum += dy[r * cols + c];
    db[c] = float(sum);
  });
}

}  // namespace

void linear(int64_t rows, int64_t in_features, int64_t out_features, const float* x, const float* w,
            const float* bias, float* y, void* stream_handle, bool allow_tf32) {
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
  // The handle is this stream's, shared by every Linear on it: the math mode is set per call.
  const cublasHandle_t handle = cublas_handle(stream);
  NNX_CUBLAS_CHECK(
      cublasSetMathMode(handle, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  NNX_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(out_features), int(rows),
                               int(in_features), &alpha, w, int(in_features), x, int(in_features),
                               &beta, y, int(out_features)));
}

void linear_backward(int64_t rows, int64_t in_features, int64_t out_features, const float* x,
                     const float* w, const float* dy, float* dx, float* dw, float* db,
                     void* stream_handle) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  NNX_CHECK(rows <= INT_MAX && in_features <= INT_MAX && out_features <= INT_MAX,
            ErrorKind::unsupported, "Linear on CUDA: [", rows, ", ", in_features, "] x [",
            in_features, ", ", out_features, "] is beyond cuBLAS's int sizes");
  auto zero = [&](float* p, int64_t n) {
    if (p != nullptr && n > 0)
      NNX_CUDA_CHECK(cudaMemsetAsync(p, 0, size_t(n) * sizeof(float), stream));
  };
  if (rows == 0 || out_features == 0) {
    // Nothing flows back: every gradient is zero.
    zero(dx, rows * in_features);
    zero(dw, out_features * in_features);
    zero(db, out_features);
    return;
  }
  const float one = 1.0f, none = 0.0f;
  const cublasHandle_t handle = cublas_handle(stream);
  NNX_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));  // training runs fp32
  // Column-major views of the row-major buffers: dy^T [out, rows], W^T [in, out], x^T [in, rows].
  if (dx != nullptr && in_features > 0)  // dx^T [in, rows] = W^T dy^T
    NNX_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, int(in_features), int(rows),
                                 int(out_features), &one, w, int(in_features), dy,
                                 int(out_features), &none, dx, int(in_features)));
  if (dw != nullptr && in_features > 0)  // dw^T [in, out] = x^T dy
    NNX_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, int(in_features),
                                 int(out_features), int(rows), &one, x, int(in_features), dy,
                                 int(out_features), &none, dw, int(in_features)));
  if (db != nullptr) {
    column_sums_kernel<<<grid_for(out_features), kBlockSize, 0, stream>>>(dy, rows, out_features,
                                                                          db);
    NNX_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace nnx::cuda
