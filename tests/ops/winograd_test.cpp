// The Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions (kernels/cpu/winograd.h) against a
// double-precision direct sum: with weights transformed per call and prepared once for either
// tile (F(4x4, 3x3) on AVX-512 and AVX2 builds), on 1 to 3 threads, over plane sizes
// that exercise both work splits (many tiles in blocks, few tiles split over channels), tile runs
// that cross the GEMM's 16- and 32-wide panels, odd edges, channel counts that are not multiples
// of the 12-row panels, batches, padding 0 and 1, a bias or none, and fused epilogues.
#include "kernels/cpu/winograd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/prepared.h"
#include "nnx/thread_pool.h"

namespace {

using nnx::cpu::Conv2dShape;
using nnx::cpu::Epilogue;

struct Case {
  int64_t batch, in_channels, out_channels, h, w, pad;
};

std::string describe(const Case& c) {
  return std::to_string(c.batch) + "x" + std::to_string(c.in_channels) + "x" + std::to_string(c.h) +
         "x" + std::to_string(c.w) + " -> " + std::to_string(c.out_channels) + " pad " +
         std::to_string(c.pad);
}

Conv2dShape shape_of(const Case& c) {
  Conv2dShape s;
  s.batch = c.batch;
  s.in_channels = c.in_channels;
  s.out_channels = c.out_channels;
  s.in_h = c.h;
  s.in_w = c.w;
  s.kernel_h = s.kernel_w = 3;
  s.pad_top = s.pad_left = c.pad;
  s.out_h = c.h + 2 * c.pad - 2;
  s.out_w = c.w + 2 * c.pad - 2;
  return s;
}

// The largest |winograd - direct| over all outputs, relative to the largest |direct|.
// `tile`: 0, the weights transformed per call; 2 or 4, prepared for that tile.
double worst_error(const Case& c, int threads, int tile, bool with_bias, const Epilogue& epilogue) {
  const Conv2dShape s = shape_of(c);
  std::mt19937 rng(unsigned(c.in_channels * 131 + c.h * 7 + c.w));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> input(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  std::vector<float> weight(size_t(s.out_channels * s.in_channels * 9)),
      bias(size_t(s.out_channels));
  for (float& v : input) v = u(rng);
  for (float& v : weight) v = u(rng);
  for (float& v : bias) v = u(rng);
  const int64_t out_size = s.batch * s.out_channels * s.out_h * s.out_w;
  // A guard element past the output catches writes beyond it; NaN shows outputs never written.
  std::vector<float> output(size_t(out_size + 1), NAN);
  output.back() = 12345.f;
  nnx::ThreadPool pool(threads);
  std::vector<float> transformed(size_t(tile > 0 ? nnx::cpu::winograd_weights_floats(s, tile) : 0));
  if (tile > 0)
    nnx::cpu::winograd_transform_weights(s, weight.data(), transformed.data(), tile, &pool);
  nnx::cpu::conv2d_winograd(s, input.data(), weight.data(), with_bias ? bias.data() : nullptr,
                            output.data(), &pool, epilogue, tile > 0 ? transformed.data() : nullptr,
                            tile);
  EXPECT_EQ(output.back(), 12345.f) << describe(c);
  double worst = 0, scale = 1e-30;
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t oc = 0; oc < s.out_channels; ++oc)
      for (int64_t oh = 0; oh < s.out_h; ++oh)
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          double want = with_bias ? bias[size_t(oc)] : 0.0;
          for (int64_t ic = 0; ic < s.in_channels; ++ic)
            for (int64_t kh = 0; kh < 3; ++kh)
              for (int64_t kw = 0; kw < 3; ++kw) {
                const int64_t ih = oh - s.pad_top + kh, iw = ow - s.pad_left + kw;
                if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) continue;
                want +=
                    double(input[size_t(((n * s.in_channels + ic) * s.in_h + ih) * s.in_w + iw)]) *
                    double(weight[size_t(((oc * s.in_channels + ic) * 3 + kh) * 3 + kw)]);
              }
          float expected = float(want);
          nnx::cpu::apply_epilogue(epilogue, &expected, 1);
          const float got =
              output[size_t(((n * s.out_channels + oc) * s.out_h + oh) * s.out_w + ow)];
          if (std::isnan(got)) return INFINITY;
          worst = std::max(worst, std::abs(double(got) - double(expected)));
          scale = std::max(scale, std::abs(want));
        }
  return worst / scale;
}

