// Winograd F(2x2, 3x3) convolution (see winograd.h). Each 2x2 block of outputs comes from a 4x4
// input tile d and the 3x3 kernel g as Y = A^T [(G g G^T) . (B^T d B)] A, so the 36 multiplies
// of a direct 2x2 block become 16, and the 16 products of all tiles are 16 GEMMs over channels:
// M[xi] (out x tiles) = U[xi] (out x in) * V[xi] (in x tiles). Tiles are taken in blocks small
// enough that V and M of one block stay in the caches; each block is one task of the pool.
#include "kernels/cpu/winograd.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "nnx/thread_pool.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace nnx::cpu {

namespace {

constexpr int64_t kPoints = 16;  // 4x4 transformed points per tile

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Grows but never shrinks, one per thread: steady-state runs allocate nothing.
float* scratch(std::vector<float>& buffer, int64_t floats) {
  if (int64_t(buffer.size()) < floats) buffer = std::vector<float>(size_t(floats));
  return buffer.data();
}

// U[xi][oc][ic] = (G g G^T)[xi] with G = [[1,0,0], [1/2,1/2,1/2], [1/2,-1/2,1/2], [0,0,1]].
void transform_weights(const Conv2dShape& s, const float* weight, float* u) {
  const int64_t pairs = s.out_channels * s.in_channels;
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const float* g = weight + pair * 9;
    float gg[4][3];  // G g: the rows of g combined
    for (int c = 0; c < 3; ++c) {
      gg[0][c] = g[c];
      gg[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
      gg[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
      gg[3][c] = g[6 + c];
    }
    for (int r = 0; r < 4; ++r) {
      const float v[4] = {gg[r][0], 0.5f * (gg[r][0] + gg[r][1] + gg[r][2]),
                          0.5f * (gg[r][0] - gg[r][1] + gg[r][2]), gg[r][2]};
      for (int c = 0; c < 4; ++c) u[(r * 4 + c) * pairs + pair] = v[c];
    }
  }
}

#if defined(__AVX2__)
// The even and the odd elements of the 16 floats at p, in order.
inline void deinterleave(const float* p, __m256& even, __m256& odd) {
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  even = _mm256_castpd_ps(
      _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  odd = _mm256_castpd_ps(
      _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}
#endif

struct Tiling {
  int64_t rows, cols, per_image;  // tiles of 2x2 outputs
};

// V[xi][ic][t - t0] = (B^T d B)[xi] for tiles [t0, t1), with
// B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]]; zero outside the input.
void transform_input(const Conv2dShape& s, const Tiling& tiling, const float* input, int64_t t0,
                     int64_t t1, int64_t ld, float* v) {
  const int64_t plane = s.in_h * s.in_w, point_stride = s.in_channels * ld;
  // Channel by channel, tiles in order: each of the 16 point rows is written sequentially.
  for (int64_t ic = 0; ic < s.in_channels; ++ic) {
    float* out = v + ic * ld;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / tiling.per_image, within = t % tiling.per_image;
      const int64_t y0 = (within / tiling.cols) * 2 - s.pad_top;
      const int64_t x0 = (within % tiling.cols) * 2 - s.pad_left;
      const float* p = input + (n * s.in_channels + ic) * plane;
#if defined(__AVX2__)
      // Eight tiles of one row, all inside the input: their 4x4 patches overlap by 2 columns.
      if (t + 8 <= t1 && within % tiling.cols + 8 <= tiling.cols && y0 >= 0 && x0 >= 0 &&
          y0 + 4 <= s.in_h && x0 + 18 <= s.in_w) {
        __m256 d[4][4];
        for (int r = 0; r < 4; ++r) {
          const float* row = p + (y0 + r) * s.in_w + x0;
          deinterleave(row, d[r][0], d[r][1]);
          deinterleave(row + 2, d[r][2], d[r][3]);
        }
        __m256 e[4][4];
        for (int c = 0; c < 4; ++c) {
          e[0][c] = _mm256_sub_ps(d[0][c], d[2][c]);
          e[1][c] = _mm256_add_ps(d[1][c], d[2][c]);
          e[2][c] = _mm256_sub_ps(d[2][c], d[1][c]);
          e[3][c] = _mm256_sub_ps(d[1][c], d[3][c]);
        }
        float* o = out + (t - t0);
        for (int r = 0; r < 4; ++r) {
          _mm256_storeu_ps(o + (r * 4 + 0) * point_stride, _mm256_sub_ps(e[r][0], e[r][2]));
          _mm256_storeu_ps(o + (r * 4 + 1) * point_stride, _mm256_add_ps(e[r][1], e[r][2]));
          _mm256_storeu_ps(o + (r * 4 + 2) * point_stride, _mm256_sub_ps(e[r][2], e[r][1]));
          _mm256_storeu_ps(o + (r * 4 + 3) * point_stride, _mm256_sub_ps(e[r][1], e[r][3]));
        }
        t += 7;
        continue;
      }
#endif
      float d[4][4];
      if (y0 >= 0 && x0 >= 0 && y0 + 4 <= s.in_h && x0 + 4 <= s.in_w) {
        for (int r = 0; r < 4; ++r)
          for (int c = 0; c < 4; ++c) d[r][c] = p[(y0 + r) * s.in_w + x0 + c];
      } else {
        for (int r = 0; r < 4; ++r)
          for (int c = 0; c < 4; ++c) {
            const int64_t y = y0 + r, x = x0 + c;
            d[r][c] = y >= 0 && y < s.in_h && x >= 0 && x < s.in_w ? p[y * s.in_w + x] : 0.f;
          }
      }
      float e[4][4];  // B^T d
      for (int c = 0; c < 4; ++c) {
        e[0][c] = d[0][c] - d[2][c];
        e[1][c] = d[1][c] + d[2][c];
        e[2][c] = d[2][c] - d[1][c];
        e[3][c] = d[1][c] - d[3][c];
      }
      float* o = out + (t - t0);
      for (int r = 0; r < 4; ++r) {
        o[(r * 4 + 0) * point_stride] = e[r][0] - e[r][2];
        o[(r * 4 + 1) * point_stride] = e[r][1] + e[r][2];
        o[(r * 4 + 2) * point_stride] = e[r][2] - e[r][1];
        o[(r * 4 + 3) * point_stride] = e[r][1] - e[r][3];
      }
    }
  }
}

// Y = A^T m A with A^T = [[1,1,1,0], [0,1,-1,-1]], plus the bias, for tiles [t0, t1); the
// outputs past the bottom and right edges are dropped.
void transform_output(const Conv2dShape& s, const Tiling& tiling, const float* m, int64_t t0,
                      int64_t t1, int64_t ld, const float* bias, const Epilogue& epilogue,
                      float* output) {
  const int64_t plane = s.out_h * s.out_w, point_stride = s.out_channels * ld;
#if defined(__AVX2__)
  // ReLU and clamps (ReLU6, Hardtanh) are applied before the stores; other epilogues after.
  const bool relu = epilogue.active && epilogue.kind == Activation::relu;
  const bool clamp_in_registers =
      relu || (epilogue.active && epilogue.kind == Activation::hardtanh);
  const float clamp_lo = relu ? 0.f : epilogue.args.lo;
  const float clamp_hi = relu ? INFINITY : epilogue.args.hi;
#endif
  for (int64_t oc = 0; oc < s.out_channels; ++oc) {
    const float b = bias ? bias[oc] : 0.f;
    const float* in = m + oc * ld;
    for (int64_t t = t0; t < t1; ++t) {
      const float* p = in + (t - t0);
#if defined(__AVX2__)
      {
        const int64_t n = t / tiling.per_image, within = t % tiling.per_image;
        const int64_t y0 = (within / tiling.cols) * 2, x0 = (within % tiling.cols) * 2;
        // Eight whole tiles of one row: 2 rows of 16 outputs.
        if (t + 8 <= t1 && within % tiling.cols + 8 <= tiling.cols && y0 + 2 <= s.out_h &&
            x0 + 16 <= s.out_w) {
          __m256 x[16];
          for (int i = 0; i < kPoints; ++i) x[i] = _mm256_loadu_ps(p + i * point_stride);
          const __m256 bv = _mm256_set1_ps(b);
          const __m256 lo_v = _mm256_set1_ps(clamp_lo), hi_v = _mm256_set1_ps(clamp_hi);
          float* o = output + (n * s.out_channels + oc) * plane + y0 * s.out_w + x0;
          for (int r = 0; r < 2; ++r) {
            __m256 q[4];
            for (int c = 0; c < 4; ++c)
              q[c] = r == 0 ? _mm256_add_ps(_mm256_add_ps(x[c], x[4 + c]), x[8 + c])
                            : _mm256_sub_ps(_mm256_sub_ps(x[4 + c], x[8 + c]), x[12 + c]);
            __m256 y_0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(q[0], q[1]), q[2]), bv);
            __m256 y_1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(q[1], q[2]), q[3]), bv);
            if (clamp_in_registers) {  // max(lo, y) then min(hi, y) keep NaN as clamp_nan does
              y_0 = _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, y_0));
              y_1 = _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, y_1));
            }
            const __m256 lo = _mm256_unpacklo_ps(y_0, y_1), hi = _mm256_unpackhi_ps(y_0, y_1);
            _mm256_storeu_ps(o + r * s.out_w, _mm256_permute2f128_ps(lo, hi, 0x20));
            _mm256_storeu_ps(o + r * s.out_w + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
            if (!clamp_in_registers) apply_epilogue(epilogue, o + r * s.out_w, 16);
          }
          t += 7;
          continue;
        }
      }
