// 1x1 convolutions reading their input in place (see pointwise_conv.h).
#include "kernels/cpu/pointwise_conv.h"

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <array>
#include <cstdint>

#include "kernels/cpu/env_switch.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/int_math.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
namespace {

#if defined(__AVX512F__)
// Input rows are prefetched this many input channels ahead of the FMAs: further for deep inputs,
// whose tiles run longer and read more of their input from beyond L2. ResNet-50, per node, each
// round's ratio of two alternating runs, medians over 12 rounds at batch 1: the 14x14 layers
// with 1024 input channels 7-11% faster at 32 than at 16 and 4-8% faster again at 48 (64: 2-7%
// slower than 48); those with 512 input channels 1-4% faster at 32, no faster at 48; 256 input
// channels 2-4% slower at 32; 16 had beaten 0 and 8.
int64_t ahead_rows(int64_t k) {
  return k >= 1024 ? 48 : k >= 512 ? 32 : 16;
}
#else
// The AVX2 tiles' distance (16 beat 0, 8 and 32 on ResNet-50's layers with AVX-512 tiles).
// A tile's last kAhead input channels prefetch the first ones of the next tile (the same rows
// 16 pixels on) instead of rows past the input's channels, which belong to the next image or
// to nothing, each a miss to memory: 16 -> 96 channels at 112x112 (EfficientNet-B0), one core,
// 0.74-0.94 -> 0.58 ms; 32 -> 16 there 0.30 -> 0.27.
constexpr int64_t kAhead = 16;
#endif

// Output rows prefetched this many tiles ahead of a tile's stores.
constexpr int64_t kOutAhead = 2;

// Requests the output lines of the tile kOutAhead tiles on (same rows) in a writable state: its
// stores, and the loads of a residual added in place, would otherwise wait on memory where the
// output is not cached (ResNet-50 at batch 8: the 56x56 1x1 layers with their residual 3.3-3.6
// -> 2.5-2.6 ms, the 28x28 ones 2.6-2.7 -> 2.3 ms). Called outside the tile kernels: a prefetch
// added to them, in their loop or before it, had GCC spill their accumulators.
void prefetch_output(float* c, int64_t rows, int64_t ldc, int64_t tile) {
  const float* ahead = c + kOutAhead * tile;
  for (int64_t r = 0; r < rows; ++r, ahead += ldc) {
    prefetch_for_write(ahead);
    prefetch_for_write(ahead + tile - 1);
    if (tile > 16) prefetch_for_write(ahead + 16);
  }
}

#if defined(__AVX512F__)
constexpr int64_t kTile = 32;  // pixels of one tile: two vectors

// C[R channels][16V pixels] = bias + sum over k of a[p * 12 + r] * b[p * ldb + pixel] (+ the
// residual at C's position), clamped to [lo, hi] (NaN kept), row stride ldc; the last vector's
// loads and stores masked by `last`; b's rows prefetched `ahead` rows ahead (ahead_rows: as an
// argument, since the call inside had GCC spill the accumulators).
template <int R, int V>
void pointwise_tile(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                    __mmask16 last, const float* bias, const float* residual, float lo, float hi,
                    int64_t ahead) {
  __m512 acc[R][V];
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    static_for<V>([&]<int v>() __attribute__((always_inline)) { acc[r][v] = _mm512_setzero_ps(); });
  });
  const int64_t jump = ahead * ldb;
  for (int64_t p = 0; p < k; ++p, a += kPanelRows, b += ldb) {
    _mm_prefetch(reinterpret_cast<const char*>(b + jump), _MM_HINT_T0);
    // The weights 64 channels (3 KiB) ahead: a panel's first tile reads them from memory.
    _mm_prefetch(reinterpret_cast<const char*>(a + 64 * kPanelRows), _MM_HINT_T0);
    if constexpr (V == 2) _mm_prefetch(reinterpret_cast<const char*>(b + jump + 31), _MM_HINT_T0);
    __m512 bv[V];
    static_for<V>([&]<int v>() __attribute__((always_inline)) {
      bv[v] = v == V - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
    });
    static_for<R>([&]<int r>() __attribute__((always_inline)) {
      const __m512 x = _mm512_set1_ps(a[r]);
      static_for<V>([&]<int v>() __attribute__((always_inline)) {
        acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
      });
    });
  }
  const __m512 lo_v = _mm512_set1_ps(lo), hi_v = _mm512_set1_ps(hi);
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    const __m512 add = _mm512_set1_ps(bias != nullptr ? bias[r] : 0.f);
    static_for<V>([&]<int v>() __attribute__((always_inline)) {
      const __mmask16 mask = v == V - 1 ? last : __mmask16(0xFFFF);
      __m512 x = _mm512_add_ps(acc[r][v], add);
      if (residual != nullptr)
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, residual + r * ldc + 16 * v));
      x = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, x));
      _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mask, x);
    });
  });
}

