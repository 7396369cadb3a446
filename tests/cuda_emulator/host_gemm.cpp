#include "tests/cuda_emulator/host_gemm.h"

#include "kernels/cpu/avx512.h"  // first: silences a GCC 12 false positive in Eigen's headers

#include <Eigen/Core>

namespace nnx::emu {

void host_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<Matrix, 0, Stride> out(c, m, n, Stride(ldc));
  if (k == 0) {
    if (!accumulate) out.setZero();
    return;
  }
  const Eigen::Map<const Matrix, 0, Stride> am(a, ta ? k : m, ta ? m : k, Stride(lda));
  const Eigen::Map<const Matrix, 0, Stride> bm(b, tb ? n : k, tb ? k : n, Stride(ldb));
  // One product expression per case: Eigen's GEMM takes transposed operands without copying.
  auto run = [&](const auto& x, const auto& y) {
    if (accumulate)
      out.noalias() += x * y;
    else
      out.noalias() = x * y;
  };
  if (!ta && !tb) run(am, bm);
  if (ta && !tb) run(am.transpose(), bm);
  if (!ta && tb) run(am, bm.transpose());
  if (ta && tb) run(am.transpose(), bm.transpose());
}

}  // namespace nnx::emu