#endif
      float x[4][4];
      for (int i = 0; i < kPoints; ++i) x[i / 4][i % 4] = p[i * point_stride];
      float q[2][4];  // A^T m
      for (int c = 0; c < 4; ++c) {
        q[0][c] = x[0][c] + x[1][c] + x[2][c];
        q[1][c] = x[1][c] - x[2][c] - x[3][c];
      }
      const int64_t n = t / tiling.per_image, within = t % tiling.per_image;
      const int64_t y0 = (within / tiling.cols) * 2, x0 = (within % tiling.cols) * 2;
      float* o = output + (n * s.out_channels + oc) * plane;
      for (int r = 0; r < 2 && y0 + r < s.out_h; ++r) {
        float y[2] = {q[r][0] + q[r][1] + q[r][2] + b, q[r][1] - q[r][2] - q[r][3] + b};
        apply_epilogue(epilogue, y, 2);
        o[(y0 + r) * s.out_w + x0] = y[0];
        if (x0 + 1 < s.out_w) o[(y0 + r) * s.out_w + x0 + 1] = y[1];
      }
    }
  }
}

}  // namespace

bool winograd_suitable(const Conv2dShape& s) {
  // Enough channels that the 16 GEMMs are not dominated by the transforms, and enough tiles per
  // layer that the weight transform (out x in x 16 floats, redone each call) is amortised and
  // every thread gets blocks: on ResNet-18's 14x14 and 7x7 layers it made them 3-5x slower, on
  // its 56x56 ones (784 tiles) it is 1.1-1.2x faster than im2col (AVX-512 EPYC, 1 and 2
  // threads), on the seed network's 120x160 and 240x320 ones about 1.5x.
  // Small planes in a batch (ResNet-18 at 8x8 in training, 512 tiles) lose: a training step
  // took 5% longer with them on Winograd.
  constexpr int64_t kMinTiles = 1024, kMinImageTiles = 256;
  const int64_t image_tiles = ((s.out_h + 1) / 2) * ((s.out_w + 1) / 2);
  const int64_t tiles = s.batch * image_tiles;
  return s.kernel_h == 3 && s.kernel_w == 3 && s.stride_h == 1 && s.stride_w == 1 &&
         s.dilation_h == 1 && s.dilation_w == 1 && s.groups == 1 && s.in_channels >= 16 &&
         s.out_channels >= 16 && (tiles >= kMinTiles || image_tiles >= kMinImageTiles);
}

