// Activations on the CPU. Each formula is written the way PyTorch's CPU kernels evaluate it (in
// float, NaN propagating through ReLU and clamps), with the exponentials arranged so that
// large-magnitude inputs neither overflow nor lose the small side.
#include "kernels/cpu/activation.h"

#include <cmath>

#include "kernels/cpu/logistic.h"

#include "nnx/thread_pool.h"

namespace nnx::cpu {
namespace {

constexpr int64_t kGrain = int64_t(1) << 14;

// PyTorch's softplus: linear above the threshold, log1p(exp(.)) below it.
inline float softplus(float x, float beta, float threshold) {
  float bx = x * beta;
  return bx > threshold ? x : std::log1p(std::exp(bx)) / beta;
}

// A comparison false for NaN leaves NaN in place, as torch.clamp does.
inline float clamp_nan(float x, float lo, float hi) {
  if (x < lo) return lo;
  if (x > hi) return hi;
  return x;
}

template <class F>
void map(const float* x, float* y, int64_t n, ThreadPool* pool, F f) {
  parallel_for(pool, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = f(x[i]);
  });
}

// f(x + begin, y + begin, end - begin) over the pool: for the array forms of logistic.h.
template <class F>
void map_arrays(const float* x, float* y, int64_t n, ThreadPool* pool, F f) {
  parallel_for(pool, n, kGrain,
               [&](int64_t begin, int64_t end) { f(x + begin, y + begin, end - begin); });
}

}  // namespace

void activation(Activation kind, const ActivationArgs& args, const float* x, float* y, int64_t n,
                ThreadPool* pool) {
  const float alpha = args.alpha, beta = args.beta, threshold = args.threshold;
  const float lo = args.lo, hi = args.hi;
  switch (kind) {
    case Activation::relu:
      return map(x, y, n, pool, [](float v) { return v < 0.0f ? 0.0f : v; });
    case Activation::leaky_relu:
      return map(x, y, n, pool, [=](float v) { return v > 0.0f ? v : v * alpha; });
    case Activation::hardtanh:
      return map(x, y, n, pool, [=](float v) { return clamp_nan(v, lo, hi); });
    case Activation::sigmoid:
      return map_arrays(x, y, n, pool, sigmoid_array);
    case Activation::tanh:
      return map(x, y, n, pool, [](float v) { return std::tanh(v); });
    case Activation::silu:
      return map_arrays(x, y, n, pool, silu_array);
    case Activation::hardswish:
      return map(x, y, n, pool, [](float v) { return v * clamp_nan(v + 3.0f, 0.0f, 6.0f) / 6.0f; });
    case Activation::hardsigmoid:
      return map(x, y, n, pool, [](float v) { return clamp_nan(v + 3.0f, 0.0f, 6.0f) / 6.0f; });
    case Activation::elu:
      return map(x, y, n, pool, [=](float v) { return v > 0.0f ? v : alpha * std::expm1(v); });
    case Activation::gelu:
      return map(x, y, n, pool, [](float v) {
        constexpr float kInvSqrt2 = 0.70710678118654752440f;
        return 0.5f * v * (1.0f + std::erf(v * kInvSqrt2));
      });
    case Activation::gelu_tanh:
      return map(x, y, n, pool, [](float v) {
        constexpr float kSqrt2OverPi = 0.79788456080286535588f;
        float inner = kSqrt2OverPi * (v + 0.044715f * v * v * v);
        return 0.5f * v * (1.0f + std::tanh(inner));
      });
    case Activation::softplus:
      return map(x, y, n, pool, [=](float v) { return softplus(v, beta, threshold); });
    case Activation::mish:
      return map(x, y, n, pool, [](float v) { return v * std::tanh(softplus(v, 1.0f, 20.0f)); });
  }
}

}  // namespace nnx::cpu
