// Convolutions with prepared weights (kernels/cpu/prepared.h: weights rearranged once for
// inference) against the same convolutions without (whose results the op tests check against
// PyTorch): 1x1 layers read in place (pointwise_conv.h) and the panel path for larger kernels,
// over strides, batches, channel counts off the 12-row panels, pixel counts off the tiles, bias
// or none, and fused epilogues.
#include "kernels/cpu/prepared.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/pointwise_conv.h"
#include "nnx/thread_pool.h"

namespace {

using nnx::cpu::Conv2dShape;
using nnx::cpu::Epilogue;

Conv2dShape pointwise(int64_t batch, int64_t in, int64_t out, int64_t h, int64_t w,
                      int64_t stride) {
  Conv2dShape s;
  s.batch = batch;
  s.in_channels = in;
  s.out_channels = out;
  s.in_h = h;
  s.in_w = w;
  s.stride_h = s.stride_w = stride;
  s.out_h = (h - 1) / stride + 1;
  s.out_w = (w - 1) / stride + 1;
  return s;
}

Conv2dShape general(int64_t batch, int64_t in, int64_t out, int64_t h, int64_t w, int64_t k,
                    int64_t stride, int64_t pad, int64_t dilation) {
  Conv2dShape s = pointwise(batch, in, out, h, w, stride);
  s.kernel_h = s.kernel_w = k;
  s.pad_top = s.pad_left = pad;
  s.dilation_h = s.dilation_w = dilation;
  s.out_h = (h + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
  s.out_w = (w + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
  return s;
}

std::string describe(const Conv2dShape& s) {
  return std::to_string(s.batch) + "x" + std::to_string(s.in_channels) + "x" +
         std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + " -> " +
         std::to_string(s.out_channels) + " kernel " + std::to_string(s.kernel_h) + " stride " +
         std::to_string(s.stride_h) + " pad " + std::to_string(s.pad_top) + " dilation " +
         std::to_string(s.dilation_h);
}

// Largest |prepared - plain| relative to the largest |plain|.
// With `residual`, the epilogue adds a residual input of the output's shape.
double difference(const Conv2dShape& s, int threads, bool with_bias, Epilogue epilogue,
                  bool residual = false) {
  std::mt19937 rng(unsigned(s.in_channels * 31 + s.out_channels * 7 + s.in_h));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> input(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  std::vector<float> weight(size_t(s.out_channels * s.in_channels * s.kernel_h * s.kernel_w));
  std::vector<float> bias(size_t(s.out_channels));
  for (float& v : input) v = u(rng);
  for (float& v : weight) v = u(rng);
  for (float& v : bias) v = u(rng);
  const size_t out_size = size_t(s.batch * s.out_channels * s.out_h * s.out_w);
  std::vector<float> plain(out_size), prepared(out_size + 1, NAN), extra(out_size);
  for (float& v : extra) v = u(rng);
  prepared.back() = 12345.f;  // a guard past the end
  nnx::ThreadPool pool(threads);
  const float* b = with_bias ? bias.data() : nullptr;
  if (residual) {
    epilogue.residual = extra.data();
    epilogue.output = plain.data();
  }
  nnx::cpu::conv2d(s, input.data(), weight.data(), b, plain.data(), &pool, epilogue);
  nnx::cpu::ConvPrepared cache;
  if (residual) epilogue.output = prepared.data();
  for (int run = 0; run < 2; ++run)  // the second run uses the panels the first one made
    nnx::cpu::conv2d(s, input.data(), weight.data(), b, prepared.data(), &pool, epilogue, &cache);
  EXPECT_EQ(prepared.back(), 12345.f) << describe(s);
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < out_size; ++i) {
    if (std::isnan(prepared[i])) return INFINITY;
    worst = std::max(worst, double(std::abs(prepared[i] - plain[i])));
    scale = std::max(scale, double(std::abs(plain[i])));
  }
  return worst / scale;
}

// What two float summation orders over a layer's depth may leave between them, relative to the
// largest output: about depth x epsilon at worst, 1e-6 at least. (The portable build's GEMM sums a
// 320-deep 1x1 layer in another order than the prepared panels do: 1.1e-6 apart.) A wrong term
// or a lost block is off by 1e-2 and more.
double tolerance(const Conv2dShape& s) {
  return std::max(1e-6, 1e-8 * double(s.in_channels / s.groups * s.kernel_h * s.kernel_w));
}

TEST(ConvPrepared, PointwiseMatchesUnprepared) {
  const std::vector<Conv2dShape> shapes = {
      pointwise(1, 64, 256, 56, 56, 1),    // many pixel tiles
      pointwise(1, 512, 512, 28, 28, 1),   // tiles in L2-sized groups
      pointwise(1, 256, 1024, 14, 14, 1),  // few pixels: weight panels split
      pointwise(1, 1024, 256, 14, 14, 1),  // fewer outputs than inputs
      pointwise(1, 512, 2048, 7, 7, 1),    // 49 pixels: channels-last on AVX-512
      pointwise(2, 24, 29, 9, 11, 1),      // channels off the panels, batch
      pointwise(1, 256, 512, 56, 56, 2),   // strided (ResNet's downsample)
      pointwise(3, 16, 40, 13, 10, 2),     // strided, odd sizes, batch
  };
  for (const Conv2dShape& s : shapes)
    for (int threads : {1, 2, 3})
      EXPECT_LT(difference(s, threads, true, {}), tolerance(s))
          << describe(s) << " threads " << threads;
}

TEST(ConvPrepared, LargerKernelsStridesAndPaddingMatchUnprepared) {
  const std::vector<Conv2dShape> shapes = {
      general(1, 3, 64, 70, 66, 7, 2, 3, 1),    // ResNet's stem
      general(1, 64, 128, 28, 28, 3, 2, 1, 1),  // a strided 3x3, few pixels
      general(2, 8, 20, 33, 35, 3, 2, 1, 1),    // odd sizes, batch
      general(1, 5, 14, 19, 23, 5, 1, 4, 2),    // dilation, padding past the kernel
      general(1, 4, 8, 40, 40, 3, 1, 1, 1),     // 3x3 too thin for Winograd
      general(1, 6, 10, 17, 17, 3, 3, 0, 1),    // stride 3
      general(1, 16, 24, 9, 9, 1, 1, 1, 1),     // 1x1 with padding
      // Planes of up to 196 pixels (channels-last; AVX2 builds tile the columns by pixels):
      // input channels off the blocks of 8, a batch, a larger kernel.
      general(3, 13, 30, 13, 11, 3, 2, 1, 1),
      general(2, 9, 17, 12, 12, 5, 1, 2, 1),
      // A strided layer whose batch's padded copy passes 2 MB: whole images per thread, the
      // images left over split between the threads.
      general(5, 32, 24, 64, 64, 3, 2, 1, 1),
  };
  for (const Conv2dShape& s : shapes)
    for (int threads : {1, 2, 3})
      EXPECT_LT(difference(s, threads, true, {}), tolerance(s))
          << describe(s) << " threads " << threads;
}

// Depthwise layers on small planes run 16 channels at a time (channels-last on AVX-512): a
// batch whose channel count leaves a short last block writes nothing past its planes (the guard
// after the output) on any thread count, with and without an activation the kernel cannot clamp.
TEST(ConvPrepared, DepthwiseSmallPlanesStayInTheirPlanes) {
  Epilogue silu{true, nnx::Activation::silu, {}};
  for (Conv2dShape s :
       {general(3, 37, 37, 14, 14, 5, 1, 2, 1), general(2, 20, 20, 15, 13, 3, 2, 1, 1)}) {
    s.groups = s.in_channels;
    for (int threads : {1, 2, 3}) {
      EXPECT_LT(difference(s, threads, true, {}), 1e-6) << describe(s) << " threads " << threads;
      EXPECT_LT(difference(s, threads, false, silu), 1e-6) << describe(s) << " threads " << threads;
    }
  }
}

TEST(ConvPrepared, PointwiseEpiloguesAndNoBias) {
  Epilogue relu{true, nnx::Activation::relu, {}};
  Epilogue silu{true, nnx::Activation::silu, {}};
  Epilogue relu6{true, nnx::Activation::hardtanh, {}};
  relu6.args.lo = 0.f;
  relu6.args.hi = 6.f;
  for (const Conv2dShape& s : {pointwise(1, 32, 96, 28, 28, 1), pointwise(1, 320, 40, 7, 7, 1),
                               pointwise(1, 4, 50, 9, 9, 1)})
    for (const Epilogue& e : {relu, silu, relu6}) {
      EXPECT_LT(difference(s, 2, false, e), tolerance(s)) << describe(s);
      EXPECT_LT(difference(s, 1, true, e), tolerance(s)) << describe(s);
    }
}

// On planes of at most 100 pixels (the channels-last GEMM with prepared weights) an activation
// the clamp does not give goes over each stored channel: the bits of the layer followed by the
// activation op, over full and partial pixel tiles, channels off the 16-channel groups, batches
// and thread counts (whole images per thread and the split of larger weights).
TEST(ConvPrepared, ChannelsLastActivationsGiveTheActivationOpsBits) {
  nnx::ActivationArgs leaky;
  leaky.alpha = 0.1f;
  const std::pair<nnx::Activation, nnx::ActivationArgs> activations[] = {
      {nnx::Activation::silu, {}},
      {nnx::Activation::hardswish, {}},
      {nnx::Activation::leaky_relu, leaky}};
  for (const Conv2dShape& s : {pointwise(2, 40, 50, 7, 7, 1), pointwise(2, 192, 1152, 7, 7, 1),
                               pointwise(3, 20, 33, 5, 9, 1)}) {
    std::mt19937 rng(unsigned(s.in_channels + s.out_channels));
    std::uniform_real_distribution<float> u(-2.f, 2.f);
    std::vector<float> input(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
    std::vector<float> weight(size_t(s.out_channels * s.in_channels)), bias(size_t(s.out_channels));
    for (float& v : input) v = u(rng);
    for (float& v : weight) v = u(rng);
    for (float& v : bias) v = u(rng);
    const size_t n = size_t(s.batch * s.out_channels * s.out_h * s.out_w);
    for (int threads : {1, 2}) {
      nnx::ThreadPool pool(threads);
      for (const auto& [kind, args] : activations) {
        Epilogue e;
        e.active = true;
        e.kind = kind;
        e.args = args;
        std::vector<float> fused(n), plain(n);
        nnx::cpu::ConvPrepared cache;
        nnx::cpu::conv2d(s, input.data(), weight.data(), bias.data(), fused.data(), &pool, e,
                         &cache);
        nnx::cpu::conv2d(s, input.data(), weight.data(), bias.data(), plain.data(), &pool, {},
                         &cache);
        nnx::cpu::activation(kind, args, plain.data(), plain.data(), int64_t(n), &pool);
        EXPECT_EQ(std::memcmp(fused.data(), plain.data(), n * sizeof(float)), 0)
            << describe(s) << " activation " << int(kind) << " threads " << threads;
      }
    }
  }
}

// 1x1 layers on planes of over 100 pixels read their input in place (pointwise_conv.h): tiles
// ending part-way, channels off the panels, batches, a strided layer (its pixels sampled first),
// few pixels per weight (each thread a run of weight panels, also across a batch), depths past the
// L2 grouping, bias or none, and every kind of epilogue with a residual.
TEST(ConvPrepared, PointwiseInPlaceMatchesUnprepared) {
  Epilogue none{};
  Epilogue relu{true, nnx::Activation::relu, {}};
  Epilogue silu{true, nnx::Activation::silu, {}};
  const std::vector<Conv2dShape> shapes = {
      pointwise(1, 512, 128, 28, 28, 1),  // ResNet-50's: 24.5 tiles
      pointwise(2, 160, 100, 19, 17, 1),  // 323 pixels: 3 in the last tile; 100 channels
      pointwise(1, 300, 150, 33, 33, 2),  // strided
      pointwise(1, 2048, 64, 20, 20, 1),  // one tile per group
      pointwise(1, 640, 600, 17, 17, 1),  // more weight rows than pixels
      pointwise(3, 128, 128, 16, 18, 1),  // 288 pixels: the last tile's second vector empty
      pointwise(1, 128, 512, 14, 14, 1),  // an expanding layer on a small plane
      pointwise(1, 100, 13, 15, 15, 1),   // 225 pixels: a 1-pixel tail, one row past a panel
      pointwise(2, 70, 26, 11, 18, 1),    // 198 pixels: a 6-pixel tail, channels off the panels
      pointwise(2, 256, 400, 27, 28, 2),  // strided, sampled to 14x14: expanding, batch
      // Strided with at least two images per thread: each thread samples its own images, its
      // run of tasks starting or ending part-way through one (7 images over 2 or 3 threads).
      pointwise(7, 96, 200, 25, 23, 2),
      // 49 pixels (the channels-last GEMM) with weights that stay in L2, over a batch: whole
      // images per thread, the images left over split (5 over 2 or 3 threads).
      pointwise(5, 96, 200, 7, 7, 1),
      pointwise(3, 96, 300, 10, 12, 1),    // each thread a run of weight panels, across a batch
      pointwise(2, 1024, 200, 11, 11, 1),  // the same with two pixel groups per panel
      // Planes of up to 64 pixels with more weight rows than pixels: AVX2 builds pack each
      // image's tiles first (each thread its own copy, per image).
      pointwise(3, 40, 100, 8, 8, 1),    // four whole tiles, a batch
      pointwise(2, 33, 70, 3, 5, 1),     // one part-filled tile
      pointwise(2, 50, 30, 3, 3, 1),     // 9 pixels: the 8-pixel tile and a 1-pixel tail
      pointwise(3, 64, 130, 13, 13, 2),  // strided, sampled to 7x7, then packed
      pointwise(1, 2048, 512, 7, 7, 1),  // deep: 2048 rows a tile
  };
  for (const Conv2dShape& s : shapes)
    for (int threads : {1, 2, 3}) {
      EXPECT_LT(difference(s, threads, true, none), tolerance(s))
          << describe(s) << " threads " << threads;
      EXPECT_LT(difference(s, threads, false, relu, true), tolerance(s))
          << describe(s) << " threads " << threads;
      EXPECT_LT(difference(s, threads, true, silu, true), tolerance(s))
          << describe(s) << " threads " << threads;
      EXPECT_LT(difference(s, threads, true, none, true), tolerance(s))
          << describe(s) << " threads " << threads;
    }
}

// A residual that lies in the output's own memory (the planner gives a fused Add's dying operand
// to the chain's value where conv2d_residual_in_place says so): the same numbers as from a
// residual of its own, on the paths that read it in their stores and, through a copy, on those
// that would overwrite it first (channels-last, Winograd, panels, GEMM bands, SiLU after it).
TEST(ConvPrepared, ResidualInTheOutputsMemory) {
  Epilogue none{};
  Epilogue relu{true, nnx::Activation::relu, {}};
  Epilogue silu{true, nnx::Activation::silu, {}};
  const std::vector<Conv2dShape> shapes = {
      pointwise(2, 64, 40, 12, 12, 1),         // in place on the 1x1 tiles
      pointwise(1, 96, 64, 26, 26, 2),         // sampled to 13x13 first
      pointwise(1, 128, 48, 7, 7, 1),          // channels-last on small planes
      general(1, 16, 24, 12, 12, 3, 1, 1, 1),  // Winograd
      general(2, 6, 20, 15, 13, 5, 2, 2, 1),   // panels or indirect
      general(1, 300, 30, 9, 9, 3, 2, 1, 1),   // a depth past the panel path's blocks
      pointwise(1, 48, 30, 14, 14, 1),         // the 1x1 tiles' 4-pixel tail
      pointwise(4, 96, 64, 26, 26, 2),         // sampled per image by the thread convolving it
  };
  for (const Conv2dShape& s : shapes)
    for (bool prepare : {false, true})
      for (const Epilogue& e : {none, relu, silu}) {
        std::mt19937 rng(unsigned(s.in_channels + s.out_channels));
        std::uniform_real_distribution<float> u(-1.f, 1.f);
        std::vector<float> input(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
        std::vector<float> weight(size_t(s.out_channels * s.in_channels * s.kernel_h * s.kernel_w));
        std::vector<float> bias(size_t(s.out_channels));
        const size_t out_size = size_t(s.batch * s.out_channels * s.out_h * s.out_w);
        std::vector<float> residual(out_size), apart(out_size), over(out_size);
        for (auto* v : {&input, &weight, &bias, &residual})
          for (float& x : *v) x = u(rng);
        nnx::ThreadPool pool(2);
        nnx::cpu::ConvPrepared cache;
        nnx::cpu::ConvPrepared* prepared = prepare ? &cache : nullptr;
        Epilogue own = e;
        own.residual = residual.data();
        own.output = apart.data();
        nnx::cpu::conv2d(s, input.data(), weight.data(), bias.data(), apart.data(), &pool, own,
                         prepared);
        over = residual;
        Epilogue shared = e;
        shared.residual = shared.output = over.data();
        nnx::cpu::conv2d(s, input.data(), weight.data(), bias.data(), over.data(), &pool, shared,
                         prepared);
        EXPECT_EQ(over, apart) << describe(s) << (prepare ? " prepared" : "") << " activation "
                               << e.active << int(e.kind);
      }
#if defined(NNX_POINTWISE_CONV)
  EXPECT_TRUE(nnx::cpu::conv2d_residual_in_place(shapes[0], true, relu));
  EXPECT_TRUE(nnx::cpu::conv2d_residual_in_place(shapes[1], true, none));
  EXPECT_TRUE(nnx::cpu::conv2d_residual_in_place(shapes[6], true, relu));
  EXPECT_FALSE(nnx::cpu::conv2d_residual_in_place(shapes[0], true, silu));
  EXPECT_FALSE(nnx::cpu::conv2d_residual_in_place(shapes[0], false, relu));
#endif
  EXPECT_FALSE(nnx::cpu::conv2d_residual_in_place(shapes[3], true, relu));
}

// Prepared weights' blocks: small ones on a cache line, large ones on a huge page, all usable
// to their last byte.
TEST(ConvPrepared, WeightBlocksAreAligned) {
  for (size_t bytes : {size_t(100), size_t(64 << 10), size_t(2) << 20, (size_t(5) << 20) + 12}) {
    auto* p = static_cast<unsigned char*>(nnx::cpu::allocate_weights(bytes));
    ASSERT_NE(p, nullptr);
    const size_t align = bytes >= (size_t(2) << 20) ? (size_t(2) << 20) : 64;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << bytes;
    p[0] = 1;
    p[bytes - 1] = 2;
    EXPECT_EQ(p[0] + p[bytes - 1], 3);
    nnx::cpu::free_weights(p, bytes);
  }
}

}  // namespace
