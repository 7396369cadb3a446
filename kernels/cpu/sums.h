// Float sums with several independent accumulators, so that they vectorise (a single running
// sum is one long dependency chain that the compiler may not reorder).
#pragma once

#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace nnx::cpu {

#if defined(__AVX2__) && defined(__FMA__)
inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

// sum(x[i]) over n floats.
inline float sum_floats(const float* x, int64_t n) {
  int64_t i = 0;
  float total = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
  }
  total = horizontal_sum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) total += x[i];
  return total;
}

// sum(g[i]) and sum(g[i] * (x[i] - center)) over n floats.
inline void sum_and_centered_dot(const float* g, const float* x, float center, int64_t n,
                                 float& sum, float& dot) {
  int64_t i = 0;
  float s = 0.f, d = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 c = _mm256_set1_ps(center);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m256 g0 = _mm256_loadu_ps(g + i), g1 = _mm256_loadu_ps(g + i + 8);
    s0 = _mm256_add_ps(s0, g0);
    s1 = _mm256_add_ps(s1, g1);
    d0 = _mm256_fmadd_ps(g0, _mm256_sub_ps(_mm256_loadu_ps(x + i), c), d0);
    d1 = _mm256_fmadd_ps(g1, _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), c), d1);
  }
  s = horizontal_sum(_mm256_add_ps(s0, s1));
  d = horizontal_sum(_mm256_add_ps(d0, d1));
#endif
  for (; i < n; ++i) {
    s += g[i];
    d += g[i] * (x[i] - center);
  }
  sum = s;
  dot = d;
}

// sum((x[i] - center)^2) over n floats.
inline float centered_square_sum(const float* x, float center, int64_t n) {
  int64_t i = 0;
  float total = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 c = _mm256_set1_ps(center);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), c);
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), c);
    a0 = _mm256_fmadd_ps(d0, d0, a0);
    a1 = _mm256_fmadd_ps(d1, d1, a1);
  }
  total = horizontal_sum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) total += (x[i] - center) * (x[i] - center);
  return total;
}

// sum(a[i] * b[i]) over n floats.
inline float dot_floats(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float total = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  total = horizontal_sum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

}  // namespace nnx::cpu