using PointwiseTile = void (*)(int64_t, const float*, const float*, int64_t, float*, int64_t,
                               __mmask16, const float*, const float*, float, float, int64_t);
template <int... R>
constexpr std::array<std::array<PointwiseTile, 2>, sizeof...(R)> pointwise_tiles(
    std::integer_sequence<int, R...>) {
  return {{{&pointwise_tile<R + 1, 1>, &pointwise_tile<R + 1, 2>}...}};
}
constexpr auto kTiles = pointwise_tiles(std::make_integer_sequence<int, int(kPanelRows)>{});

// A tail of at most kTailPixels pixels (a 14x14 plane's last 4 of 196): the panel's rows as the
// vector and one accumulator per pixel, so each input channel costs a weight load, P broadcasts
// and P multiply-adds, where a 16-pixel tile spent 12 of each on a quarter-full vector.
// C[rows][P] as pointwise_tile computes it; the residual read (gathered) before the store.
constexpr int64_t kTailPixels = 6;
template <int P>
void pointwise_tail(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                    __mmask16 rows, const float* bias, const float* residual, float lo, float hi) {
  __m512 acc[P];
  static_for<P>([&]<int j>() __attribute__((always_inline)) { acc[j] = _mm512_setzero_ps(); });
  for (int64_t p = 0; p < k; ++p, a += kPanelRows, b += ldb) {
    const __m512 w = _mm512_maskz_loadu_ps(rows, a);
    static_for<P>([&]<int j>() __attribute__((always_inline)) {
      acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(b[j]), w, acc[j]);
    });
  }
  const __m512i at =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(int32_t(ldc)));
  const __m512 add = bias != nullptr ? _mm512_maskz_loadu_ps(rows, bias) : _mm512_setzero_ps();
  const __m512 lo_v = _mm512_set1_ps(lo), hi_v = _mm512_set1_ps(hi);
  static_for<P>([&]<int j>() __attribute__((always_inline)) {
    __m512 x = _mm512_add_ps(acc[j], add);
    if (residual != nullptr)
      x = _mm512_add_ps(x,
                        _mm512_mask_i32gather_ps(_mm512_setzero_ps(), rows, at, residual + j, 4));
    x = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, x));
    _mm512_mask_i32scatter_ps(c + j, rows, at, x, 4);
  });
}

using PointwiseTail = void (*)(int64_t, const float*, const float*, int64_t, float*, int64_t,
                               __mmask16, const float*, const float*, float, float);
template <int... P>
constexpr std::array<PointwiseTail, sizeof...(P)> pointwise_tails(
    std::integer_sequence<int, P...>) {
  return {&pointwise_tail<P + 1>...};
}
constexpr auto kTails = pointwise_tails(std::make_integer_sequence<int, int(kTailPixels)>{});

