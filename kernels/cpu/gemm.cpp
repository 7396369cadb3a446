// Single-threaded float GEMM (see gemm.h). With AVX2 and FMA: a packed GEMM in the BLIS manner,
// blocks of A and B copied into panels that a 6x16 register-tiled kernel streams through from
// L1/L2; otherwise, and for products too thin for that kernel, Eigen's blocked product.
#define EIGEN_DONT_PARALLELIZE  // the thread pool splits the work; Eigen must not spawn threads
#include "kernels/cpu/gemm.h"

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <memory>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NNX_PACKED_GEMM 1
#endif

namespace nnx::cpu {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowMap = Eigen::Map<const RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;
using RowMap = Eigen::Map<RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;

void eigen_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate) {
  RowMap cm(c, m, n, Eigen::OuterStride<>(ldc));
  ConstRowMap am(a, m, k, Eigen::OuterStride<>(lda));
  if (b_transposed) {
    ConstRowMap bt(b, n, k, Eigen::OuterStride<>(ldb));
    if (accumulate)
      cm.noalias() += am * bt.transpose();
    else
      cm.noalias() = am * bt.transpose();
  } else {
    ConstRowMap bm(b, k, n, Eigen::OuterStride<>(ldb));
    if (accumulate)
      cm.noalias() += am * bm;
    else
      cm.noalias() = am * bm;
  }
}

#ifdef NNX_PACKED_GEMM

// Register tile (6 rows x 16 columns: 12 accumulators) and cache blocks: a kc x 16 panel of B
// (16 KiB) stays in L1 while the mc x kc block of A (96 KiB) streams from L2.
constexpr int64_t kMR = 6, kNR = 16;
constexpr int64_t kKC = 256, kMC = 96, kNC = 2048;

// 64-byte aligned scratch that grows and is kept, one per thread.
struct AlignedBuffer {
  std::unique_ptr<float[]> storage;
  int64_t capacity = 0;
  float* get(int64_t floats) {
    if (capacity < floats) {
      storage = std::make_unique<float[]>(size_t(floats + 16));
      capacity = floats;
    }
    auto address = reinterpret_cast<uintptr_t>(storage.get());
    return storage.get() + ((64 - address % 64) % 64) / sizeof(float);
  }
};

// C[Rows x 16] (+)= A panel [kc x 6] * B panel [kc x 16], panels as pack_a / pack_b lay them
// out; Rows < 6 serves the last rows of A without a detour through a temporary tile.
template <int Rows>
void kernel_16(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load_c) {
  __m256 lo[Rows], hi[Rows];
  for (int r = 0; r < Rows; ++r) {
    lo[r] = load_c ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();
    hi[r] = load_c ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p, a += kMR, b += kNR) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    for (int r = 0; r < Rows; ++r) {
      const __m256 x = _mm256_broadcast_ss(a + r);
      lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    _mm256_storeu_ps(c + r * ldc, lo[r]);
    _mm256_storeu_ps(c + r * ldc + 8, hi[r]);
  }
}

void kernel_rows_x16(int64_t rows, int64_t kc, const float* a, const float* b, float* c,
                     int64_t ldc, bool load_c) {
  switch (rows) {
    case 6:
      return kernel_16<6>(kc, a, b, c, ldc, load_c);
    case 5:
      return kernel_16<5>(kc, a, b, c, ldc, load_c);
    case 4:
      return kernel_16<4>(kc, a, b, c, ldc, load_c);
    case 3:
      return kernel_16<3>(kc, a, b, c, ldc, load_c);
    case 2:
      return kernel_16<2>(kc, a, b, c, ldc, load_c);
    default:
      return kernel_16<1>(kc, a, b, c, ldc, load_c);
  }
}

// A block [mc x kc] as panels of kMR rows, k-major within a panel; missing rows are zeros.
void pack_a(int64_t mc, int64_t kc, const float* a, int64_t lda, float* out) {
  for (int64_t i = 0; i < mc; i += kMR) {
    const int64_t rows = std::min(kMR, mc - i);
    for (int64_t p = 0; p < kc; ++p, out += kMR) {
      for (int64_t r = 0; r < rows; ++r) out[r] = a[(i + r) * lda + p];
      for (int64_t r = rows; r < kMR; ++r) out[r] = 0.f;
    }
  }
}

// B block [kc x nc] as panels of kNR columns, k-major within a panel; missing columns are zeros.
// With `transposed`, b holds B^T ([nc x kc] rows of stride ldb).
void pack_b(int64_t kc, int64_t nc, const float* b, int64_t ldb, bool transposed, float* out) {
  for (int64_t j = 0; j < nc; j += kNR, out += kc * kNR) {
    const int64_t cols = std::min(kNR, nc - j);
    if (!transposed && cols == kNR) {
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + p * ldb + j;
        _mm256_store_ps(out + p * kNR, _mm256_loadu_ps(src));
        _mm256_store_ps(out + p * kNR + 8, _mm256_loadu_ps(src + 8));
      }
    } else if (!transposed) {
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + p * ldb + j;
        float* dst = out + p * kNR;
        for (int64_t c = 0; c < cols; ++c) dst[c] = src[c];
        for (int64_t c = cols; c < kNR; ++c) dst[c] = 0.f;
      }
    } else {
      for (int64_t c = 0; c < cols; ++c) {
        const float* src = b + (j + c) * ldb;
        for (int64_t p = 0; p < kc; ++p) out[p * kNR + c] = src[p];
      }
      for (int64_t c = cols; c < kNR; ++c)
        for (int64_t p = 0; p < kc; ++p) out[p * kNR + c] = 0.f;
    }
  }
}

void packed_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate) {
  thread_local AlignedBuffer a_buffer, b_buffer;
  float* packed_a = a_buffer.get(kMC * kKC);
  float* packed_b = b_buffer.get(kKC * kNC);
  alignas(64) float edge[kMR * kNR];
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      const bool load_c = accumulate || pc > 0;
      pack_b(kc, nc, b_transposed ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, b_transposed,
             packed_b);
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        pack_a(mc, kc, a + ic * lda + pc, lda, packed_a);
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          const int64_t nr = std::min(kNR, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            const int64_t mr = std::min(kMR, mc - ir);
            float* tile = c + (ic + ir) * ldc + jc + jr;
            if (nr == kNR) {
              kernel_rows_x16(mr, kc, packed_a + ir * kc, packed_b + jr * kc, tile, ldc, load_c);
              continue;
            }
            // The last, narrower columns go through a full tile on the stack.
            for (int64_t r = 0; r < mr; ++r)
              for (int64_t j = 0; j < nr; ++j) edge[r * kNR + j] = load_c ? tile[r * ldc + j] : 0.f;
            kernel_rows_x16(mr, kc, packed_a + ir * kc, packed_b + jr * kc, edge, kNR, true);
            for (int64_t r = 0; r < mr; ++r)
              for (int64_t j = 0; j < nr; ++j) tile[r * ldc + j] = edge[r * kNR + j];
          }
        }
      }
    }
  }
}

#endif  // NNX_PACKED_GEMM

}  // namespace

void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_transposed, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate) RowMap(c, m, n, Eigen::OuterStride<>(ldc)).setZero();
    return;
  }
#ifdef NNX_PACKED_GEMM
  // Matrix-vector shapes would leave most of the register tile idle.
  if (m >= kMR / 2 && n >= kNR / 2)
    return packed_gemm(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate);
#endif
  eigen_gemm(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate);
}

}  // namespace nnx::cpu