void conv2d_winograd(const Conv2dShape& s, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool, const Epilogue& epilogue) {
  const int64_t tile_rows = ceil_div(s.out_h, 2), tile_cols = ceil_div(s.out_w, 2);
  const Tiling t{tile_rows, tile_cols, tile_rows * tile_cols};
  const int64_t tiles = s.batch * t.per_image;
  // V and M of one block together within about 1.5 MiB. Smaller blocks keep them in L2 but make
  // the 16 GEMMs too thin (n = tiles): on the 2-core EPYC this size measured best of
  // 384 KiB..8 MiB for the seed network's 3x3 layers.
  constexpr int64_t budget_floats = 1536 * 1024 / 4;
  const int64_t block = std::clamp<int64_t>(
      (budget_floats / (kPoints * (s.in_channels + s.out_channels))) / 16 * 16, 16, 512);
  const int64_t blocks = ceil_div(tiles, block);

  static thread_local std::vector<float> u_buffer;
  float* u = scratch(u_buffer, kPoints * s.out_channels * s.in_channels);
  transform_weights(s, weight, u);
  const int64_t pairs = s.out_channels * s.in_channels;

  parallel_for(pool, blocks, 1, [&](int64_t b0, int64_t b1) {
    thread_local std::vector<float> v_buffer, m_buffer;
    float* v = scratch(v_buffer, kPoints * s.in_channels * block);
    float* m = scratch(m_buffer, kPoints * s.out_channels * block);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first = b * block, last = std::min(tiles, first + block);
      const int64_t count = last - first;
      transform_input(s, t, input, first, last, block, v);
      for (int64_t xi = 0; xi < kPoints; ++xi)
        gemm(s.out_channels, count, s.in_channels, u + xi * pairs, s.in_channels,
             v + xi * s.in_channels * block, block, false, m + xi * s.out_channels * block, block,
             false);
      transform_output(s, t, m, first, last, block, bias, epilogue, output);
    }
  });
}

}  // namespace nnx::cpu
