// Single-threaded float GEMM on row-major matrices (a packed AVX-512 or AVX2 kernel, else Eigen);
// callers split the work over the thread pool themselves so that each thread runs one of these.
#pragma once

#include <cstdint>

namespace nnx::cpu {

// C[m x n] = A[m x k] * B[k x n], or C += A * B when `accumulate`. `lda`, `ldb`, `ldc` are row
// strides in elements. With `b_transposed`, `b` holds B^T as an [n x k] matrix of row stride ldb.
void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_transposed, float* c, int64_t ldc, bool accumulate);

// The register-tiled kernel on operands that the caller lays out in panel form as it computes
// them (the Winograd convolution's transformed weights and inputs), so that no copy is packed
// per call. An A panel holds kPanelRows rows k-major (a[p * kPanelRows + r], rows past the
// matrix's end zero); a B panel holds `width` (16 or 32) columns k-major (b[p * width + j],
// 64-byte aligned). C[rows x cols] = A panel * B panel, or += with `accumulate`; rows <=
// kPanelRows, cols <= width.
inline constexpr int64_t kPanelRows = 12;
void panel_gemm(int64_t rows, int64_t cols, int64_t k, const float* a, const float* b,
                int64_t width, float* c, int64_t ldc, bool accumulate);
// As panel_gemm, with bias[r] added to row r (bias may be null), then the element of
// `residual` at C's position (null: none; row stride ldc), and the result clamped to [lo, hi]
// (NaN kept, as torch.clamp) before the store: a convolution's bias, a residual Add and
// ReLU/ReLU6/Hardtanh with no second pass over the output.
void panel_gemm_bias_clamp(int64_t rows, int64_t cols, int64_t k, const float* a, const float* b,
                           int64_t width, float* c, int64_t ldc, bool accumulate, const float* bias,
                           float lo, float hi, const float* residual = nullptr);

}  // namespace nnx::cpu
