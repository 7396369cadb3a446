// Activation gradients on the CPU, written as PyTorch 1.13's CPU backward kernels evaluate them
// (aten/src/ATen/native/cpu/Activation.cpp and derivatives.yaml), in float.
#include "kernels/cpu/activation_grad.h"

#include <cmath>

#include "nnx/thread_pool.h"

namespace nnx::cpu {
namespace {

constexpr int64_t kGrain = int64_t(1) << 14;

template <class F>
void map2(const float* v, const float* gy, float* gx, int64_t n, ThreadPool* pool, F f) {
  parallel_for(pool, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) gx[i] = f(v[i], gy[i]);
  });
}

}  // namespace

bool activation_backward_uses_output(Activation kind) {
  switch (kind) {
    case Activation::relu:
    case Activation::hardtanh:
    case Activation::sigmoid:
    case Activation::tanh:
      return true;
    default:
      return false;
  }
}

void activation_backward(Activation kind, const ActivationArgs& args, const float* xy,
                         const float* gy, float* gx, int64_t n, ThreadPool* pool) {
  const float alpha = args.alpha, beta = args.beta, threshold = args.threshold;
  const float lo = args.lo, hi = args.hi;
  switch (kind) {
    case Activation::relu:  // threshold_backward on the result: 0 where y <= 0
      return map2(xy, gy, gx, n, pool, [](float y, float g) { return y <= 0.0f ? 0.0f : g; });
    case Activation::hardtanh:
      // hardtanh_backward is 0 where x <= lo or x >= hi, which is where y is lo or hi.
      return map2(xy, gy, gx, n, pool,
                  [=](float y, float g) { return (y <= lo || y >= hi) ? 0.0f : g; });
    case Activation::sigmoid:
      return map2(xy, gy, gx, n, pool, [](float y, float g) { return g * (1.0f - y) * y; });
    case Activation::tanh:
      return map2(xy, gy, gx, n, pool, [](float y, float g) { return g * (1.0f - y * y); });
    case Activation::leaky_relu:
      return map2(xy, gy, gx, n, pool, [=](float x, float g) { return x > 0.0f ? g : g * alpha; });
    case Activation::silu:
      return map2(xy, gy, gx, n, pool, [](float x, float g) {
        const float s = 1.0f / (1.0f + std::exp(-x));
        return g * s * (1.0f + x * (1.0f - s));
      });
    case Activation::hardswish:
      // PyTorch takes the slope at -3 and 1 at 3 (hardsigmoid's is 0 at both).
      return map2(xy, gy, gx, n, pool, [](float x, float g) {
        if (x < -3.0f) return 0.0f;
        if (x < 3.0f) return g * (x / 3.0f + 0.5f);
        return g;
      });
    case Activation::hardsigmoid:
      return map2(xy, gy, gx, n, pool, [](float x, float g) {
        return (x > -3.0f && x < 3.0f) ? g * (1.0f / 6.0f) : 0.0f;
      });
    case Activation::elu:
      return map2(xy, gy, gx, n, pool,
                  [=](float x, float g) { return x <= 0.0f ? g * alpha * std::exp(x) : g; });
    case Activation::gelu:
      return map2(xy, gy, gx, n, pool, [](float x, float g) {
        constexpr float kInvSqrt2 = 0.70710678118654752440f;
        constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
        const float cdf = 0.5f * (1.0f + std::erf(x * kInvSqrt2));
        const float pdf = kInvSqrt2Pi * std::exp(-0.5f * x * x);
        return g * (cdf + x * pdf);
      });
    case Activation::gelu_tanh:
      return map2(xy, gy, gx, n, pool, [](float x, float g) {
        constexpr float kBeta = 0.79788456080286535588f;  // sqrt(2 / pi)
        constexpr float kKappa = 0.044715f;
        const float x_sq = x * x;
        const float inner = kBeta * (x + kKappa * x_sq * x);
        const float t = std::tanh(inner);
        const float left = 0.5f * x, right = 1.0f + t;
        const float left_derivative = 0.5f * right;
        const float inner_derivative = kBeta * (1.0f + 3.0f * kKappa * x_sq);
        const float right_derivative = left * (1.0f - t * t) * inner_derivative;
        return g * (left_derivative + right_derivative);
      });
    case Activation::softplus:
      return map2(xy, gy, gx, n, pool, [=](float x, float g) {
        const float z = std::exp(x * beta);
        return x * beta > threshold ? g : g * z / (z + 1.0f);
      });
    case Activation::mish:
      return map2(xy, gy, gx, n, pool, [](float x, float g) {
        const float s = 1.0f / (1.0f + std::exp(-x));
        const float t = std::tanh(std::log1p(std::exp(x)));
        return g * (t + x * s * (1.0f - t * t));
      });
  }
}

}  // namespace nnx::cpu