// Output channels [0, rows) x pixels [0, cols) of one tile (rows <= kPanelRows, cols <= kTile).
void run_tile(int64_t rows, int64_t cols, int64_t k, const float* a, const float* b, int64_t ldb,
              float* c, int64_t ldc, const float* bias, const float* residual, float lo, float hi,
              bool /*first_of_task: the AVX-512 tiles always prefetch*/ = false) {
  // NNX_POINTWISE_TAIL=0 runs tails on the 16-pixel tile instead, for measuring against it.
  static const bool tails = env_switch("NNX_POINTWISE_TAIL");
  // Its 32-bit gather and scatter offsets (row * ldc) need planes under 2^31 / 12 floats.
  if (cols <= kTailPixels && tails && ldc <= INT32_MAX / kPanelRows)
    return kTails[size_t(cols - 1)](k, a, b, ldb, c, ldc, lanes_below(rows), bias, residual, lo,
                                    hi);
  prefetch_output(c, rows, ldc, kTile);
  const int64_t vectors = cols > 16 ? 2 : 1;
  kTiles[size_t(rows - 1)][size_t(vectors - 1)](k, a, b, ldb, c, ldc,
                                                lanes_below(cols - 16 * (vectors - 1)), bias,
                                                residual, lo, hi, ahead_rows(k));
}
#else
// AVX2: 16 ymm registers hold a 6-channel x 16-pixel tile (12 accumulators, the two vectors of
// an input row and a broadcast weight), so a 12-row weight panel is taken in two halves, each
// reading the tile's pixels of every input channel again (from L1/L2).
constexpr int64_t kTile = 16;
constexpr int kHalf = 6;
// Planes of up to this many pixels are packed (pack_tiles) where the weights lead.
constexpr int64_t kPackPlane = 64;

// As the AVX-512 tile: C[R channels][16 pixels] = bias + sum over k of a[p * 12 + r] *
// b[p * ldb + pixel] (+ the residual), clamped to [lo, hi] (NaN kept); with Full false only the
// first `cols` pixels are loaded and stored. With Ahead, the weights are prefetched 64 input
// channels (3 KiB) ahead, as the AVX-512 tile always does: for the first tile of a deep panel,
// which reads them from memory (see run_tile).
template <int R, bool Full, bool Ahead = false>
void pointwise_tile(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                    int64_t cols, const float* bias, const float* residual, float lo, float hi) {
  __m256 acc[R][2];
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    acc[r][0] = _mm256_setzero_ps();
    acc[r][1] = _mm256_setzero_ps();
  });
  const __m256i m0 = lanes8(cols), m1 = lanes8(cols - 8);
  auto step = [&](const float* ahead) __attribute__((always_inline)) {
    _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(ahead + 15), _MM_HINT_T0);
    if constexpr (Ahead)
      _mm_prefetch(reinterpret_cast<const char*>(a + 64 * kPanelRows), _MM_HINT_T0);
    const __m256 b0 = Full ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0);
    const __m256 b1 = Full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1);
    static_for<R>([&]<int r>() __attribute__((always_inline)) {
      const __m256 x = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
    });
  };
  // Input row p + d, then (the last d rows) the next tile's row p + d - k: all within the input.
  // Packed tiles (ldb == kTile, see pack_tiles) follow one another: row p + d throughout.
  const int64_t d = std::min(kAhead, k);
  const int64_t jump = d * ldb;
  int64_t p = 0;
  for (const int64_t end = ldb == kTile ? k : k - d; p < end; ++p, a += kPanelRows, b += ldb)
    step(b + jump);
  for (const int64_t next = (d - k) * ldb + kTile; p < k; ++p, a += kPanelRows, b += ldb)
    step(b + next);
  const __m256 lo_v = _mm256_set1_ps(lo), hi_v = _mm256_set1_ps(hi);
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    store_row16<Full>(c + r * ldc, acc[r][0], acc[r][1],
                      _mm256_set1_ps(bias != nullptr ? bias[r] : 0.f),
                      residual != nullptr ? residual + r * ldc : nullptr, lo_v, hi_v, m0, m1);
  });
}

