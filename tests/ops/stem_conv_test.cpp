// The few-channel direct convolution (kernels/cpu/stem_conv.h) against a direct sum in double
// precision: strides 1-3 (phase-split copies), dilation, asymmetric padding, padding past the
// kernel's reach, output channels off the 12-row panels, rows ending inside either vector of a
// 32-pixel tile (AVX2: of a 16-pixel one), batches, weights packed per call or prepared
// (ConvPrepared's panels), bias or none, 1-3 threads, and every kind of epilogue: clamped in the
// store (ReLU, ReLU6), applied after it (SiLU), and a residual added before the activation. (The
// op tests check conv2d, which takes this path for such shapes, against PyTorch.)
#include "kernels/cpu/stem_conv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/prepared.h"
#include "nnx/thread_pool.h"
#include "tests/ops/conv_reference.h"

#if defined(NNX_STEM_CONV)
namespace {

using nnx::cpu::Conv2dShape;
using nnx::cpu::Epilogue;
using nnx::test::Case;
using nnx::test::describe;
using nnx::test::for_each_product;
using nnx::test::shape_of;

struct Options {
  int threads = 1;
  bool bias = true, prepared = false, residual = false;
  Epilogue epilogue;
};

// Largest |stem - direct| relative to the largest |direct|; the epilogue applied to the
// reference by the same function the kernel uses for non-clamping ones.
double difference(const Conv2dShape& s, Options o) {
  std::mt19937 rng(unsigned(s.in_channels * 31 + s.out_channels * 7 + s.in_w * 3 + s.batch));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const int64_t taps = s.in_channels * s.kernel_h * s.kernel_w, plane = s.out_h * s.out_w;
  std::vector<float> input(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  std::vector<float> weight(size_t(s.out_channels * taps)), bias(size_t(s.out_channels));
  const size_t out_size = size_t(s.batch * s.out_channels * plane);
  std::vector<float> residual(out_size);
  for (auto* v : {&input, &weight, &bias, &residual})
    for (float& x : *v) x = u(rng);
  std::vector<double> sums(out_size, 0.0);
  for_each_product(s,
                   [&](size_t y, size_t x, size_t w) { sums[y] += double(input[x]) * weight[w]; });
  std::vector<float> expected(out_size), got(out_size + 1, NAN);
  got.back() = 12345.f;  // a guard past the end
  Epilogue want = o.epilogue, run = o.epilogue;
  if (o.residual) {
    want.residual = run.residual = residual.data();
    want.output = expected.data();
    run.output = got.data();
  }
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t c = 0; c < s.out_channels; ++c) {
      const int64_t first = (n * s.out_channels + c) * plane;
      float* row = expected.data() + first;
      for (int64_t i = 0; i < plane; ++i)
        row[i] = float(sums[size_t(first + i)] + (o.bias ? bias[size_t(c)] : 0.0));
      nnx::cpu::apply_epilogue(want, row, plane);
    }
  std::vector<float> panels;
  if (o.prepared) {
    panels.resize(size_t((s.out_channels + nnx::cpu::kPanelRows - 1) / nnx::cpu::kPanelRows *
                         nnx::cpu::kPanelRows * taps));
    nnx::cpu::pack_row_panels(s.out_channels, taps, weight.data(), taps, panels.data());
  }
  nnx::ThreadPool pool(o.threads);
  nnx::cpu::conv2d_stem(s, input.data(), weight.data(), o.prepared ? panels.data() : nullptr,
                        o.bias ? bias.data() : nullptr, got.data(), &pool, run);
  EXPECT_EQ(got.back(), 12345.f) << describe(s);
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < out_size; ++i) {
    if (std::isnan(got[i])) return INFINITY;
    worst = std::max(worst, double(std::abs(got[i] - expected[i])));
    scale = std::max(scale, double(std::abs(expected[i])));
  }
  return worst / scale;
}

// batch, in, out, h, w, kernel h/w, stride h/w, padding top/left, dilation h/w.
const std::vector<Case> kCases = {
    {1, 3, 64, 40, 46, 7, 7, 2, 2, 3, 3, 1, 1},    // ResNet's stem: 23 columns, one vector
    {2, 3, 20, 9, 45, 7, 7, 1, 1, 3, 3, 1, 1},     // 20 channels: a panel of 12 and one of 8
    {1, 3, 32, 12, 66, 3, 3, 2, 2, 1, 1, 1, 1},    // MobileNet's stem: 33 columns, a lane over
    {2, 2, 13, 17, 70, 3, 5, 2, 3, 2, 4, 2, 2},    // dilated, strides 2 and 3, a lone channel
    {1, 1, 16, 9, 40, 4, 4, 1, 1, 1, 1, 1, 1},     // one channel, an even kernel
    {1, 4, 24, 12, 100, 3, 3, 3, 3, 0, 0, 1, 1},   // stride 3: three phases
    {3, 3, 8, 6, 33, 5, 5, 1, 1, 5, 5, 1, 1},      // padding past the kernel's reach
    {1, 3, 48, 5, 130, 1, 1, 1, 1, 0, 0, 1, 1},    // a 1x1 on a long row: five tiles
    {1, 3, 12, 30, 17, 11, 11, 1, 1, 5, 5, 1, 1},  // 363 taps, rows of 17
};

TEST(StemConv, MatchesTheDirectSum) {
  for (const Case& c : kCases) {
    const Conv2dShape s = shape_of(c);
    ASSERT_TRUE(nnx::cpu::stem_suitable(s)) << describe(s);
    for (int threads : {1, 2, 3})
      for (bool prepared : {false, true})
        for (bool bias : {true, false}) {
          Options o;
          o.threads = threads;
          o.prepared = prepared;
          o.bias = bias;
          EXPECT_LT(difference(s, o), 1e-5)
              << describe(s) << " threads " << threads << " prepared " << prepared;
        }
  }
}

TEST(StemConv, EpiloguesInTheStoreAndAfter) {
  Epilogue relu{true, nnx::Activation::relu, {}};
  Epilogue silu{true, nnx::Activation::silu, {}};
  Epilogue relu6{true, nnx::Activation::hardtanh, {}};
  relu6.args.lo = 0.f;
  relu6.args.hi = 6.f;
  for (const Case& c : {kCases[1], kCases[3]})
    for (const Epilogue& e : {relu, silu, relu6, Epilogue{}})
      for (bool residual : {false, true}) {
        if (!e.active && !residual) continue;
        Options o;
        o.threads = 2;
        o.epilogue = e;
        o.residual = residual;
        EXPECT_LT(difference(shape_of(c), o), 1e-5)
            << describe(shape_of(c)) << " residual " << residual;
      }
}

TEST(StemConv, TakesFewInputChannelsAndWideRows) {
  EXPECT_TRUE(nnx::cpu::stem_suitable(shape_of({1, 3, 64, 224, 224, 7, 7, 2, 2, 3, 3, 1, 1})));
  EXPECT_FALSE(nnx::cpu::stem_suitable(shape_of({1, 16, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1})));
  EXPECT_FALSE(nnx::cpu::stem_suitable(shape_of({1, 3, 64, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1})));
  Conv2dShape grouped = shape_of({1, 4, 8, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1});
  grouped.groups = 2;
  EXPECT_FALSE(nnx::cpu::stem_suitable(grouped));
}

}  // namespace
#else
TEST(StemConv, NeedsAvx2) {
  GTEST_SKIP() << "the few-channel direct convolution is built for AVX-512 and AVX2 with FMA "
                  "only; this build has neither";
}
#endif
