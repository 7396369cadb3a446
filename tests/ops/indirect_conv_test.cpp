// The indirect convolution (kernels/cpu/indirect_conv.h) against a direct sum in double
// precision: tiles that span rows and images, output channels off the 16- and 48-wide panels,
// more taps than its offset table holds on the stack, non-square kernels, strides, dilations,
// padding, both work splits (tiles and panels), bias or none, and clamping and non-clamping
// epilogues. (The op tests check conv2d, which takes this path for such shapes, against
// PyTorch.)
#include "kernels/cpu/indirect_conv.h"
#include "kernels/cpu/winograd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "nnx/thread_pool.h"
#include "tests/ops/conv_reference.h"

#if defined(NNX_INDIRECT_CONV)
namespace {

using nnx::cpu::Conv2dShape;
using nnx::cpu::Epilogue;
using nnx::test::Case;
using nnx::test::describe;
using nnx::test::for_each_product;
using nnx::test::shape_of;

// Largest |indirect - direct| relative to the largest |direct|; the epilogue applied to the
// reference by the same function the kernel uses for non-clamping ones.
double difference(const Conv2dShape& s, int threads, bool with_bias, const Epilogue& epilogue) {
  std::mt19937 rng(unsigned(s.in_channels * 31 + s.out_channels * 7 + s.in_h * 3 + s.batch));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const int64_t taps = s.kernel_h * s.kernel_w;
  std::vector<float> input(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  std::vector<float> weight(size_t(s.out_channels * s.in_channels * taps));
  std::vector<float> bias(size_t(s.out_channels));
  for (float& v : input) v = u(rng);
  for (float& v : weight) v = u(rng);
  for (float& v : bias) v = u(rng);
  const int64_t plane = s.out_h * s.out_w;
  const size_t out_size = size_t(s.batch * s.out_channels * plane);
  std::vector<float> expected(out_size), got(out_size + 1, NAN);
  got.back() = 12345.f;  // a guard past the end
  std::vector<double> sums(out_size, 0.0);
  for_each_product(s,
                   [&](size_t y, size_t x, size_t w) { sums[y] += double(input[x]) * weight[w]; });
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < s.out_channels; ++o) {
      const int64_t first = (n * s.out_channels + o) * plane;
      float* row = expected.data() + first;
      for (int64_t i = 0; i < plane; ++i)
        row[i] = float(sums[size_t(first + i)] + (with_bias ? bias[size_t(o)] : 0.0));
      nnx::cpu::apply_epilogue(epilogue, row, plane);
    }
  nnx::ThreadPool pool(threads);
  nnx::cpu::conv2d_indirect(s, input.data(), weight.data(), with_bias ? bias.data() : nullptr,
                            got.data(), &pool, epilogue);
  EXPECT_EQ(got.back(), 12345.f) << describe(s);
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < out_size; ++i) {
    if (std::isnan(got[i])) return INFINITY;
    worst = std::max(worst, double(std::abs(got[i] - expected[i])));
    scale = std::max(scale, double(std::abs(expected[i])));
  }
  return worst / scale;
}

TEST(IndirectConv, MatchesTheDirectSum) {
  const std::vector<Case> cases = {
      {32, 16, 16, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1},   // 2x2... 4x4 planes: tiles across images
      {5, 16, 17, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1},    // 17 channels: a 16-wide panel, 1 kept
      {3, 24, 50, 9, 7, 3, 3, 2, 2, 1, 1, 1, 1},    // strided, odd sizes, 50 off the panels
      {2, 16, 100, 8, 8, 1, 1, 2, 2, 0, 0, 1, 1},   // a strided 1x1 (ResNet's downsample)
      {1, 20, 32, 13, 11, 9, 9, 1, 1, 4, 4, 1, 1},  // 81 taps
      {2, 16, 40, 10, 12, 1, 3, 1, 2, 0, 1, 1, 1},  // a 1x3 kernel, strides 1 and 2
      {1, 18, 48, 15, 15, 3, 3, 1, 1, 2, 2, 2, 2},  // dilation
      {1, 16, 20, 6, 6, 3, 3, 1, 1, 3, 3, 1, 1},    // padding past the kernel's reach
      {1, 64, 144, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1},   // few tiles: the panels split
      {1, 16, 16, 16, 16, 1, 1, 1, 1, 1, 1, 1, 1},  // a 1x1 with padding
  };
  for (const Case& c : cases) {
    const Conv2dShape s = shape_of(c);
    for (int threads : {1, 2, 3}) {
      EXPECT_LT(difference(s, threads, true, {}), 1e-5) << describe(s) << " threads " << threads;
      EXPECT_LT(difference(s, threads, false, {}), 1e-5) << describe(s) << " threads " << threads;
    }
  }
}

