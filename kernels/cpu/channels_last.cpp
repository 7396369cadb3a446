// The channels-last GEMM (see channels_last.h).
#include "kernels/cpu/channels_last.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <array>

#include "kernels/cpu/aligned_buffer.h"

namespace nnx::cpu {

#if defined(__AVX512F__)
namespace {

// C[MR pixels][NV * 16 channels] = sum over k of a[p * a_ps + k * a_ks] * b[k * ldb + channel]
// over one block of depth, added to the partial sums at `partial` ([MR][48]) where `resume`;
// then either kept there for the next block or, with `last`, plus bias, clamped and stored as
// cl_gemm describes (`columns`: the channels of this tile to keep, channels-first only).
template <int MR, int NV>
void cl_tile(int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b, int64_t ldb,
             float* partial, bool resume, bool last, const float* bias, float lower, float upper,
             float* c, int64_t ldc, bool channels_first, int64_t columns) {
  __m512 acc[MR][NV];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    static_for<NV>([&]<int V>() __attribute__((always_inline)) {
      acc[P][V] = resume ? _mm512_load_ps(partial + P * 48 + V * 16) : _mm512_setzero_ps();
    });
  });
  for (int64_t kk = 0; kk < k; ++kk) {
    __m512 bv[NV];
    static_for<NV>([&]<int V>() __attribute__((always_inline)) {
      bv[V] = _mm512_load_ps(b + kk * ldb + V * 16);
    });
    const float* ak = a + kk * a_ks;
    // Each pixel's value broadcast once and used for all NV vectors.
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      const __m512 av = _mm512_set1_ps(ak[P * a_ps]);
      static_for<NV>([&]<int V>() __attribute__((always_inline)) {
        acc[P][V] = _mm512_fmadd_ps(av, bv[V], acc[P][V]);
      });
    });
  }
  if (!last) {
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      static_for<NV>([&]<int V>() __attribute__((always_inline)) {
        _mm512_store_ps(partial + P * 48 + V * 16, acc[P][V]);
      });
    });
    return;
  }
  const __m512 lo = _mm512_set1_ps(lower), hi = _mm512_set1_ps(upper);
  static_for<NV>([&]<int V>() __attribute__((always_inline)) {
    const __m512 bias_v = _mm512_load_ps(bias + V * 16);
    if (!channels_first) {
      static_for<MR>([&]<int P>() __attribute__((always_inline)) {
        _mm512_store_ps(c + P * ldc + V * 16,
                        _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[P][V], bias_v))));
      });
      return;
    }
    // Through a small transpose in cache: channel j's MR pixels are contiguous in c.
    alignas(64) float t[MR][16];
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      _mm512_store_ps(t[P], _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[P][V], bias_v))));
    });
    const int64_t n = std::min<int64_t>(16, columns - V * 16);
    for (int64_t j = 0; j < n; ++j) {
      float* to = c + (V * 16 + j) * ldc;
      for (int p = 0; p < MR; ++p) to[p] = t[p][j];
    }
  });
}

using ClTile = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                        bool, bool, const float*, float, float, float*, int64_t, bool, int64_t);
template <int... M>
constexpr std::array<std::array<ClTile, 3>, sizeof...(M)> cl_tiles(
    std::integer_sequence<int, M...>) {
  return {{{&cl_tile<M + 1, 1>, &cl_tile<M + 1, 2>, &cl_tile<M + 1, 3>}...}};
}
constexpr auto kClTiles = cl_tiles(std::make_integer_sequence<int, 7>{});

// Depth per block: a block of B (at most 128 x 48 floats, 24 KiB) stays in L1 while the pixel
// tiles go past it, rather than coming from L2 again for each (a 2048-deep layer's B column is
// 384 KiB).
constexpr int64_t kDepthBlock = 128;

}  // namespace

