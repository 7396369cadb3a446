// A convolution and the max pooling after it, computed band by band (cpu::conv2d_max_pool), against
// the two run one after the other: overlapping and disjoint windows, padding, dilation, ceil_mode
// sizes, strided and 1x1 convolutions, batches, 1 to 3 threads, with and without prepared
// weights; all bands and their seams must give the same outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/prepared.h"
#include "nnx/thread_pool.h"

namespace {

using nnx::cpu::Conv2dShape;
using nnx::cpu::Pool2dShape;

struct Case {
  int64_t batch, in_channels, out_channels, h, w;
  int64_t kernel, stride, pad;                 // convolution
  int64_t pool_kernel, pool_stride, pool_pad;  // max pooling
  int64_t pool_dilation = 1;
  bool ceil_mode = false;
  int64_t nan_at = -1;  // an input element set to NaN (-1: none)
};

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;  // PyTorch: the last window starts inside
  return out;
}

double difference(const Case& c, int threads, bool prepared) {
  Conv2dShape s;
  s.batch = c.batch;
  s.in_channels = c.in_channels;
  s.out_channels = c.out_channels;
  s.in_h = c.h;
  s.in_w = c.w;
  s.kernel_h = s.kernel_w = c.kernel;
  s.stride_h = s.stride_w = c.stride;
  s.pad_top = s.pad_left = c.pad;
  s.out_h = out_size(c.h, c.kernel, c.stride, c.pad, 1, false);
  s.out_w = out_size(c.w, c.kernel, c.stride, c.pad, 1, false);
  Pool2dShape p;
  p.planes = s.batch * s.out_channels;
  p.in_h = s.out_h;
  p.in_w = s.out_w;
  p.kernel_h = p.kernel_w = c.pool_kernel;
  p.stride_h = p.stride_w = c.pool_stride;
  p.pad_h = p.pad_w = c.pool_pad;
  p.dilation_h = p.dilation_w = c.pool_dilation;
  p.out_h =
      out_size(s.out_h, c.pool_kernel, c.pool_stride, c.pool_pad, c.pool_dilation, c.ceil_mode);
  p.out_w =
      out_size(s.out_w, c.pool_kernel, c.pool_stride, c.pool_pad, c.pool_dilation, c.ceil_mode);
  std::mt19937 rng(unsigned(c.h * 100 + c.kernel * 10 + c.pool_kernel));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> input(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  std::vector<float> weight(size_t(s.out_channels * s.in_channels * c.kernel * c.kernel));
  std::vector<float> bias(size_t(s.out_channels));
  for (float& v : input) v = u(rng);
  for (float& v : weight) v = u(rng);
  for (float& v : bias) v = u(rng);
  if (c.nan_at >= 0) input[size_t(c.nan_at)] = NAN;
  nnx::ThreadPool pool(threads);
  const nnx::cpu::Epilogue relu{true, nnx::Activation::relu, {}};
  std::vector<float> conv(size_t(p.planes * s.out_h * s.out_w));
  std::vector<float> want(size_t(p.planes * p.out_h * p.out_w));
  nnx::cpu::conv2d(s, input.data(), weight.data(), bias.data(), conv.data(), &pool, relu);
  nnx::cpu::max_pool2d(p, conv.data(), want.data(), &pool);
  std::vector<float> got(want.size() + 1, NAN);
  got.back() = 12345.f;  // a guard past the end
  nnx::cpu::ConvPrepared cache;
  nnx::cpu::conv2d_max_pool(s, p, input.data(), weight.data(), bias.data(), got.data(), &pool, relu,
                            prepared ? &cache : nullptr);
  EXPECT_EQ(got.back(), 12345.f);
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;  // NaN where PyTorch's is
    if (std::isnan(got[i])) continue;
    worst = std::max(worst, double(std::abs(got[i] - want[i])) / (1.0 + std::abs(want[i])));
  }
  return worst;
}

TEST(ConvMaxPool, MatchesConvolutionThenPooling) {
  const std::vector<Case> cases = {
      {1, 3, 16, 64, 80, 7, 2, 3, 3, 2, 1},          // ResNet's stem: overlapping windows
      {1, 3, 8, 96, 64, 3, 1, 1, 2, 2, 0},           // the seed's Conv+BN+ReLU+MaxPool(2)
      {1, 3, 8, 64, 64, 7, 1, 3, 4, 4, 0},           // the seed's 7x7 branch, MaxPool(4)
      {2, 16, 24, 30, 26, 3, 1, 1, 3, 2, 1},         // Winograd rows, batch
      {1, 32, 16, 20, 20, 1, 1, 0, 2, 2, 0},         // 1x1
      {1, 4, 6, 33, 31, 3, 2, 0, 3, 2, 0, 1, true},  // ceil_mode: a partial last window
      {1, 4, 6, 40, 36, 3, 1, 2, 3, 1, 1, 2},        // dilated pooling, stride 1
      {3, 5, 7, 9, 11, 3, 1, 1, 2, 3, 1},            // stride past the kernel
      {1, 4, 6, 10, 10, 1, 1, 1, 2, 2, 0},           // rows of padding alone: unbanded
      // Wide enough rows for several bands (about 512 KiB of convolution rows each): 24 bands
      // of 2 pooled rows, and bands of one pooled row in a batch (each thread whole bands).
      {1, 3, 64, 96, 512, 3, 1, 1, 2, 2, 0},
      {2, 3, 32, 40, 1100, 7, 1, 3, 4, 4, 0},
      // Winograd rows wide enough for bands of one pooled row: widened to 4 convolution rows.
      {1, 16, 256, 8, 300, 3, 1, 1, 2, 2, 0},
      // 3x3 stride-2 windows over several bands: consecutive bands on a thread share a
      // convolution row, kept from one to the next; a NaN whose rows cross such a seam, and one
      // in that row alone (a 1x1 convolution).
      {1, 3, 64, 40, 512, 7, 1, 3, 3, 2, 1},
      {2, 3, 16, 60, 1200, 7, 2, 3, 3, 2, 1},
      {1, 3, 64, 40, 512, 7, 1, 3, 3, 2, 1, 1, false, 2 * 40 * 512 + 9 * 512 + 100},
      {1, 3, 64, 40, 512, 1, 1, 0, 3, 2, 1, 1, false, 7 * 512 + 100},  // NaN in a kept row only
  };
  for (size_t i = 0; i < cases.size(); ++i)
    for (int threads : {1, 2, 3})
      for (bool prepared : {false, true})  // prepared: F(4x4, 3x3) against F(2x2, 3x3) rows
        EXPECT_LT(difference(cases[i], threads, prepared), prepared ? 5e-5 : 1e-5)
            << "case " << i << " threads " << threads << (prepared ? " prepared" : "");
}

}  // namespace
