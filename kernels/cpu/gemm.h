// Single-threaded float GEMM on row-major matrices (a packed AVX-512 or AVX2 kernel, else Eigen);
// callers split the work over the thread pool themselves so that each thread runs one of these.
#pragma once

#include <cstdint>

namespace nnx::cpu {

// C[m x n] = A[m x k] * B[k x n], or C += A * B when `accumulate`. `lda`, `ldb`, `ldc` are row
// strides in elements. With `b_transposed`, `b` holds B^T as an [n x k] matrix of row stride ldb.
void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_transposed, float* c, int64_t ldc, bool accumulate);

}  // namespace nnx::cpu
