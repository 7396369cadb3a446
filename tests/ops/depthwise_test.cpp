// The depthwise plane kernel (kernels/cpu/depthwise.h) against a double-precision direct sum,
// over kernel sizes, strides, dilations and paddings (including asymmetric 'same' padding,
// windows wider than the input and outputs narrower than one vector).
#include "kernels/cpu/depthwise.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/activation.h"
#include "nnx/thread_pool.h"

namespace {

using nnx::cpu::Conv2dShape;

// The largest difference from a double-precision direct sum, clamped to [lo, hi].
double check(const Conv2dShape& s, float lo = -INFINITY, float hi = INFINITY) {
  std::mt19937 rng(unsigned(s.in_h * 1000 + s.in_w * 10 + s.kernel_h));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> in(size_t(s.in_h * s.in_w)), w(size_t(s.kernel_h * s.kernel_w));
  for (float& v : in) v = u(rng);
  for (float& v : w) v = u(rng);
  const float bias = u(rng);
  // One guard element past the plane catches writes beyond it.
  std::vector<float> out(size_t(s.out_h * s.out_w + 1), 12345.f);
  nnx::cpu::depthwise_plane(s, in.data(), w.data(), bias, out.data(), lo, hi);
  EXPECT_EQ(out.back(), 12345.f);
  double worst = 0;
  for (int64_t oh = 0; oh < s.out_h; ++oh)
    for (int64_t ow = 0; ow < s.out_w; ++ow) {
      double want = bias;
      for (int64_t kh = 0; kh < s.kernel_h; ++kh)
        for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
          const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
          const int64_t iw = ow * s.stride_w - s.pad_left + kw * s.dilation_w;
          if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) continue;
          want += double(in[size_t(ih * s.in_w + iw)]) * double(w[size_t(kh * s.kernel_w + kw)]);
        }
      want = std::clamp(want, double(lo), double(hi));
      worst = std::max(worst, std::abs(double(out[size_t(oh * s.out_w + ow)]) - want));
    }
  return worst;
}

// Output size as PyTorch computes it; `extra` adds padding on the bottom/right only.
Conv2dShape shape(int64_t h, int64_t w, int64_t k, int64_t stride, int64_t pad, int64_t dilation,
                  int64_t extra = 0) {
  Conv2dShape s;
  s.in_h = h;
  s.in_w = w;
  s.kernel_h = s.kernel_w = k;
  s.stride_h = s.stride_w = stride;
  s.pad_top = s.pad_left = pad;
  s.dilation_h = s.dilation_w = dilation;
  s.out_h = (h + 2 * pad + extra - dilation * (k - 1) - 1) / stride + 1;
  s.out_w = (w + 2 * pad + extra - dilation * (k - 1) - 1) / stride + 1;
  s.in_channels = s.out_channels = s.groups = 1;
  return s;
}

TEST(Depthwise, MatchesDirectSum) {
  for (int64_t k : {1, 2, 3, 5, 7})
    for (int64_t stride : {1, 2, 3})
      for (int64_t dilation : {1, 2})
        for (int64_t pad : {0, 1, 3})
          for (auto [h, w] : {std::pair<int64_t, int64_t>{7, 7},
                              {14, 9},
                              {56, 56},
                              {3, 40},
                              {13, 112},
                              {10, 33}}) {
            if (h + 2 * pad < dilation * (k - 1) + 1 || w + 2 * pad < dilation * (k - 1) + 1)
              continue;
            const Conv2dShape s = shape(h, w, k, stride, pad, dilation);
            EXPECT_LT(check(s), 1e-5) << "k " << k << " stride " << stride << " dilation "
                                      << dilation << " pad " << pad << " " << h << "x" << w;
          }
}

TEST(Depthwise, AsymmetricPaddingAndRectangularKernels) {
  Conv2dShape s = shape(10, 13, 3, 1, 0, 1, 1);  // 'same' with an even kernel: extra row/col
  s.kernel_h = 2;
  s.kernel_w = 4;
  s.pad_top = 0;
  s.pad_left = 1;
  s.out_h = 10;
  s.out_w = 13;
  EXPECT_LT(check(s), 1e-5);
  Conv2dShape t = shape(9, 17, 3, 2, 1, 1);
  t.stride_h = 1;
  t.out_h = 9;
  EXPECT_LT(check(t), 1e-5);
}

