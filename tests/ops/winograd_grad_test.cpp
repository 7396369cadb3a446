// The Winograd weight gradient (kernels/cpu/winograd_grad.h) against a direct sum in double
// precision: planes of odd sizes (blocks past the bottom and right edges), padding of 0, 1 and 2,
// channels off the vector widths, rows of more blocks than a GEMM batch holds and batches that
// span images, and thread counts that split the point rows (1-4 threads) and the batches as well
// (5 and 8). (The op gradient tests check conv2d_backward, which takes this path for such
// shapes, against PyTorch.)
#include "kernels/cpu/winograd_grad.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "nnx/thread_pool.h"
#include "tests/ops/conv_reference.h"

#if defined(NNX_WINOGRAD_WEIGHT_GRAD)
namespace {

using nnx::cpu::Conv2dShape;
using nnx::test::Case;
using nnx::test::describe;
using nnx::test::for_each_product;
using nnx::test::shape_of;

// Largest |got - direct| relative to the largest |direct| of dW[o][c][kh][kw] = sum over n, oh,
// ow of g[n][o][oh][ow] * x[n][c][ih][iw].
double difference(const Conv2dShape& s, int threads) {
  std::mt19937 rng(unsigned(s.in_channels * 13 + s.out_channels * 5 + s.in_h + s.batch));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> x(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  std::vector<float> g(size_t(s.batch * s.out_channels * s.out_h * s.out_w));
  for (float& v : x) v = u(rng);
  for (float& v : g) v = u(rng);
  std::vector<double> want(size_t(s.out_channels * s.in_channels * 9), 0.0);
  for_each_product(s, [&](size_t y, size_t xi, size_t wi) { want[wi] += double(g[y]) * x[xi]; });
  std::vector<float> got(want.size() + 1, NAN);
  got.back() = 12345.f;  // a guard past the end
  nnx::ThreadPool pool(threads);
  nnx::cpu::conv2d_winograd_weight_grad(s, x.data(), g.data(), got.data(), &pool);
  EXPECT_EQ(got.back(), 12345.f) << describe(s);
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    worst = std::max(worst, std::abs(double(got[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return worst / scale;
}

TEST(WinogradWeightGrad, MatchesTheDirectSum) {
  const std::vector<Case> cases = {
      {2, 16, 24, 20, 20, 3, 3, 1, 1, 1, 1, 1, 1},  // even plane
      {3, 20, 40, 17, 23, 3, 3, 1, 1, 1, 1, 1, 1},  // odd plane: blocks past both edges
      {1, 17, 19, 33, 18, 3, 3, 1, 1, 0, 0, 1, 1},  // no padding, channels off the vectors
      {2, 16, 16, 31, 29, 3, 3, 1, 1, 2, 2, 1, 1},  // padding 2: a ring of padding only
      {4, 16, 32, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1},    // the smallest plane it takes
      {3, 24, 16, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1},    // small odd planes: batches span images
      {1, 16, 16, 6, 150, 3, 3, 1, 1, 1, 1, 1, 1},  // a row of 75 blocks: one row a batch
      {2, 32, 16, 9, 12, 3, 3, 1, 1, 1, 0, 1, 1},   // padding on the rows only
      {2, 16, 24, 10, 32, 3, 3, 1, 1, 1, 1, 1, 1},  // rows of 16 and 32: loads end at them
  };
  for (const Case& c : cases)
    for (int threads : {1, 2, 3, 5, 8})
      EXPECT_LT(difference(shape_of(c), threads), 2e-5)
          << describe(shape_of(c)) << " threads " << threads;
}

TEST(WinogradWeightGrad, TakesStrideOne3x3FromFourByFourPlanes) {
  using nnx::cpu::winograd_weight_grad_suitable;
  EXPECT_TRUE(
      winograd_weight_grad_suitable(shape_of({16, 64, 128, 64, 80, 3, 3, 1, 1, 1, 1, 1, 1})));
  EXPECT_TRUE(
      winograd_weight_grad_suitable(shape_of({32, 128, 128, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1})));
  // 4x4 planes: 2 blocks a row fill a quarter of an AVX2 vector, an eighth of an AVX-512 one.
#if defined(__AVX512F__)
  EXPECT_FALSE(
      winograd_weight_grad_suitable(shape_of({32, 256, 256, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1})));
#else
  EXPECT_TRUE(
      winograd_weight_grad_suitable(shape_of({32, 256, 256, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1})));
#endif
  // 2x2 planes: the indirect convolution's direct sums; a 3-channel image: the im2col GEMM.
  EXPECT_FALSE(
      winograd_weight_grad_suitable(shape_of({32, 512, 512, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1})));
  EXPECT_FALSE(
      winograd_weight_grad_suitable(shape_of({16, 3, 64, 128, 160, 3, 3, 1, 1, 1, 1, 1, 1})));
  // Strided, dilated, grouped, other kernels: not F(3x3, 2x2).
  EXPECT_FALSE(
      winograd_weight_grad_suitable(shape_of({8, 64, 64, 32, 32, 3, 3, 2, 2, 1, 1, 1, 1})));
  EXPECT_FALSE(
      winograd_weight_grad_suitable(shape_of({8, 64, 64, 32, 32, 3, 3, 1, 1, 2, 2, 2, 2})));
  EXPECT_FALSE(
      winograd_weight_grad_suitable(shape_of({8, 64, 64, 32, 32, 5, 5, 1, 1, 2, 2, 1, 1})));
  Conv2dShape grouped = shape_of({8, 64, 64, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1});
  grouped.groups = 2;
  EXPECT_FALSE(winograd_weight_grad_suitable(grouped));
}

}  // namespace
#else
TEST(WinogradWeightGrad, NeedsAvx2) {
  GTEST_SKIP() << "the Winograd weight gradient is built for AVX-512 and AVX2 with FMA only; this "
                  "build has neither";
}
#endif
