// An activation applied by a kernel to each block of its output while the block is still in
// cache (graph/fusion.h fuses Conv2d+ReLU and Add+ReLU this way). The formulas are those of
// kernels/cpu/activation.cpp, so a fused result equals the unfused one.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/activation_kind.h"
#include "kernels/cpu/logistic.h"

namespace nnx::cpu {

struct Epilogue {
  bool active = false;  // false: no activation
  Activation kind = Activation::relu;
  ActivationArgs args;
  // A residual added before the activation (a fused Conv2d + Add): the element at the same
  // offset from `residual` as the output element's from `output` (same shape, contiguous).
  const float* residual = nullptr;
  const float* output = nullptr;

  // Whether apply_epilogue changes anything.
  bool needed() const { return active || residual != nullptr; }
};

// The activations an epilogue applies: the cheap ones, without transcendental calls but SiLU's.
inline bool epilogue_supports(Activation kind) {
  return kind == Activation::relu || kind == Activation::leaky_relu ||
         kind == Activation::hardtanh || kind == Activation::silu || kind == Activation::hardswish;
}

namespace epilogue_detail {
// A comparison false for NaN leaves NaN in place, as torch.clamp does.
inline float clamp_nan(float x, float lo, float hi) {
  if (x < lo) return lo;
  if (x > hi) return hi;
  return x;
}
}  // namespace epilogue_detail

// An epilogue as the clamp the GEMM kernels and the depthwise kernels apply in registers: exact
// for none, ReLU and Hardtanh (ReLU6); other activations, and any residual (added before the
// activation), go after the store (exact = false, no clamp).
struct ClampEpilogue {
  float lo = -INFINITY, hi = INFINITY;
  bool exact = true;
};
// The clamp of e's activation alone, for a kernel that adds e's residual itself before it.
inline ClampEpilogue activation_clamp_of(const Epilogue& e) {
  if (!e.active) return {};
  if (e.kind == Activation::relu) return {0.f, INFINITY, true};
  if (e.kind == Activation::hardtanh) return {e.args.lo, e.args.hi, true};
  return {-INFINITY, INFINITY, false};
}
inline ClampEpilogue clamp_of(const Epilogue& e) {
  if (e.residual != nullptr) return {-INFINITY, INFINITY, false};
  if (!e.active) return {};
  if (e.kind == Activation::relu) return {0.f, INFINITY, true};
  if (e.kind == Activation::hardtanh) return {e.args.lo, e.args.hi, true};
  return {-INFINITY, INFINITY, false};
}

// p[i] = f(p[i] + residual) for i < n, p within the output (residual and f where given).
inline void apply_epilogue(const Epilogue& e, float* __restrict p, int64_t n) {
  using namespace epilogue_detail;
  if (e.residual != nullptr) {
    const float* __restrict r = e.residual + (p - e.output);
    for (int64_t i = 0; i < n; ++i) p[i] += r[i];
  }
  if (!e.active) return;
  const float alpha = e.args.alpha, lo = e.args.lo, hi = e.args.hi;
  switch (e.kind) {
    case Activation::relu:
      for (int64_t i = 0; i < n; ++i) p[i] = p[i] < 0.0f ? 0.0f : p[i];
      return;
    case Activation::leaky_relu:
      for (int64_t i = 0; i < n; ++i) p[i] = p[i] > 0.0f ? p[i] : p[i] * alpha;
      return;
    case Activation::hardtanh:
      for (int64_t i = 0; i < n; ++i) p[i] = clamp_nan(p[i], lo, hi);
      return;
    case Activation::silu:
      silu_array(p, p, n);  // logistic.h: the SiLU op's own formula
      return;
    case Activation::hardswish:
      for (int64_t i = 0; i < n; ++i) p[i] = p[i] * clamp_nan(p[i] + 3.0f, 0.0f, 6.0f) / 6.0f;
      return;
    default:
      return;  // not fused (epilogue_supports)
  }
}

#if defined(__AVX512F__)
// e's activation (not its residual) on 16 values in registers, by apply_epilogue's formulas
// (the same operations in the same order, so the same bits), for kernels that apply it before
// their store rather than over the stored block.
inline __m512 activate16(const Epilogue& e, __m512 v) {
  if (!e.active) return v;
  const __m512 zero = _mm512_setzero_ps();
  switch (e.kind) {
    case Activation::relu:  // max returns its second operand for NaN, and for 0 against -0
      return _mm512_max_ps(zero, v);
    case Activation::leaky_relu:
      return _mm512_mask_mov_ps(_mm512_mul_ps(v, _mm512_set1_ps(e.args.alpha)),
                                _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), v);
    case Activation::hardtanh:
      return _mm512_min_ps(_mm512_set1_ps(e.args.hi), _mm512_max_ps(_mm512_set1_ps(e.args.lo), v));
    case Activation::silu:
      return _mm512_mul_ps(v, logistic_detail::sigmoid(v));
    case Activation::hardswish: {
      const __m512 c = _mm512_min_ps(_mm512_set1_ps(6.0f),
                                     _mm512_max_ps(zero, _mm512_add_ps(v, _mm512_set1_ps(3.0f))));
      return _mm512_div_ps(_mm512_mul_ps(v, c), _mm512_set1_ps(6.0f));
    }
    default:
      return v;  // not fused (epilogue_supports)
  }
}
#endif

}  // namespace nnx::cpu
