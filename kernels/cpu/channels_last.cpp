// The channels-last GEMM (see channels_last.h).
#include "kernels/cpu/channels_last.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <array>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/int_math.h"

namespace nnx::cpu {

#if defined(NNX_CL_GEMM)
namespace {

// C[MR pixels][NVEC vectors of output channels] = sum over k of a[p * a_ps + k * a_ks] *
// b[k * ldb + channel] over one block of depth, added to the partial sums at `partial` ([MR][48])
// where `resume`; then either kept there for the next block or, with `last`, plus bias, clamped
// and stored as cl_gemm describes (`columns`: the channels of this tile to keep, channels-first
// only). With Unit, a_ps is 1 (a channels-first A): the broadcasts at fixed offsets, no address
// arithmetic per pixel in the loop. Written once for the build's vector (vec::V): AVX-512 tiles
// are 7 pixels x 3 vectors of 16, AVX2 ones 6 x 2 of 8 (16 ymm registers: 12 accumulators, the
// two weight vectors and a broadcast).
// `prefetch_lines` cache lines from `prefetch` on are requested into L2, one each step of depth
// (the tile's prefetch_share of the next block of B, while it reads the current one from L1).
template <int MR, int NVEC, bool Unit>
void cl_tile(int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b, int64_t ldb,
             float* partial, bool resume, bool last, const float* bias, float lower, float upper,
             float* c, int64_t ldc, bool channels_first, int64_t columns, const char* prefetch,
             int64_t prefetch_lines) {
  constexpr int W = vec::kWidth;
  vec::V acc[MR][NVEC];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
      acc[P][V] = resume ? vec::load(partial + P * 48 + V * W) : vec::zero();
    });
  });
  for (int64_t kk = 0; kk < k; ++kk) {
    if (kk < prefetch_lines) _mm_prefetch(prefetch + 64 * kk, _MM_HINT_T1);
    vec::V bv[NVEC];
    static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
      bv[V] = vec::load(b + kk * ldb + V * W);
    });
    const float* ak = a + kk * a_ks;
    // Each pixel's value broadcast once and used for all NVEC vectors.
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      const vec::V av = vec::splat(ak[P * (Unit ? 1 : a_ps)]);
      static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
        acc[P][V] = vec::fmadd(av, bv[V], acc[P][V]);
      });
    });
  }
  if (!last) {
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
        vec::store(partial + P * 48 + V * W, acc[P][V]);
      });
    });
    return;
  }
  const vec::V lo = vec::splat(lower), hi = vec::splat(upper);
  static_for<NVEC>([&]<int V>() __attribute__((always_inline)) {
    const vec::V bias_v = vec::load(bias + V * W);
    if (!channels_first) {
      static_for<MR>([&]<int P>() __attribute__((always_inline)) {
        vec::store(c + P * ldc + V * W, vec::min(hi, vec::max(lo, vec::add(acc[P][V], bias_v))));
      });
      return;
    }
    // Through a small transpose in cache: channel j's MR pixels are contiguous in c.
    alignas(64) float t[MR][W];
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      vec::store(t[P], vec::min(hi, vec::max(lo, vec::add(acc[P][V], bias_v))));
    });
    const int64_t n = std::min<int64_t>(W, columns - V * W);
    for (int64_t j = 0; j < n; ++j) {
      float* to = c + (V * W + j) * ldc;
      for (int p = 0; p < MR; ++p) to[p] = t[p][j];
    }
  });
}

using ClTile = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                        bool, bool, const float*, float, float, float*, int64_t, bool, int64_t,
                        const char*, int64_t);
#if defined(__AVX512F__)
// [a_ps == 1][pixels - 1][16-channel vectors - 1].
template <bool Unit, int... M>
constexpr std::array<std::array<ClTile, 3>, sizeof...(M)> cl_tiles(
    std::integer_sequence<int, M...>) {
  return {{{&cl_tile<M + 1, 1, Unit>, &cl_tile<M + 1, 2, Unit>, &cl_tile<M + 1, 3, Unit>}...}};
}
constexpr std::array<std::array<std::array<ClTile, 3>, 7>, 2> kClTiles = {
    cl_tiles<false>(std::make_integer_sequence<int, 7>{}),
    cl_tiles<true>(std::make_integer_sequence<int, 7>{})};