const std::vector<Case> kCases = {
    {1, 16, 16, 7, 7, 1},    // 16 tiles: one 16-wide panel, runs of 4
    {1, 20, 29, 9, 11, 1},   // odd edges, channels off the 12-row panels
    {1, 32, 24, 14, 14, 1},  // 49 tiles: runs of 7 across 32-wide panels
    {1, 16, 16, 30, 34, 1},  // runs of 16 and 1 per tile row
    {1, 17, 18, 56, 56, 1},  // many tiles: blocks
    {3, 16, 40, 13, 10, 0},  // batch, no padding, runs crossing images
    {2, 48, 16, 31, 29, 1},  // blocks with odd edges
    {1, 64, 64, 5, 5, 1},    // fewer tiles than a panel
    {1, 16, 16, 3, 40, 0},   // one tile row
    // Small planes, F(4x4, 3x3)'s tile rows stacked into one run's lanes: 7 (28x28), 5 (batch
    // 2, rows stacked 3 and 2 per image), 6 and 8 tiles a row (a partial last tile row).
    {1, 16, 24, 28, 28, 1},
    {2, 16, 16, 20, 18, 1},
    {1, 16, 16, 32, 24, 1},
    {1, 16, 16, 9, 32, 1},
    // AVX2 stacks tile rows of 1, 2 or 4 tiles into its 8 lanes: SqueezeNet's 13x13 (4 tiles a
    // row, 4 rows: two 8-lane steps), a batch of 16x13 planes (runs crossing images), 4-wide
    // planes of 5 tile rows (one tile a row: 5 of 8 lanes).
    {1, 48, 40, 13, 13, 1},
    {3, 16, 20, 16, 13, 1},
    {2, 16, 16, 18, 4, 1},
    // 2 x 130 tiles of 4x4: weights transformed per call for F(4x4, 3x3) too.
    {2, 16, 16, 40, 52, 1},
};

// The tiles to test, and the error each is held to (relative to the largest output).
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
const std::vector<int> kTiles = {0, 2, 4};
#else
const std::vector<int> kTiles = {0, 2};
#endif
// `tile` 0: the weights transformed per call, for winograd_unprepared_tile's tile.
double tolerance(const Case& c, int tile) {
  if (tile == 0) tile = nnx::cpu::winograd_unprepared_tile(shape_of(c));
  return tile == 4 ? 1e-5 : 2e-6;
}

TEST(Winograd, MatchesDirectSum) {
  for (const Case& c : kCases)
    for (int threads : {1, 2, 3})
      for (int tile : kTiles)
        EXPECT_LT(worst_error(c, threads, tile, true, {}), tolerance(c, tile))
            << describe(c) << " threads " << threads << " tile " << tile;
}

TEST(Winograd, NoBiasAndEpilogues) {
  Epilogue relu{true, nnx::Activation::relu, {}};
  Epilogue hardtanh{true, nnx::Activation::hardtanh, {}};
  hardtanh.args.lo = -0.5f;
  hardtanh.args.hi = 0.75f;
  Epilogue silu{true, nnx::Activation::silu, {}};
  for (const Case& c : {kCases[1], kCases[2], kCases[5], kCases[14]})
    for (const Epilogue& e : {relu, hardtanh, silu})
      for (int tile : kTiles) {
        EXPECT_LT(worst_error(c, 2, tile, false, e), tolerance(c, tile)) << describe(c);
        EXPECT_LT(worst_error(c, 1, tile, true, e), tolerance(c, tile)) << describe(c);
      }
}

