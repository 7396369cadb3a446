// What the vector kernel files share: <immintrin.h> (AVX-512 and AVX2 builds), the silencing of a
// GCC 12 false positive, a compile-time loop for register-blocked kernels, the share-out of a
// prefetch over tiles, a prefetch for writing, lane masks, and the AVX2 even/odd split of 16
// floats.
#pragma once

// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics header for the
// undefined pass-through operand of masked builtins (_mm512_max_ps, _mm512_min_ps,
// _mm512_alignr_epi32; GCC bug 105593, fixed in GCC 13): a false positive in a system header,
// silenced for the files that include this one.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <algorithm>
#include <cstdint>
#include <utility>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace nnx::cpu {

// f.template operator()<I>() for I = 0 .. N-1, unrolled at compile time.
template <int N, typename F>
inline __attribute__((always_inline)) void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f.template operator()<I>(), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

#if defined(__AVX512F__) || defined(__AVX2__)
// Requests the cache line at p in a writable state: PREFETCHW where the build's target has it
// (-march=native on AMD since K8 and Intel since Broadwell; as inline assembly because GCC
// dropped _mm_prefetch(p, _MM_HINT_ET0) where it was first tried), else a plain prefetch (the
// x86-64-v3 build: Haswell lacks PREFETCHW).
inline __attribute__((always_inline)) void prefetch_for_write(const void* p) {
#if defined(__PRFCHW__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
#endif
}
#endif

// The cache lines of the next weight block that tile `index` of `tiles` requests while the
// block in use goes past the tiles: none for the first tile (it reads the block in use from
// memory where the weights are not cached), an even share of `lines` lines from `next` for each
// of the others. A tile requests its share one line per step of its depth loop.
struct PrefetchShare {
  const char* from;
  int64_t lines;
};
inline PrefetchShare prefetch_share(const void* next, int64_t lines, int64_t tiles, int64_t index) {
  const int64_t share = tiles > 1 ? (lines + tiles - 2) / (tiles - 1) : 0;
  const int64_t first = std::min(lines, index > 0 ? (index - 1) * share : lines);
  return {static_cast<const char*>(next) + 64 * first, std::min(share, lines - first)};
}

#if defined(__AVX512F__)
// Lanes [0, n) of a vector (all for n >= 16, none for n <= 0).
inline __mmask16 lanes_below(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// Lanes i < 16 with lo <= start + i < hi.
inline __mmask16 range_mask(int64_t start, int64_t lo, int64_t hi) {
  const int64_t first = std::clamp<int64_t>(lo - start, 0, 16);
  const int64_t end = std::clamp<int64_t>(hi - start, 0, 16);
  if (end <= first) return 0;
  return __mmask16(((1u << end) - 1) & ~((1u << first) - 1));
}

// rows[j][i] becomes rows[i][j] (a 16x16 block): pairs of rows interleaved as floats, then as
// float pairs, then 128-bit lanes gathered across four and then eight registers.
inline void transpose16(__m512 rows[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(rows[i], rows[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(rows[i], rows[i + 1]);
  }
  // u[4q + c], lane L: column 4L + c of rows 4q..4q+3.
  for (int q = 0; q < 4; ++q) {
    const __m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * q + 2]), d = _mm512_castps_pd(t[4 * q + 3]);
    u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 v = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const __m512 w = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 w2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    rows[c] = _mm512_shuffle_f32x4(v, v2, 0x88);
    rows[8 + c] = _mm512_shuffle_f32x4(v, v2, 0xdd);
    rows[4 + c] = _mm512_shuffle_f32x4(w, w2, 0x88);
    rows[12 + c] = _mm512_shuffle_f32x4(w, w2, 0xdd);
  }
}
#endif

#if defined(__AVX2__)
// Lanes [0, n) of 8 as a maskload/maskstore mask (none for n <= 0, all for n >= 8).
inline __m256i lanes8(int64_t n) {
  alignas(32) static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};
  return _mm256_loadu_si256(
      reinterpret_cast<const __m256i*>(table + 8 - std::clamp<int64_t>(n, 0, 8)));
}