// Depth per block: a block of B (at most 128 x 48 floats, 24 KiB) stays in L1 while the pixel
// tiles go past it, rather than coming from L2 again for each (a 2048-deep layer's B column is
// 384 KiB).
constexpr int64_t kDepthBlock = 128;
#else
// [a_ps == 1][pixels - 1], one 16-channel group (two vectors) a tile.
template <bool Unit, int... M>
constexpr std::array<ClTile, sizeof...(M)> cl_tiles(std::integer_sequence<int, M...>) {
  return {&cl_tile<M + 1, 2, Unit>...};
}
constexpr int64_t kClPixels = 6;
constexpr std::array<std::array<ClTile, kClPixels>, 2> kClTiles = {
    cl_tiles<false>(std::make_integer_sequence<int, int(kClPixels)>{}),
    cl_tiles<true>(std::make_integer_sequence<int, int(kClPixels)>{})};
constexpr int64_t kDepthBlock = 128;  // a panel's block of B: 24 KiB, in L1 across the tiles

// The pixels of tile i of `tiles` over `pixels`, dealt out evenly (the first pixels % tiles
// tiles one more): cl_gemm's tiles and cl_tile_rows's layout alike.
int64_t tile_pixels(int64_t pixels, int64_t tiles, int64_t i) {
  return pixels / tiles + (i < pixels % tiles ? 1 : 0);
}
#endif

}  // namespace

#if defined(__AVX512F__)
void cl_gemm(int64_t pixels, int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b,
             int64_t ld, const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* c,
             int64_t ldc, bool channels_first, int64_t columns, bool) {
  thread_local AlignedBuffer partial_buffer;
  const int64_t depth = k <= 2 * kDepthBlock ? k : kDepthBlock;
  float* partial = depth < k ? partial_buffer.get((pixels + 6) / 7 * 7 * 48) : nullptr;
  for (int64_t g = g0; g < g1;) {
    // Up to three groups, within one panel of B.
    const int64_t panel = g / 3, nv = std::min<int64_t>(3 - g % 3, g1 - g);
    if (channels_first && g * 16 >= columns) break;
    const int64_t width = std::min<int64_t>(kClPanel, ld - panel * kClPanel);
    const float* b_panel = b + panel * kClPanel * k + (g % 3) * 16;
    for (int64_t k0 = 0; k0 < k; k0 += depth) {
      const int64_t kk = std::min(depth, k - k0);
      // The first pixel tile reads this block of B from memory where the weights are not
      // cached (ResNet-50's 7x7 layers at batch 1: 100 MB of weights a run); the others,
      // reading it from L1, request the block after it (the rest of the panel, then the next
      // panel: B is one sequential stream), shared out between them.
      const int64_t next = panel * kClPanel * k + (k0 + kk) * width;  // floats into B
      const int64_t lines = std::min(kk * width, ld * k - next) / 16;
      for (int64_t p = 0, t = 0; p < pixels; p += 7, ++t) {
        const int64_t mr = std::min<int64_t>(7, pixels - p);
        float* out = channels_first ? c + g * 16 * ldc + p : c + p * ldc + g * 16;
        const PrefetchShare ahead = prefetch_share(b + next, lines, (pixels + 6) / 7, t);
        kClTiles[a_ps == 1][size_t(mr - 1)][size_t(nv - 1)](
            kk, a + p * a_ps + k0 * a_ks, a_ps, a_ks, b_panel + k0 * width, width,
            partial != nullptr ? partial + p * 48 : nullptr, k0 > 0, k0 + kk == k, bias + g * 16,
            lo, hi, out, ldc, channels_first, columns - g * 16, ahead.from, ahead.lines);
      }
    }
    g += nv;
  }
}
#else
void cl_tile_rows(const float* src, int64_t pixels, int64_t k, int64_t r0, int64_t r1, float* a) {
  const int64_t tiles = ceil_div(pixels, kClPixels);
  for (int64_t i = 0, p = 0; i < tiles; ++i) {
    const int64_t mr = tile_pixels(pixels, tiles, i);
    float* dst = a + p * k + r0 * mr;
    const float* row = src + p;
    for (int64_t r = r0; r < r1; ++r, row += pixels, dst += mr)
      for (int64_t j = 0; j < mr; ++j) dst[j] = row[j];
    p += mr;
  }
}