using PointwiseTile = void (*)(int64_t, const float*, const float*, int64_t, float*, int64_t,
                               int64_t, const float*, const float*, float, float);
template <bool Ahead, int... R>
constexpr std::array<std::array<PointwiseTile, 2>, sizeof...(R)> pointwise_tiles(
    std::integer_sequence<int, R...>) {
  return {{{&pointwise_tile<R + 1, false, Ahead>, &pointwise_tile<R + 1, true, Ahead>}...}};
}
constexpr auto kTiles = pointwise_tiles<false>(std::make_integer_sequence<int, kHalf>{});
constexpr auto kTilesAhead = pointwise_tiles<true>(std::make_integer_sequence<int, kHalf>{});

// A tail of at most 8 pixels: the whole 12-row panel against one vector (12 accumulators), half
// the multiplies of two 6x16 tiles (a 7x7 plane's last tile holds one pixel).
template <int R>
void pointwise_tile8(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                     int64_t cols, const float* bias, const float* residual, float lo, float hi) {
  __m256 acc[R];
  static_for<R>([&]<int r>() __attribute__((always_inline)) { acc[r] = _mm256_setzero_ps(); });
  const __m256i mask = lanes8(cols);
  auto step = [&](const float* ahead) __attribute__((always_inline)) {
    _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
    const __m256 x = _mm256_maskload_ps(b, mask);
    static_for<R>([&]<int r>() __attribute__((always_inline)) {
      acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + r), x, acc[r]);
    });
  };
  int64_t p = 0;
  for (const int64_t jump = kAhead * ldb; p < k - kAhead; ++p, a += kPanelRows, b += ldb)
    step(b + jump);
  // The last rows request only the row they read: this tile ends its plane's pixels, or only
  // the one-pixel tail follows it, in the lines it reads already.
  for (; p < k; ++p, a += kPanelRows, b += ldb) step(b);
  const __m256 lo_v = _mm256_set1_ps(lo), hi_v = _mm256_set1_ps(hi);
  static_for<R>([&]<int r>() __attribute__((always_inline)) {
    __m256 y = _mm256_add_ps(acc[r], _mm256_set1_ps(bias != nullptr ? bias[r] : 0.f));
    if (residual != nullptr) y = _mm256_add_ps(y, _mm256_maskload_ps(residual + r * ldc, mask));
    store_lanes8(c + r * ldc, _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, y)), cols);
  });
}

template <int... R>
constexpr std::array<PointwiseTile, sizeof...(R)> narrow_tiles(std::integer_sequence<int, R...>) {
  return {&pointwise_tile8<R + 1>...};
}
constexpr auto kNarrowTiles = narrow_tiles(std::make_integer_sequence<int, int(kPanelRows)>{});