TEST(Winograd, PreparedTransformIsMadeOnceAndShared) {
  const Conv2dShape s = shape_of(kCases[0]);
  std::vector<float> weight(size_t(s.out_channels * s.in_channels * 9), 0.25f);
  nnx::cpu::ConvPrepared weights;
  const float* first = weights.winograd(s, weight.data());
  weight.assign(weight.size(), -1.f);  // a later call keeps the first transform
  EXPECT_EQ(weights.winograd(s, weight.data()), first);
  EXPECT_EQ(first[0], 0.25f);  // U[0] = g[0][0]
}

// The tile is the first shape's: F(4x4, 3x3) for planes whose 4x4 tiles fill a 16-wide panel
// (AVX-512 and AVX2 builds), F(2x2, 3x3) for smaller ones, kept when a later call's plane
// differs.
TEST(Winograd, PreparedTileFollowsTheFirstShape) {
  const Conv2dShape small = shape_of({1, 16, 16, 7, 7, 1}),
                    large = shape_of({1, 16, 16, 16, 16, 1});
  EXPECT_EQ(nnx::cpu::winograd_prepared_tile(small), 2);
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  EXPECT_EQ(nnx::cpu::winograd_prepared_tile(large), 4);
  Conv2dShape batch = small;
  batch.batch = 4;  // 16 tiles of 4x4 in all
  EXPECT_EQ(nnx::cpu::winograd_prepared_tile(batch), 4);
#else
  EXPECT_EQ(nnx::cpu::winograd_prepared_tile(large), 2);
#endif
  std::vector<float> weight(size_t(16 * 16 * 9), 0.5f);
  nnx::cpu::ConvPrepared weights;
  weights.winograd(large, weight.data());
  const int tile = weights.winograd_tile();
  EXPECT_EQ(tile, nnx::cpu::winograd_prepared_tile(large));
  weights.winograd(small, weight.data());
  EXPECT_EQ(weights.winograd_tile(), tile);
}

// Transformed per call, F(4x4, 3x3) where an image's 4x4 tiles fill a panel (AVX-512 builds;
// AVX2: more than 16 of them) and the batch has 256 of them.
TEST(Winograd, UnpreparedTileNeedsFullPanelsAndEnoughTiles) {
  Conv2dShape train = shape_of({32, 64, 64, 16, 16, 1});         // 16 tiles an image, 512 in all
  Conv2dShape wider = shape_of({16, 64, 128, 64, 80, 1});        // 320 tiles an image
  Conv2dShape small_planes = shape_of({32, 128, 128, 8, 8, 1});  // 4 tiles an image
  Conv2dShape one_image = shape_of({1, 64, 64, 56, 56, 1});      // 196 tiles
#if defined(__AVX512F__)
  EXPECT_EQ(nnx::cpu::winograd_unprepared_tile(train), 4);
#else
  EXPECT_EQ(nnx::cpu::winograd_unprepared_tile(train), 2);
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  EXPECT_EQ(nnx::cpu::winograd_unprepared_tile(wider), 4);
#else
  EXPECT_EQ(nnx::cpu::winograd_unprepared_tile(wider), 2);
#endif
  EXPECT_EQ(nnx::cpu::winograd_unprepared_tile(small_planes), 2);
  EXPECT_EQ(nnx::cpu::winograd_unprepared_tile(one_image), 2);
}

TEST(Winograd, Suitability) {
  Conv2dShape small = shape_of({1, 256, 256, 14, 14, 1});
  EXPECT_TRUE(nnx::cpu::winograd_suitable(small, true));
  EXPECT_FALSE(nnx::cpu::winograd_suitable(small, false));  // weight transform not amortised
  Conv2dShape large = shape_of({1, 64, 64, 56, 56, 1});
  EXPECT_TRUE(nnx::cpu::winograd_suitable(large, false));
  Conv2dShape strided = large;
  strided.stride_h = strided.stride_w = 2;
  EXPECT_FALSE(nnx::cpu::winograd_suitable(strided, true));
  Conv2dShape thin = shape_of({1, 8, 64, 56, 56, 1});
  EXPECT_FALSE(nnx::cpu::winograd_suitable(thin, true));
}

}  // namespace
