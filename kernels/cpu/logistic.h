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

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
namespace logistic_detail {

using vec::V;

inline V round_to_nearest(V x) {
#if defined(__AVX512F__)
  return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#endif
}

// e * 2^n for whole n in [-150, 0], rounded once (subnormal results included). AVX2 has no
// scalef: 2^n as 2^(n - n/2) 2^(n/2), each factor a normal float built in the exponent field;
// where every lane has n >= -126 (arguments above -87.3, nearly all), 2^n is one normal float and
// one multiply gives the same single rounding (SiLU over 100k floats 0.80-0.88 of the time).
inline V times_power_of_two(V e, V n) {
#if defined(__AVX512F__)
  return _mm512_scalef_ps(e, n);
#else
  auto power = [](V k) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23));
  };
  if (_mm256_movemask_ps(_mm256_cmp_ps(n, vec::splat(-126.0f), _CMP_LT_OQ)) == 0)
    return vec::mul(e, power(n));
  const V half = _mm256_floor_ps(vec::mul(n, vec::splat(0.5f)));
  return vec::mul(vec::mul(e, power(vec::sub(n, half))), power(half));
#endif
}

// e^t for t <= 0 (NaN kept; below -104 the result is 0, as expf rounds it).
inline V exp_nonpositive(V t) {
  // max(-104, t) keeps a NaN t (the second operand is returned when either is NaN).
  t = vec::max(vec::splat(-104.0f), t);
  const V n = round_to_nearest(vec::mul(t, vec::splat(1.44269504088896341f)));
  // ln 2 split so that n * 0.693359375 is exact for |n| < 2^9.
  V r = vec::fnmadd(n, vec::splat(0.693359375f), t);
  r = vec::fnmadd(n, vec::splat(-2.12194440e-4f), r);
  // e^r = 1 + r + r^2 (1/2 + r/6 + r^2/24 + ...): coefficients of the minimax fit of
  // (e^r - 1 - r) / r^2 on [-ln 2 / 2, ln 2 / 2].
  V p = vec::splat(1.9875691500e-4f);
  for (float c :
       {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    p = vec::fmadd(p, r, vec::splat(c));
  const V e = vec::add(vec::fmadd(p, vec::mul(r, r), r), vec::splat(1.0f));
  return times_power_of_two(e, n);
}

// x >= 0: 1 / (1 + e^-x); otherwise (NaN included) e^x / (1 + e^x).
inline V sigmoid(V x) {
#if defined(__AVX512F__)
  const V magnitude = _mm512_abs_ps(x);
#else
  const V magnitude = _mm256_andnot_ps(vec::splat(-0.0f), x);
#endif
  const V e = exp_nonpositive(vec::sub(vec::zero(), magnitude));
  const V one = vec::splat(1.0f);
#if defined(__AVX512F__)
  const V numerator = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, vec::zero(), _CMP_GE_OQ), one);
  return _mm512_div_ps(numerator, vec::add(one, e));
#else
  const V numerator = _mm256_blendv_ps(e, one, _mm256_cmp_ps(x, vec::zero(), _CMP_GE_OQ));
  return _mm256_div_ps(numerator, vec::add(one, e));
#endif
}

#if !defined(__AVX512F__)
// y[i] = f(x[i]) for i < n, f on 8 floats: two whole vectors a step (two independent chains of
// the long exp-and-divide sequence: 0.84 of the time of one masked vector a step on a Zen 3),
// then the tail masked.
template <typename F>
inline void map8(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    _mm256_storeu_ps(y + i, f(a));
    _mm256_storeu_ps(y + i + 8, f(b));
  }
  for (; i < n; i += 8) store_lanes8(y + i, f(_mm256_maskload_ps(x + i, lanes8(n - i))), n - i);
}
#endif

}  // namespace logistic_detail
#endif

// y[i] = sigmoid(x[i]) for i < n (y may be x).
inline void sigmoid_array(const float* x, float* y, int64_t n) {
#if defined(__AVX512F__)
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lanes_below(n - i);
    _mm512_mask_storeu_ps(y + i, m, logistic_detail::sigmoid(_mm512_maskz_loadu_ps(m, x + i)));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  logistic_detail::map8(x, y, n, [](__m256 v) { return logistic_detail::sigmoid(v); });
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
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, logistic_detail::sigmoid(v)));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  logistic_detail::map8(x, y, n,
                        [](__m256 v) { return _mm256_mul_ps(v, logistic_detail::sigmoid(v)); });
#else
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid_scalar(x[i]);
#endif
}

}  // namespace nnx::cpu