// A tail of at most kTailPixels pixels (a 14x14 plane's last 4 of 196; inference runs planes of
// up to 100 pixels channels-last): the panel's 12 rows as the vector (8 lanes and 4) and a pair
// of accumulators per pixel, so each input channel costs 2P multiply-adds where the 8-pixel tile
// spent 12 on a vector with P of its 8 lanes used (1152 -> 324 channels, one core, the tail
// alone: 4 pixels 95-102 -> 58 us, 1 pixel 76-96 -> 25-28 us). With few pixels the input channels
// are dealt round S sets of accumulators (S = 4 for one pixel), else each pair would be one chain
// of dependent multiply-adds, waiting on the last one's latency. C[rows][P] as pointwise_tile
// computes it, the sets summed at the end; bias, residual and clamp applied as vectors, then stored
// a float at a time.
constexpr int64_t kTailPixels = 5;
template <int P>
void pointwise_tail(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                    int64_t rows, const float* bias, const float* residual, float lo, float hi) {
  constexpr int S = P == 1 ? 4 : P <= 3 ? 2 : 1;
  __m256 lo8[S][P];
  __m128 hi4[S][P];
  static_for<S>([&]<int u>() __attribute__((always_inline)) {
    static_for<P>([&]<int j>() __attribute__((always_inline)) {
      lo8[u][j] = _mm256_setzero_ps();
      hi4[u][j] = _mm_setzero_ps();
    });
  });
  auto step = [&]<int u>(const float* w, const float* x) __attribute__((always_inline)) {
    const __m256 w0 = _mm256_loadu_ps(w);
    const __m128 w1 = _mm_loadu_ps(w + 8);
    static_for<P>([&]<int j>() __attribute__((always_inline)) {
      const __m256 v = _mm256_broadcast_ss(x + j);
      lo8[u][j] = _mm256_fmadd_ps(v, w0, lo8[u][j]);
      hi4[u][j] = _mm_fmadd_ps(_mm256_castps256_ps128(v), w1, hi4[u][j]);
    });
  };
  int64_t p = 0;
  for (; p + S <= k; p += S, a += S * kPanelRows, b += S * ldb) {
    static_for<S>([&]<int u>() __attribute__((always_inline)) {
      step.template operator()<u>(a + u * kPanelRows, b + u * ldb);
    });
  }
  for (; p < k; ++p, a += kPanelRows, b += ldb) step.template operator()<0>(a, b);
  if constexpr (S == 4) {
    static_for<P>([&]<int j>() __attribute__((always_inline)) {
      lo8[0][j] =
          _mm256_add_ps(_mm256_add_ps(lo8[0][j], lo8[1][j]), _mm256_add_ps(lo8[2][j], lo8[3][j]));
      hi4[0][j] = _mm_add_ps(_mm_add_ps(hi4[0][j], hi4[1][j]), _mm_add_ps(hi4[2][j], hi4[3][j]));
    });
  } else if constexpr (S == 2) {
    static_for<P>([&]<int j>() __attribute__((always_inline)) {
      lo8[0][j] = _mm256_add_ps(lo8[0][j], lo8[1][j]);
      hi4[0][j] = _mm_add_ps(hi4[0][j], hi4[1][j]);
    });
  }
  const __m256i m0 = lanes8(rows), m1 = lanes8(rows - 8);
  const __m256 add0 = bias != nullptr ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
  const __m128 add1 =
      bias != nullptr ? _mm_maskload_ps(bias + 8, _mm256_castsi256_si128(m1)) : _mm_setzero_ps();
  const __m256 lo_v = _mm256_set1_ps(lo), hi_v = _mm256_set1_ps(hi);
  static_for<P>([&]<int j>() __attribute__((always_inline)) {
    alignas(32) float t[12] = {};
    __m256 x0 = _mm256_add_ps(lo8[0][j], add0);
    __m128 x1 = _mm_add_ps(hi4[0][j], add1);
    if (residual != nullptr) {
      for (int64_t r = 0; r < rows; ++r) t[r] = residual[r * ldc + j];
      x0 = _mm256_add_ps(x0, _mm256_load_ps(t));
      x1 = _mm_add_ps(x1, _mm_load_ps(t + 8));
    }
    _mm256_store_ps(t, _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, x0)));
    _mm_store_ps(t + 8, _mm_min_ps(_mm256_castps256_ps128(hi_v),
                                   _mm_max_ps(_mm256_castps256_ps128(lo_v), x1)));
    for (int64_t r = 0; r < rows; ++r) c[r * ldc + j] = t[r];
  });
}

using PointwiseTail = void (*)(int64_t, const float*, const float*, int64_t, float*, int64_t,
                               int64_t, const float*, const float*, float, float);
template <int... P>
constexpr std::array<PointwiseTail, sizeof...(P)> pointwise_tails(
    std::integer_sequence<int, P...>) {
  return {&pointwise_tail<P + 1>...};
}
constexpr auto kTails = pointwise_tails(std::make_integer_sequence<int, int(kTailPixels)>{});

