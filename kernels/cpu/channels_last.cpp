// The channels-last GEMM (see channels_last.h).
#include "kernels/cpu/channels_last.h"

#include <algorithm>
#include <array>
#include <utility>

// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 header for _mm512_max_ps and
// _mm512_min_ps (the undefined pass-through of the masked builtins; GCC bug 105593, fixed in
// GCC 13): a false positive, silenced for this file only, as in depthwise.cpp.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nnx::cpu {

#if defined(__AVX512F__)
namespace {

// f.template operator()<I>() for I = 0 .. N-1, unrolled at compile time.
template <int N, typename F>
inline __attribute__((always_inline)) void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f.template operator()<I>(), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

// C[MR pixels][NV * 16 channels] = sum over k of a[p * a_ps + k * a_ks] * b[k * ldb + channel],
// plus bias, clamped to [lo, hi]; stored as cl_gemm describes (`columns`: the channels of this
// tile to keep, channels-first only).
template <int MR, int NV, bool kChannelsFirst>
void cl_tile(int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b, int64_t ldb,
             const float* bias, float lower, float upper, float* c, int64_t ldc, int64_t columns) {
  const __m512 lo = _mm512_set1_ps(lower), hi = _mm512_set1_ps(upper);
  __m512 acc[MR][NV];
  static_for<MR>([&]<int P>() __attribute__((always_inline)) {
    static_for<NV>([&]<int V>()
                       __attribute__((always_inline)) { acc[P][V] = _mm512_setzero_ps(); });
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
  static_for<NV>([&]<int V>() __attribute__((always_inline)) {
    const __m512 bias_v = _mm512_load_ps(bias + V * 16);
    if constexpr (!kChannelsFirst) {
      static_for<MR>([&]<int P>() __attribute__((always_inline)) {
        _mm512_store_ps(c + P * ldc + V * 16,
                        _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[P][V], bias_v))));
      });
    } else {
      // Through a small transpose in cache: channel j's MR pixels are contiguous in c.
      alignas(64) float t[MR][16];
      static_for<MR>([&]<int P>() __attribute__((always_inline)) {
        _mm512_store_ps(t[P],
                        _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[P][V], bias_v))));
      });
      const int64_t n = std::min<int64_t>(16, columns - V * 16);
      for (int64_t j = 0; j < n; ++j) {
        float* to = c + (V * 16 + j) * ldc;
        for (int p = 0; p < MR; ++p) to[p] = t[p][j];
      }
    }
  });
}

using ClTile = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t,
                        const float*, float, float, float*, int64_t, int64_t);
template <bool kChannelsFirst, int... M>
constexpr std::array<std::array<ClTile, 3>, sizeof...(M)> cl_tiles(
    std::integer_sequence<int, M...>) {
  return {{{&cl_tile<M + 1, 1, kChannelsFirst>, &cl_tile<M + 1, 2, kChannelsFirst>,
            &cl_tile<M + 1, 3, kChannelsFirst>}...}};
}
constexpr auto kClTiles = cl_tiles<false>(std::make_integer_sequence<int, 7>{});
constexpr auto kClTilesFirst = cl_tiles<true>(std::make_integer_sequence<int, 7>{});

}  // namespace

// Each 48-channel column block of B stays in cache while the pixel tiles go past it.
void cl_gemm(int64_t pixels, int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b,
             int64_t ldb, const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* c,
             int64_t ldc, bool channels_first, int64_t columns) {
  const auto& tiles = channels_first ? kClTilesFirst : kClTiles;
  for (int64_t g = g0; g < g1;) {
    const int64_t nv = std::min<int64_t>(3, g1 - g);
    if (channels_first && g * 16 >= columns) break;
    for (int64_t p = 0; p < pixels; p += 7) {
      const int64_t mr = std::min<int64_t>(7, pixels - p);
      float* out = channels_first ? c + g * 16 * ldc + p : c + p * ldc + g * 16;
      tiles[size_t(mr - 1)][size_t(nv - 1)](k, a + p * a_ps, a_ps, a_ks, b + g * 16, ldb,
                                            bias + g * 16, lo, hi, out, ldc, columns - g * 16);
    }
    g += nv;
  }
}
#endif

}  // namespace nnx::cpu