// Lanes i < 8 with lo <= start + i < hi, as a maskload/maskstore mask.
inline __m256i range_mask8(int64_t start, int64_t lo, int64_t hi) {
  const int32_t first = int32_t(std::clamp<int64_t>(lo - start, 0, 8));
  const int32_t end = int32_t(std::clamp<int64_t>(hi - start, 0, 8));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(first), lane),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(end), lane));
}

// Stores lanes [0, n) of v at p (none for n <= 0; store_lanes4 the same for 4 lanes): a plain
// store where all are; a tail as a 4-, a 2- and a 1-float store as n's bits ask. On AMD Zen 2/3 a
// masked store (VMASKMOVPS) costs many plain ones (a copy of 100k floats in masked stores 83 us, in
// plain ones 18; 4096 tails on a Zen 3, minimum of 200 calls: 17 us masked, 5-6 us as these parts;
// masked loads cost nothing extra): the Winograd input transform's 4-tile runs on 13x13 planes had
// spent two thirds of their time in them. AVX2 kernels store their tails through this.
inline void store_lanes4(float* p, __m128 v, int64_t n) {
  if (n >= 4) return _mm_storeu_ps(p, v);
  if (n <= 0) return;
  if (n & 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), v);
    p += 2;
    v = _mm_movehl_ps(v, v);
  }
  if (n & 1) _mm_store_ss(p, v);
}
inline void store_lanes8(float* p, __m256 v, int64_t n) {
  if (n >= 8) return _mm256_storeu_ps(p, v);
  if (n <= 0) return;
  if (n < 4) return store_lanes4(p, _mm256_castps256_ps128(v), n);
  _mm_storeu_ps(p, _mm256_castps256_ps128(v));
  store_lanes4(p + 4, _mm256_extractf128_ps(v, 1), n - 4);
}

// How many lanes of a lanes8 mask are set.
inline int64_t lanes_of(__m256i mask) {
  return __builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(mask))));
}