void run_tile(int64_t rows, int64_t cols, int64_t k, const float* a, const float* b, int64_t ldb,
              float* c, int64_t ldc, const float* bias, const float* residual, float lo, float hi,
              bool first_of_task = false) {
  // NNX_POINTWISE_TAIL=0 runs tails on the 8-pixel tile instead, for measuring against it.
  static const bool tails = env_switch("NNX_POINTWISE_TAIL");
  if (cols <= kTailPixels && tails)
    return kTails[size_t(cols - 1)](k, a, b, ldb, c, ldc, rows, bias, residual, lo, hi);
  if (cols <= 8)
    return kNarrowTiles[size_t(rows - 1)](k, a, b, ldb, c, ldc, cols, bias, residual, lo, hi);
  // 9 pixels (the last of a 13x13 or 27x27 plane: SqueezeNet's) as the 8-pixel tile and the
  // one-pixel tail, 14 multiply-adds an input channel where the 16-pixel tile's halves spent 24:
  // 512 -> 1000 channels over 9 pixels, one core, 172-192 -> 142-146 us. (10-13 pixels as 8 and
  // a tail of 2-5 gained nothing.)
  if (cols == 9 && tails) {
    kNarrowTiles[size_t(rows - 1)](k, a, b, ldb, c, ldc, 8, bias, residual, lo, hi);
    return kTails[0](k, a, b + 8, ldb, c + 8, ldc, rows, bias,
                     residual != nullptr ? residual + 8 : nullptr, lo, hi);
  }
  prefetch_output(c, rows, ldc, kTile);
  // A task's first tile on a deep panel reads the weights from memory (a weights-major layer's
  // panel, read once; ResNet-50's 7x7 and 14x14 layers stream 1-4 MB of them): its first half
  // prefetches them (kTilesAhead). Ops bench, 2 threads, 4 alternating rounds, medians: 512 ->
  // 2048 and 2048 -> 512 at 7x7 0.93-0.96, 1152 -> 320 0.94; prefetching in every tile made
  // the shallow layers (16 -> 96 at 112x112, 64 -> 256 at 56x56) 7-11% slower.
  const bool ahead = first_of_task && k >= 256;
  for (int64_t r0 = 0; r0 < rows; r0 += kHalf) {
    const int64_t half = std::min<int64_t>(kHalf, rows - r0);
    (ahead && r0 == 0 ? kTilesAhead : kTiles)[size_t(half - 1)][cols == kTile ? 1 : 0](
        k, a + r0, b, ldb, c + r0 * ldc, ldc, cols, bias != nullptr ? bias + r0 : nullptr,
        residual != nullptr ? residual + r0 * ldc : nullptr, lo, hi);
  }
}
#endif

// An image's input as its pixel tiles one after another, each [k][kTile] (the last one's lanes
// past the plane zero), for the tiles to read with ldb = kTile: a small plane's rows (7x7: 196
// bytes) put most of a tile's 16-pixel reads across two cache lines, where packed they are one
// line each, in one stream. Zen 3, two threads, minimum of 300 calls, median of 4 alternating
// rounds' ratios: 7x7 planes 512 -> 2048 0.84, 2048 -> 512 0.80 (in place now; it was on the
// channels-last GEMM), 320 -> 1280 and 1152 -> 320 0.91, 960 -> 160 0.97; but 13x13 512 -> 1000
// 0.99 and 14x14 1024 -> 256 1.07, hence kPackPlane. Whole networks, per node: ResNet-50's 7x7
// 1x1 layers 0.84-0.94, EfficientNet-B0's 0.78-0.87, MobileNetV2's last 0.93 (NNX_POINTWISE_PACK=0
// against not, 8-10 rounds of python/ab_profile.py). AVX2 only: the AVX-512 tiles are unmeasured
// with it.
// Whether the layer's weight rows (whole panels) outnumber its pixels: the threads then take
// runs of weight panels over all pixels (pointwise_batch), and AVX2 builds may pack.
bool weights_lead(const Conv2dShape& s) {
  return ceil_div(s.out_channels, kPanelRows) * kPanelRows > s.out_h * s.out_w;
}

