// CUDA body of Linear: y = x W^T + b through cuBLAS (fp32, TF32 on request).
#pragma once

#include <cstdint>

namespace nnx::cuda {

// y [rows, out_features] = x [rows, in_features] W^T + bias, with W [out_features, in_features]
// row-major as PyTorch stores it and bias [out_features] or null; contiguous float32 on the
// current device, queued on `stream` (a cudaStream_t). in_features 0 gives the bias (or 0).
// Throws Error(device) naming the cuBLAS call that failed, Error(unsupported) beyond int sizes.
// allow_tf32: cuBLAS may use TF32 tensor cores (CUBLAS_TF32_TENSOR_OP_MATH), else fp32 FMA.
void linear(int64_t rows, int64_t in_features, int64_t out_features, const float* x, const float* w,
            const float* bias, float* y, void* stream, bool allow_tf32 = false);
// Its gradients, each overwritten and each skipped when null: dx [rows, in] = dy W, dw [out, in] =
// dy^T x, db [out] = dy summed over rows (in row order).
void linear_backward(int64_t rows, int64_t in_features, int64_t out_features, const float* x,
                     const float* w, const float* dy, float* dx, float* dw, float* db,
                     void* stream);

}  // namespace nnx::cuda