// The clamp of a fused ReLU6 (or ReLU) on every path: the register-blocked 3x3 and 5x5 kernels
// (strides 1 and 2), the general vector loop (7x7, dilated) and the scalar one (stride 3).
TEST(Depthwise, ClampsLikeReLU6) {
  for (int64_t k : {3, 5, 7})
    for (int64_t stride : {1, 2, 3})
      for (int64_t dilation : {1, 2}) {
        const Conv2dShape s = shape(21, 37, k, stride, k / 2, dilation);
        EXPECT_LT(check(s, 0.f, 0.5f), 1e-5) << "k " << k << " stride " << stride;
        EXPECT_LT(check(s, 0.f, INFINITY), 1e-5) << "k " << k << " stride " << stride;
      }
}

// A NaN in the input stays NaN through the clamp, as torch.clamp leaves it.
TEST(Depthwise, ClampKeepsNaN) {
  for (int64_t stride : {1, 2}) {
    const Conv2dShape s = shape(8, 20, 3, stride, 1, 1);
    std::vector<float> in(size_t(s.in_h * s.in_w), 1.f), w(9, 1.f);
    in[size_t(3 * s.in_w + 4)] = NAN;
    std::vector<float> out(size_t(s.out_h * s.out_w));
    nnx::cpu::depthwise_plane(s, in.data(), w.data(), 0.f, out.data(), 0.f, 6.f);
    const int64_t oh = 3 / stride, ow = 4 / stride;
    EXPECT_TRUE(std::isnan(out[size_t(oh * s.out_w + ow)])) << "stride " << stride;
    EXPECT_EQ(out[0], 4.f);  // corner: 4 taps of 1 inside the input
    EXPECT_EQ(out[size_t((s.out_h - 1) * s.out_w + 1)], 6.f);  // 6 or 9 taps, clamped
  }
}

// A depthwise convolution with a fused activation (applied in registers before the store where
// the kernel can, else over each stored plane) gives the bits of the convolution followed by the
// activation op, over the channels-last small planes (7x7, 14x14, a stride-2 13 -> 7, channel
// counts off the blocks of 16), its wider rows (3x3 on 27 columns, 5x5 on 30, 5x5 stride 2 on 40)
// and the plane kernels; the inputs include large magnitudes and a
// NaN.
TEST(Depthwise, FusedActivationsGiveTheActivationOpsBits) {
  struct Case {
    int64_t batch, channels, h, k, stride;
  };
  const Case cases[] = {{2, 37, 7, 5, 1},  {1, 20, 14, 3, 1}, {2, 17, 13, 3, 2}, {1, 20, 27, 3, 1},
                        {1, 33, 30, 5, 1}, {1, 17, 40, 5, 2}, {1, 5, 20, 3, 1},  {2, 3, 50, 5, 2}};
  nnx::ActivationArgs leaky;
  leaky.alpha = 0.1f;
  nnx::ActivationArgs six;
  six.lo = 0.f;
  six.hi = 6.f;
  const std::pair<nnx::Activation, nnx::ActivationArgs> activations[] = {
      {nnx::Activation::silu, {}},
      {nnx::Activation::hardswish, {}},
      {nnx::Activation::leaky_relu, leaky},
      {nnx::Activation::relu, {}},
      {nnx::Activation::hardtanh, six}};
  nnx::ThreadPool pool(2);
  for (const Case& c : cases) {
    Conv2dShape s = shape(c.h, c.h, c.k, c.stride, c.k / 2, 1);
    s.batch = c.batch;
    s.in_channels = s.out_channels = s.groups = c.channels;
    std::mt19937 rng(unsigned(c.channels * 100 + c.h));
    std::uniform_real_distribution<float> u(-3.f, 3.f);
    std::vector<float> in(size_t(c.batch * c.channels * c.h * c.h));
    std::vector<float> w(size_t(c.channels * c.k * c.k)), bias(size_t(c.channels));
    for (float& v : in) v = u(rng);
    for (float& v : w) v = u(rng);
    for (float& v : bias) v = u(rng);
    in[5] = 1e30f;
    in[in.size() / 2] = -1e30f;
    in[in.size() - 7] = NAN;
    const size_t n = size_t(c.batch * c.channels * s.out_h * s.out_w);
    for (const auto& [kind, args] : activations) {
      nnx::cpu::Epilogue e;
      e.active = true;
      e.kind = kind;
      e.args = args;
      std::vector<float> fused(n), plain(n);
      nnx::cpu::conv2d(s, in.data(), w.data(), bias.data(), fused.data(), &pool, e);
      nnx::cpu::conv2d(s, in.data(), w.data(), bias.data(), plain.data(), &pool);
      nnx::cpu::activation(kind, args, plain.data(), plain.data(), int64_t(n), &pool);
      EXPECT_EQ(std::memcmp(fused.data(), plain.data(), n * sizeof(float)), 0)
          << "activation " << int(kind) << ", " << c.batch << "x" << c.channels << "x" << c.h
          << " kernel " << c.k << " stride " << c.stride;
    }
  }
}

}  // namespace