#if !defined(__AVX512F__)
bool pack_suitable(int64_t plane, bool weights_major) {
  static const bool enabled = env_switch("NNX_POINTWISE_PACK");
  return enabled && weights_major && plane <= kPackPlane;
}

void pack_tiles(const float* image, int64_t k, int64_t plane, float* packed) {
  for (int64_t p0 = 0; p0 < plane; p0 += kTile) {
    const int64_t cols = std::min(kTile, plane - p0);
    const __m256i m0 = lanes8(cols), m1 = lanes8(cols - 8);
    const float* src = image + p0;
    for (int64_t c = 0; c < k; ++c, packed += kTile, src += plane) {
      _mm256_store_ps(packed, _mm256_maskload_ps(src, m0));
      _mm256_store_ps(packed + 8, _mm256_maskload_ps(src + 8, m1));
    }
  }
}
#else
bool pack_suitable(int64_t, bool) {
  return false;
}
void pack_tiles(const float*, int64_t, int64_t, float*) {}
#endif

// NNX_CONV_POINTWISE=0 in the environment turns this path off, for measuring against it.
bool pointwise_enabled() {
  static const bool enabled = env_switch("NNX_CONV_POINTWISE");
  return enabled;
}

}  // namespace

bool pointwise_suitable(const Conv2dShape& s) {
  return pointwise_enabled() && s.groups == 1 && s.kernel_h == 1 && s.kernel_w == 1 &&
         s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 && s.pad_left == 0 &&
         s.out_h == s.in_h && s.out_w == s.in_w;
}

bool pointwise_packs(const Conv2dShape& s) {
  return pack_suitable(s.out_h * s.out_w, weights_lead(s));
}