void cl_gemm(int64_t pixels, int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b,
             int64_t ld, const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* c,
             int64_t ldc, bool channels_first, int64_t columns, bool tiled) {
  thread_local AlignedBuffer partial_buffer;
  const int64_t depth = k <= 2 * kDepthBlock ? k : kDepthBlock;
  float* partial = depth < k ? partial_buffer.get(pixels * 48) : nullptr;
  // The pixels dealt out evenly over the tiles: a tile of one or two pixels has too few
  // accumulators to hide the FMA latency and takes as long as one of four (7x7: 4 x 6 + 5 x 5
  // rather than 8 x 6 + 1).
  const int64_t tiles = ceil_div(pixels, kClPixels);
  for (int64_t g = g0; g < g1;) {
    // The groups of one panel together, a depth block at a time, so that the block's rows of B
    // (contiguous, up to 48 floats) are read in order and used up while in L1: group by group,
    // each took every third cache line of the panel, and streaming the weights from memory
    // that way (ResNet-50's 7x7 layers at batch 1) was slower than the panel path.
    const int64_t panel = g / 3, nv = std::min<int64_t>(3 - g % 3, g1 - g);
    if (channels_first && g * 16 >= columns) break;
    const int64_t width = std::min<int64_t>(kClPanel, ld - panel * kClPanel);
    for (int64_t k0 = 0; k0 < k; k0 += depth) {
      const int64_t kk = std::min(depth, k - k0);
      // As the AVX-512 loop: the first tile of each group reads this block of B from memory
      // (first from L3, in L2 with that one), the others request the next block between them.
      // Per node, each round's ratio against none: ResNet-50's 512 -> 512 3x3/2 at 7x7 0.63-0.66,
      // MobileNetV2's fused blocks at 7x7 0.75-0.83 and at 14x14 0.88-0.94.
      const int64_t next = panel * kClPanel * k + (k0 + kk) * width;  // floats into B
      const int64_t lines = std::min(kk * width, ld * k - next) / 16;
      for (int64_t v = 0; v < nv; ++v) {
        const int64_t gv = g + v;
        if (channels_first && gv * 16 >= columns) break;
        const float* b_block = b + panel * kClPanel * k + k0 * width + (gv % 3) * 16;
        for (int64_t i = 0, p = 0; i < tiles; ++i) {
          const int64_t mr = tile_pixels(pixels, tiles, i);
          const PrefetchShare ahead = prefetch_share(b + next, lines, nv * tiles, v * tiles + i);
          float* out = channels_first ? c + gv * 16 * ldc + p : c + p * ldc + gv * 16;
          const float* at = tiled ? a + p * k + k0 * mr : a + p * a_ps + k0 * a_ks;
          kClTiles[tiled || a_ps == 1][size_t(mr - 1)](
              kk, at, tiled ? 1 : a_ps, tiled ? mr : a_ks, b_block, width,
              partial != nullptr ? partial + p * 48 + v * 16 : nullptr, k0 > 0, k0 + kk == k,
              bias + gv * 16, lo, hi, out, ldc, channels_first, columns - gv * 16, ahead.from,
              ahead.lines);
          p += mr;
        }
      }
    }
    g += nv;
  }
}
#endif
#endif

void pack_cl_panels(const float* weight, int64_t m, int64_t k, float* out) {
  const int64_t ld = (m + 15) / 16 * 16;
  for (int64_t p0 = 0; p0 < ld; p0 += kClPanel) {
    const int64_t width = std::min(kClPanel, ld - p0);
    float* panel = out + p0 * k;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < width; ++j)
        panel[i * width + j] = p0 + j < m ? weight[(p0 + j) * k + i] : 0.f;
  }
}

}  // namespace nnx::cpu