TEST(IndirectConv, EpiloguesInTheStoreAndAfter) {
  Epilogue relu{true, nnx::Activation::relu, {}};
  Epilogue silu{true, nnx::Activation::silu, {}};
  Epilogue relu6{true, nnx::Activation::hardtanh, {}};
  relu6.args.lo = 0.f;
  relu6.args.hi = 6.f;
  for (const Case& c : {Case{4, 16, 33, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1},
                        Case{1, 32, 64, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1}})
    for (const Epilogue& e : {relu, silu, relu6})
      for (int threads : {1, 2})
        EXPECT_LT(difference(shape_of(c), threads, true, e), 1e-5) << describe(shape_of(c));
}

// The weight and input gradients against direct double-precision sums: for upstream gradient
// g, dW[o][c][kh][kw] = sum over n, oh, ow of g[n][o][oh][ow] * x[n][c][ih][iw] and dX the
// adjoint sum into x's positions.
void check_gradients(const Conv2dShape& s, int threads) {
  std::mt19937 rng(unsigned(s.in_channels * 13 + s.out_channels * 5 + s.in_h + s.batch));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const int64_t taps = s.kernel_h * s.kernel_w, plane = s.out_h * s.out_w;
  std::vector<float> x(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  std::vector<float> weight(size_t(s.out_channels * s.in_channels * taps));
  std::vector<float> g(size_t(s.batch * s.out_channels * plane));
  for (float& v : x) v = u(rng);
  for (float& v : weight) v = u(rng);
  for (float& v : g) v = u(rng);
  std::vector<double> dw(weight.size(), 0.0), dx(x.size(), 0.0);
  for_each_product(s, [&](size_t y, size_t xi, size_t wi) {
    dw[wi] += double(g[y]) * x[xi];
    dx[xi] += double(g[y]) * weight[wi];
  });
  auto relative = [](const std::vector<float>& got, const std::vector<double>& want) {
    double worst = 0, scale = 1e-30;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(got[i])) return double(INFINITY);
      worst = std::max(worst, std::abs(double(got[i]) - want[i]));
      scale = std::max(scale, std::abs(want[i]));
    }
    return worst / scale;
  };
  nnx::ThreadPool pool(threads);
  std::vector<float> got_dw(weight.size(), NAN);
  nnx::cpu::conv2d_indirect_weight_grad(s, x.data(), g.data(), got_dw.data(), &pool);
  EXPECT_LT(relative(got_dw, dw), 1e-5) << "weight gradient, " << describe(s);
  std::vector<float> got_dx(x.size(), NAN);
  // Taken by Winograd instead where that serves the stride-1 gradient; strided ones by phases,
  // undilated only.
  if (nnx::cpu::conv2d_indirect_input_grad(s, weight.data(), g.data(), got_dx.data(), &pool))
    EXPECT_LT(relative(got_dx, dx), 1e-5) << "input gradient, " << describe(s);
  else
    EXPECT_TRUE(s.stride_h == 1 && s.stride_w == 1 ? nnx::cpu::winograd_suitable(s, false)
                                                   : s.dilation_h != 1 || s.dilation_w != 1)
        << "input gradient refused, " << describe(s);
}