namespace {

// conv2d_pointwise's body; with `strided`, each thread samples an image of `input` (a strided
// layer's input) into its own buffer when its run of tasks reaches that image.
void pointwise_batch(const Conv2dShape& s, const Conv2dShape* strided, const float* input,
                     const float* panels, const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue) {
  const int64_t k = s.in_channels, plane = s.out_h * s.out_w;
  const int64_t weight_panels = ceil_div(s.out_channels, kPanelRows);
  const int64_t pixel_tiles = ceil_div(plane, kTile);
  // Groups of pixel tiles whose inputs (k x 32 floats each) stay in L2 while every weight panel
  // passes over them, the tiles dealt out evenly: groups of a fixed size left the last one short
  // (ResNet-50's 512 -> 128 at 28x28: 24 + 1 tiles, one of two threads with 96% of the work).
  const int64_t most = std::clamp<int64_t>((384 * 1024 / 4) / (k * kTile), 1, pixel_tiles);
  const int64_t groups = ceil_div(pixel_tiles, most);
  // Where the weights outweigh the input, each thread takes a run of weight panels over all
  // pixels (reading its weights once); else a run of (pixel group, weight panel) pairs.
  const bool weights_major = weights_lead(s);
  const ClampEpilogue fused = activation_clamp_of(epilogue);
  const bool in_store = epilogue.residual != nullptr && fused.exact;
  const ClampEpilogue clamp = in_store ? fused : clamp_of(epilogue);
  // Task t: image t / per_image, then (panel q, pixel group g) in the order chosen above. The
  // batch is one job: each thread takes its run of tasks across the images without waiting for
  // the other at each image (ResNet-50 at batch 8, per node, each round's ratio: the 14x14
  // layers 5-14% faster, the 28x28 ones 3-8%).
  const int64_t per_image = groups * weight_panels, tasks = s.batch * per_image;
  auto decompose = [&](int64_t t, int64_t& n, int64_t& q, int64_t& g) {
    n = t / per_image;
    const int64_t u = t % per_image;
    q = weights_major ? u / groups : u % weight_panels;
    g = weights_major ? u % groups : u / weight_panels;
  };
  // Each thread a contiguous run of tasks of about equal work (rows x pixels): equal counts gave
  // the thread without the short last panel (256 = 21 x 12 + 4) 6% more.
  auto work = [&](int64_t q, int64_t g) {
    const int64_t rows = std::min(kPanelRows, s.out_channels - q * kPanelRows);
    const int64_t p0 = g * pixel_tiles / groups * kTile;
    const int64_t p1 = std::min(plane, (g + 1) * pixel_tiles / groups * kTile);
    return rows * (p1 - p0);
  };
  // Weights-major threads each read the whole image: each packs it for itself, no barrier.
  const bool pack = pack_suitable(plane, weights_major);
  const int64_t total = s.batch * s.out_channels * plane;
  const int64_t threads = pool != nullptr ? pool->size() : 1;
  parallel_for(pool, threads, 1, [&](int64_t h0, int64_t h1) {
    const int64_t lo = h0 * total / threads, hi = h1 * total / threads;
    int64_t done = 0;      // the work of the tasks before t
    int64_t sampled = -1;  // the image in this thread's sample buffer
    int64_t packed = -1;   // the image in this thread's pack buffer
    static thread_local AlignedBuffer sample_buffer, pack_buffer;
    for (int64_t t = 0; t < tasks; ++t) {
      int64_t n, q, g;
      decompose(t, n, q, g);
      const int64_t w = work(q, g), mid = done + w / 2;
      done += w;
      if (mid < lo) continue;  // another thread's
      if (mid >= hi) break;
      const int64_t rows = std::min(kPanelRows, s.out_channels - q * kPanelRows);
      const float* a = panels + q * kPanelRows * k;
      const float* image = input + n * s.in_channels * plane;
      if (strided != nullptr) {
        float* own = sample_buffer.get(s.in_channels * plane);
        if (sampled != n) {
          const int64_t in_image = strided->in_channels * strided->in_h * strided->in_w;
          sample_image(*strided, input + n * in_image, own);
          sampled = n;
        }
        image = own;
      }
      if (pack) {
        float* own = pack_buffer.get(pixel_tiles * k * kTile);
        if (packed != n) {
          pack_tiles(image, k, plane, own);
          packed = n;
        }
        image = own;
      }
      float* out = output + n * s.out_channels * plane + q * kPanelRows * plane;
      const int64_t j0 = g * pixel_tiles / groups, j1 = (g + 1) * pixel_tiles / groups;
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t p0 = j * kTile, cols = std::min(kTile, plane - p0);
        float* c = out + p0;
        run_tile(rows, cols, k, a, pack ? image + j * k * kTile : image + p0, pack ? kTile : plane,
                 c, plane, bias != nullptr ? bias + q * kPanelRows : nullptr,
                 in_store ? epilogue.residual + (c - epilogue.output) : nullptr, clamp.lo, clamp.hi,
                 j == j0);
      }
      // Other activations once the group's tiles are stored (in L1/L2): just after a tile's
      // masked stores, every load of them waited for the stores to reach the cache.
      if (!clamp.exact) {
        const int64_t p0 = j0 * kTile, p1 = std::min(plane, j1 * kTile);
        for (int64_t r = 0; r < rows; ++r) apply_epilogue(epilogue, out + r * plane + p0, p1 - p0);
      }
    }
  });
}

}  // namespace

void conv2d_pointwise(const Conv2dShape& s, const float* input, const float* panels,
                      const float* bias, float* output, ThreadPool* pool,
                      const Epilogue& epilogue) {
  pointwise_batch(s, nullptr, input, panels, bias, output, pool, epilogue);
}

void conv2d_pointwise_sampled(const Conv2dShape& strided, const Conv2dShape& s, const float* input,
                              const float* panels, const float* bias, float* output,
                              ThreadPool* pool, const Epilogue& epilogue) {
  pointwise_batch(s, &strided, input, panels, bias, output, pool, epilogue);
}
#endif

}  // namespace nnx::cpu