void cl_gemm(int64_t pixels, int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b,
             int64_t ld, const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* c,
             int64_t ldc, bool channels_first, int64_t columns) {
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
      for (int64_t p = 0; p < pixels; p += 7) {
        const int64_t mr = std::min<int64_t>(7, pixels - p);
        float* out = channels_first ? c + g * 16 * ldc + p : c + p * ldc + g * 16;
        kClTiles[size_t(mr - 1)][size_t(nv - 1)](
            kk, a + p * a_ps + k0 * a_ks, a_ps, a_ks, b_panel + k0 * width, width,
            partial != nullptr ? partial + p * 48 : nullptr, k0 > 0, k0 + kk == k, bias + g * 16,
            lo, hi, out, ldc, channels_first, columns - g * 16);
      }
    }
    g += nv;
  }
}
#elif defined(NNX_CL_GEMM)
namespace {

// AVX2: 16 ymm registers hold MR <= 6 pixels by one 16-channel group (12 accumulators, the
// group's two weight vectors and a broadcast pixel value), the AVX-512 tile's work with a third
// of its channels; otherwise as there (partial sums at `partial`, [MR][48], between depth blocks).
// With Unit, a_ps is 1 (a channels-first A): the broadcasts at fixed offsets, no address
// arithmetic per pixel in the loop.
template <int MR, bool Unit>
void cl_tile(int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b, int64_t ldb,
             float* partial, bool resume, bool last, const float* bias, float lower, float upper,
             float* c, int64_t ldc, bool channels_first, int64_t columns) {
  __m256 acc[MR][2];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    acc[P][0] = resume ? _mm256_load_ps(partial + P * 48) : _mm256_setzero_ps();
    acc[P][1] = resume ? _mm256_load_ps(partial + P * 48 + 8) : _mm256_setzero_ps();
  });
  for (int64_t kk = 0; kk < k; ++kk) {
    const __m256 b0 = _mm256_load_ps(b + kk * ldb), b1 = _mm256_load_ps(b + kk * ldb + 8);
    const float* ak = a + kk * a_ks;
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      const __m256 av = _mm256_broadcast_ss(ak + P * (Unit ? 1 : a_ps));
      acc[P][0] = _mm256_fmadd_ps(av, b0, acc[P][0]);
      acc[P][1] = _mm256_fmadd_ps(av, b1, acc[P][1]);
    });
  }
  if (!last) {
    static_for<MR>([&]<int P>() __attribute__((always_inline)) {
      _mm256_store_ps(partial + P * 48, acc[P][0]);
      _mm256_store_ps(partial + P * 48 + 8, acc[P][1]);
    });
    return;
  }
  const __m256 lo = _mm256_set1_ps(lower), hi = _mm256_set1_ps(upper);
  const __m256 bias0 = _mm256_load_ps(bias), bias1 = _mm256_load_ps(bias + 8);
  alignas(32) float t[MR][16];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    float* to = channels_first ? t[P] : c + P * ldc;
    _mm256_store_ps(to, _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc[P][0], bias0))));
    _mm256_store_ps(to + 8, _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc[P][1], bias1))));
  });
  if (!channels_first) return;
  // Through a small transpose in cache: channel j's MR pixels are contiguous in c.
  const int64_t n = std::min<int64_t>(16, columns);
  for (int64_t j = 0; j < n; ++j) {
    float* to = c + j * ldc;
    for (int p = 0; p < MR; ++p) to[p] = t[p][j];
  }
}

using ClTile = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                        bool, bool, const float*, float, float, float*, int64_t, bool, int64_t);
template <int... M>
constexpr std::array<std::array<ClTile, sizeof...(M)>, 2> cl_tiles(
    std::integer_sequence<int, M...>) {
  return {{{&cl_tile<M + 1, false>...}, {&cl_tile<M + 1, true>...}}};
}
constexpr int64_t kClPixels = 6;
constexpr auto kClTiles = cl_tiles(std::make_integer_sequence<int, int(kClPixels)>{});
constexpr int64_t kDepthBlock = 128;  // a panel's block of B: 24 KiB, in L1 across the tiles

}  // namespace

void cl_gemm(int64_t pixels, int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b,
             int64_t ld, const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* c,
             int64_t ldc, bool channels_first, int64_t columns) {
  thread_local AlignedBuffer partial_buffer;
  const int64_t depth = k <= 2 * kDepthBlock ? k : kDepthBlock;
  float* partial = depth < k ? partial_buffer.get(pixels * 48) : nullptr;
  // The pixels dealt out evenly over the tiles: a tile of one or two pixels has too few
  // accumulators to hide the FMA latency and takes as long as one of four (7x7: 4 x 6 + 5 x 5
  // rather than 8 x 6 + 1).
  const int64_t tiles = (pixels + kClPixels - 1) / kClPixels;
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
      for (int64_t v = 0; v < nv; ++v) {
        const int64_t gv = g + v;
        if (channels_first && gv * 16 >= columns) break;
        const float* b_block = b + panel * kClPanel * k + k0 * width + (gv % 3) * 16;
        for (int64_t i = 0, p = 0; i < tiles; ++i) {
          const int64_t mr = pixels / tiles + (i < pixels % tiles ? 1 : 0);
          float* out = channels_first ? c + gv * 16 * ldc + p : c + p * ldc + gv * 16;
          kClTiles[a_ps == 1][size_t(mr - 1)](
              kk, a + p * a_ps + k0 * a_ks, a_ps, a_ks, b_block, width,
              partial != nullptr ? partial + p * 48 + v * 16 : nullptr, k0 > 0, k0 + kk == k,
              bias + gv * 16, lo, hi, out, ldc, channels_first, columns - gv * 16);
          p += mr;
        }
      }
    }
    g += nv;
  }
}
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