TEST(IndirectConv, GradientsMatchTheDirectSums) {
  const std::vector<Case> cases = {
      {32, 16, 16, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1},    // pixels of many images per tile
      {5, 17, 33, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1},     // channels off the tiles and panels
      {3, 24, 50, 9, 7, 3, 3, 2, 2, 1, 1, 1, 1},     // strided: weight gradient only
      {2, 16, 100, 8, 8, 1, 1, 2, 2, 0, 0, 1, 1},    // a strided 1x1
      {1, 20, 32, 13, 11, 9, 9, 1, 1, 4, 4, 1, 1},   // 81 taps
      {2, 16, 40, 10, 12, 1, 3, 1, 1, 0, 1, 1, 1},   // a 1x3 kernel
      {1, 18, 48, 15, 15, 3, 3, 1, 1, 2, 2, 2, 2},   // dilation
      {4, 16, 24, 16, 16, 3, 3, 2, 2, 1, 1, 1, 1},   // ResNet's strided 3x3: four phases
      {2, 16, 20, 15, 13, 7, 7, 2, 2, 3, 3, 1, 1},   // a 7x7 stride 2 on odd sizes
      {2, 20, 16, 11, 12, 3, 2, 2, 1, 1, 0, 1, 1},   // strides 2 and 1, a 3x2 kernel
      {3, 16, 16, 10, 11, 2, 2, 3, 3, 0, 1, 1, 1},   // kernel under the stride: rows untouched
      {2, 16, 32, 9, 9, 3, 3, 2, 2, 1, 1, 2, 2},     // strided and dilated: refused
      {2, 20, 128, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1},    // two 64-wide panels, 20 = 3 x 6 + 2 inputs
      {10, 16, 64, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1},  // weight gradient in blocks of 4, 4, 2 images
  };
  for (const Case& c : cases)
    for (int threads : {1, 2, 3}) check_gradients(shape_of(c), threads);
}

TEST(IndirectConv, TakesSmallPlanesOrPreparedWeights) {
  EXPECT_TRUE(nnx::cpu::indirect_suitable(shape_of({32, 128, 128, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1})));
  EXPECT_FALSE(nnx::cpu::indirect_suitable(shape_of({1, 64, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1})));
  EXPECT_FALSE(nnx::cpu::indirect_suitable(shape_of({1, 3, 64, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1})));
  // A dense 1x1 layer is a GEMM on the input in place.
  EXPECT_FALSE(nnx::cpu::indirect_suitable(shape_of({1, 64, 64, 8, 8, 1, 1, 1, 1, 0, 0, 1, 1})));
  // With prepared weights (inference) any plane, but no 1x1 layer, strided or not; on AVX2
  // only strided kernels with more than 100 output pixels (the panel and channels-last paths
  // serve the rest of inference there).
#if defined(__AVX512F__)
  const bool any_plane = true;
#else
  const bool any_plane = false;
#endif
  EXPECT_TRUE(
      nnx::cpu::indirect_suitable(shape_of({1, 64, 128, 56, 56, 3, 3, 2, 2, 1, 1, 1, 1}), true));
  EXPECT_EQ(
      nnx::cpu::indirect_suitable(shape_of({1, 256, 512, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1}), true),
      any_plane);
  EXPECT_EQ(
      nnx::cpu::indirect_suitable(shape_of({1, 64, 64, 56, 56, 5, 5, 1, 1, 2, 2, 1, 1}), true),
      any_plane);
  EXPECT_FALSE(
      nnx::cpu::indirect_suitable(shape_of({1, 256, 512, 56, 56, 1, 1, 2, 2, 0, 0, 1, 1}), true));
}

}  // namespace
#else
TEST(IndirectConv, NeedsAvx2) {
  GTEST_SKIP() << "the indirect convolution is built for AVX-512 and AVX2 with FMA only; this "
                  "build has neither";
}
#endif
