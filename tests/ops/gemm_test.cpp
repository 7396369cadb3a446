// The CPU GEMM (kernels/cpu/gemm.h) against a double-precision product of the same matrices, over
// shapes that cross every edge of its register tiles and cache blocks: rows and columns one
// short of, equal to and one past the tile sizes, depths past a cache block, strided operands,
// a transposed B and accumulation into C.
#include "kernels/cpu/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace {

struct Case {
  int64_t m, n, k;
  bool transposed, accumulate;
};

void check(const Case& c) {
  const int64_t lda = c.k + 3, ldb = (c.transposed ? c.k : c.n) + 5, ldc = c.n + 7;
  const int64_t b_rows = c.transposed ? c.n : c.k;
  std::mt19937 rng(unsigned(c.m * 131 + c.n * 17 + c.k));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> a(size_t(c.m * lda)), b(size_t(b_rows * ldb)), out(size_t(c.m * ldc));
  for (float& v : a) v = u(rng);
  for (float& v : b) v = u(rng);
  for (float& v : out) v = u(rng);
  const std::vector<float> before = out;
  nnx::cpu::gemm(c.m, c.n, c.k, a.data(), lda, b.data(), ldb, c.transposed, out.data(), ldc,
                 c.accumulate);
  double worst = 0;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double want = c.accumulate ? before[size_t(i * ldc + j)] : 0.0;
      for (int64_t p = 0; p < c.k; ++p) {
        const float bv = c.transposed ? b[size_t(j * ldb + p)] : b[size_t(p * ldb + j)];
        want += double(a[size_t(i * lda + p)]) * double(bv);
      }
      // Each term is below 1 in magnitude: the float sum's error grows with sqrt(k) at most k.
      worst = std::max(worst, std::abs(double(out[size_t(i * ldc + j)]) - want));
    }
    // The padding between rows of C is never written.
    for (int64_t j = c.n; j < ldc && i + 1 < c.m; ++j)
      ASSERT_EQ(out[size_t(i * ldc + j)], before[size_t(i * ldc + j)]) << "row " << i;
  }
  EXPECT_LT(worst, 1e-6 * double(c.k) + 1e-6)
      << c.m << "x" << c.n << "x" << c.k << (c.transposed ? " B^T" : "")
      << (c.accumulate ? " accumulate" : "");
}

TEST(Gemm, MatchesDoubleProductAcrossTileAndBlockEdges) {
  const int64_t rows[] = {1, 2, 3, 5, 6, 7, 11, 12, 13, 24, 97, 145};
  const int64_t cols[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 100};
  const int64_t depths[] = {1, 9, 255, 257};
  for (int64_t m : rows)
    for (int64_t n : cols)
      for (int64_t k : depths) check({m, n, k, (m + n) % 2 == 1, (m + k) % 3 == 0});
}

TEST(Gemm, WideAndDeepProducts) {
  check({64, 3136, 64, false, false});
  check({33, 3073, 70, false, true});   // past one column block
  check({150, 200, 600, true, false});  // past one row block and two depth blocks
  check({8, 40, 513, true, true});
}

TEST(Gemm, ZeroDepthClearsOrKeeps) {
  std::vector<float> c(12, 5.f);
  nnx::cpu::gemm(3, 4, 0, nullptr, 0, nullptr, 4, false, c.data(), 4, true);
  for (float v : c) EXPECT_EQ(v, 5.f);
  nnx::cpu::gemm(3, 4, 0, nullptr, 0, nullptr, 4, false, c.data(), 4, false);
  for (float v : c) EXPECT_EQ(v, 0.f);
}

}  // namespace