// The even (odd) elements of the 16 floats a, b in order: split within the 128-bit halves, then
// the halves' 64-bit pairs put in order.
inline __m256 even_of(__m256 a, __m256 b) {
  return _mm256_castpd_ps(
      _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
}
inline __m256 odd_of(__m256 a, __m256 b) {
  return _mm256_castpd_ps(
      _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

// One 16-float row of an AVX2 tile's epilogue: (x0, x1) plus `add`, plus the residual's row
// where given, clamped to [lo, hi] (NaN kept, as torch.clamp) and stored: all 16 floats when
// Full, else the lanes of the lanes8 masks m0, m1 (loads of the residual masked alike).
template <bool Full>
inline void store_row16(float* out, __m256 x0, __m256 x1, __m256 add, const float* residual,
                        __m256 lo, __m256 hi, __m256i m0, __m256i m1) {
  x0 = _mm256_add_ps(x0, add);
  x1 = _mm256_add_ps(x1, add);
  if (residual != nullptr) {
    x0 = _mm256_add_ps(x0, Full ? _mm256_loadu_ps(residual) : _mm256_maskload_ps(residual, m0));
    x1 = _mm256_add_ps(x1,
                       Full ? _mm256_loadu_ps(residual + 8) : _mm256_maskload_ps(residual + 8, m1));
  }
  x0 = _mm256_min_ps(hi, _mm256_max_ps(lo, x0));
  x1 = _mm256_min_ps(hi, _mm256_max_ps(lo, x1));
  if (Full) {
    _mm256_storeu_ps(out, x0);
    _mm256_storeu_ps(out + 8, x1);
  } else {  // m0 is all lanes where the tile has more than 8 columns
    store_lanes8(out, x0, lanes_of(m0));
    store_lanes8(out + 8, x1, lanes_of(m1));
  }
}

// rows[j][i] becomes rows[i][j] (an 8x8 block): pairs of rows interleaved as floats, then as
// float pairs, then the 128-bit halves exchanged.
inline void transpose8(__m256 rows[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(rows[i], rows[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(rows[i], rows[i + 1]);
  }
  for (int q = 0; q < 2; ++q) {
    u[4 * q] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
    u[4 * q + 1] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], 0xEE);
    u[4 * q + 2] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
    u[4 * q + 3] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    rows[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    rows[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// The build's widest float vector (16 lanes on AVX-512, 8 on AVX2) and the operations that the
// kernels written once for both widths use on it: the one map from those operations to each
// ISA's intrinsics.
namespace vec {
#if defined(__AVX512F__)
using V = __m512;
inline constexpr int kWidth = 16;
inline V zero() {
  return _mm512_setzero_ps();
}
inline V splat(float x) {
  return _mm512_set1_ps(x);
}
inline V load(const float* p) {  // 64-byte aligned
  return _mm512_load_ps(p);
}
inline V loadu(const float* p) {
  return _mm512_loadu_ps(p);
}
inline void store(float* p, V v) {  // 64-byte aligned
  _mm512_store_ps(p, v);
}
inline V add(V a, V b) {
  return _mm512_add_ps(a, b);
}
inline V sub(V a, V b) {
  return _mm512_sub_ps(a, b);
}
inline V mul(V a, V b) {
  return _mm512_mul_ps(a, b);
}
inline V fmadd(V a, V b, V c) {
  return _mm512_fmadd_ps(a, b, c);
}
inline V fnmadd(V a, V b, V c) {
  return _mm512_fnmadd_ps(a, b, c);
}
inline V min(V a, V b) {
  return _mm512_min_ps(a, b);
}
inline V max(V a, V b) {
  return _mm512_max_ps(a, b);
}
inline void storeu(float* p, V v) {
  _mm512_storeu_ps(p, v);
}
// Lane i: p[i] where lo <= start + i < hi, else zero; the others are not read.
inline V load_range(const float* p, int64_t start, int64_t lo, int64_t hi) {
  return _mm512_maskz_loadu_ps(range_mask(start, lo, hi), p);
}
// The even and the odd lanes of a then b (a0 a2 ... b14, a1 a3 ... b15).
inline void deinterleave(V a, V b, V& even, V& odd) {
  const __m512i e = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i o = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  even = _mm512_permutex2var_ps(a, e, b);
  odd = _mm512_permutex2var_ps(a, o, b);
}
#else
using V = __m256;
inline constexpr int kWidth = 8;
inline V zero() {
  return _mm256_setzero_ps();
}
inline V splat(float x) {
  return _mm256_set1_ps(x);
}
inline V load(const float* p) {  // 32-byte aligned
  return _mm256_load_ps(p);
}
inline V loadu(const float* p) {
  return _mm256_loadu_ps(p);
}
inline void store(float* p, V v) {  // 32-byte aligned
  _mm256_store_ps(p, v);
}
inline V add(V a, V b) {
  return _mm256_add_ps(a, b);
}
inline V sub(V a, V b) {
  return _mm256_sub_ps(a, b);
}
inline V mul(V a, V b) {
  return _mm256_mul_ps(a, b);
}
inline V fmadd(V a, V b, V c) {
  return _mm256_fmadd_ps(a, b, c);
}
inline V fnmadd(V a, V b, V c) {
  return _mm256_fnmadd_ps(a, b, c);
}
inline V min(V a, V b) {
  return _mm256_min_ps(a, b);
}
inline V max(V a, V b) {
  return _mm256_max_ps(a, b);
}
inline void storeu(float* p, V v) {
  _mm256_storeu_ps(p, v);
}
// Lane i: p[i] where lo <= start + i < hi, else zero; the others are not read.
inline V load_range(const float* p, int64_t start, int64_t lo, int64_t hi) {
  return _mm256_maskload_ps(p, range_mask8(start, lo, hi));
}
// The even and the odd lanes of a then b (a0 a2 ... b6, a1 a3 ... b7).
inline void deinterleave(V a, V b, V& even, V& odd) {
  even = even_of(a, b);
  odd = odd_of(a, b);
}
#endif
}  // namespace vec
#endif

// dst[0, 32) (64-byte aligned) = src[0, cols), then zeros (cols <= 32): one row of a 32-wide
// GEMM panel, in two masked vector moves where AVX-512 has them (no call per row).
inline void panel_row32(const float* src, int64_t cols, float* dst) {
#if defined(__AVX512F__)
  _mm512_store_ps(dst, _mm512_maskz_loadu_ps(lanes_below(cols), src));
  _mm512_store_ps(dst + 16, _mm512_maskz_loadu_ps(lanes_below(cols - 16), src + 16));
#else
  std::copy(src, src + cols, dst);
  std::fill(dst + cols, dst + 32, 0.f);
#endif
}

}  // namespace nnx::cpu
