// Sigmoid and SiLU over arrays, one formula for every caller (the Sigmoid and SiLU ops, and the
// SiLU a kernel applies to its output blocks), so that a fused result equals the unfused one.
// The exponential only ever sees a non-positive argument (sigmoid(x) = 1 / (1 + e^-x) for x >= 0,
// e^x / (1 + e^x) below), so it cannot overflow. On AVX-512 builds 16 values at a time, the tail
// masked (the same instructions, so the same result, for every element): e^t = 2^n e^r with n =
// round(t / ln 2), r = t - n ln 2 in two parts, e^r = 1 + r + r^2 p(r) with p the usual degree-5
// minimax fit on |r| <= ln 2 / 2. Against a double-precision reference, over every 101st float
// in (-80, 100): sigmoid within 2 ulp and SiLU within 3, as with std::exp. AVX2 + FMA builds the
// same 8 at a time (2^n as two normal factors: no scalef); others std::exp. NaN stays NaN;
// SiLU(-inf) is NaN, as in PyTorch.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cpu/avx512.h"

namespace nnx::cpu {

inline float sigmoid_scalar(float x) {
  if (x >= 0) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}

#if defined(__AVX512F__)
namespace logistic_detail {

// e^t for t <= 0 (NaN kept; below -104 the result is 0, as expf rounds it).
inline __m512 exp_nonpositive(__m512 t) {
  // max(-104, t) keeps a NaN t (the second operand is returned when either is NaN).
  t = _mm512_max_ps(_mm512_set1_ps(-104.0f), t);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln 2 split so that n * kLn2High is exact for |n| < 2^9.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  // e^r = 1 + r + r^2 (1/2 + r/6 + r^2/24 + ...): coefficients of the minimax fit of
  // (e^r - 1 - r) / r^2 on [-ln 2 / 2, ln 2 / 2].
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(e, n);  // e * 2^n, rounded once (subnormal results included)
}

inline __m512 sigmoid16(__m512 x) {
  const __m512 magnitude = _mm512_abs_ps(x);
  const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), magnitude));
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 denominator = _mm512_add_ps(one, e);
  const __mmask16 nonnegative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  // x >= 0: 1 / (1 + e^-x); otherwise (NaN included) e^x / (1 + e^x).
  return _mm512_div_ps(_mm512_mask_mov_ps(e, nonnegative, one), denominator);
}

}  // namespace logistic_detail
#elif defined(__AVX2__) && defined(__FMA__)
namespace logistic_detail {

// 2^k for whole k in [-126, 127], built in the exponent field.
inline __m256 power_of_two(__m256 k) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23));
}

// As the AVX-512 form, 8 at a time; without scalef, 2^n is applied as 2^(n - n/2) 2^(n/2), each
// factor a normal float, so a subnormal result is rounded once, as scalef rounds it.
inline __m256 exp_nonpositive(__m256 t) {
  t = _mm256_max_ps(_mm256_set1_ps(-104.0f), t);  // a NaN t is kept (the second operand)
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256 half = _mm256_floor_ps(_mm256_mul_ps(n, _mm256_set1_ps(0.5f)));
  return _mm256_mul_ps(_mm256_mul_ps(e, power_of_two(_mm256_sub_ps(n, half))), power_of_two(half));
}

inline __m256 sigmoid8(__m256 x) {
  const __m256 magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_setzero_ps(), magnitude));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 nonnegative = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  // x >= 0: 1 / (1 + e^-x); otherwise (NaN included) e^x / (1 + e^x).
  return _mm256_div_ps(_mm256_blendv_ps(e, one, nonnegative), _mm256_add_ps(one, e));
}

}  // namespace logistic_detail
#endif

// y[i] = sigmoid(x[i]) for i < n (y may be x).
inline void sigmoid_array(const float* x, float* y, int64_t n) {
#if defined(__AVX512F__)
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lanes_below(n - i);
    _mm512_mask_storeu_ps(y + i, m, logistic_detail::sigmoid16(_mm512_maskz_loadu_ps(m, x + i)));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = lanes8(n - i);
    _mm256_maskstore_ps(y + i, m, logistic_detail::sigmoid8(_mm256_maskload_ps(x + i, m)));
  }
#else
  for (int64_t i = 0; i < n; ++i) y[i] = sigmoid_scalar(x[i]);
#endif
}

// y[i] = x[i] * sigmoid(x[i]) for i < n (y may be x).
inline void silu_array(const float* x, float* y, int64_t n) {
#if defined(__AVX512F__)
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lanes_below(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, logistic_detail::sigmoid16(v)));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = lanes8(n - i);
    const __m256 v = _mm256_maskload_ps(x + i, m);
    _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(v, logistic_detail::sigmoid8(v)));
  }
#else
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid_scalar(x[i]);
#endif
}

}  // namespace nnx::cpu
