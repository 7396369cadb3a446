// Activations on CUDA: one functor per formula, mapped over the buffer by launch_elementwise.
// Same formulas as the CPU (NaN propagates through ReLU and clamps; exponentials only see
// arguments that cannot overflow), with the accurate expf/erff/tanhf (no fast-math).
#include "kernels/cuda/activation.h"

#include "kernels/cuda/launch.cuh"

namespace nnx::cuda {
namespace {

__device__ __forceinline__ float stable_sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

// A comparison false for NaN leaves NaN in place, as torch.clamp does (fminf/fmaxf would not).
__device__ __forceinline__ float clamp_nan(float x, float lo, float hi) {
  if (x < lo) return lo;
  if (x > hi) return hi;
  return x;
}

__device__ __forceinline__ float softplus(float x, float beta, float threshold) {
  const float bx = x * beta;
  return bx > threshold ? x : log1pf(expf(bx)) / beta;
}

struct Relu {
  __device__ float operator()(float v) const { return v < 0.0f ? 0.0f : v; }
};
struct LeakyRelu {
  float slope;
  __device__ float operator()(float v) const { return v > 0.0f ? v : v * slope; }
};
struct Hardtanh {
  float lo, hi;
  __device__ float operator()(float v) const { return clamp_nan(v, lo, hi); }
};
struct Sigmoid {
  __device__ float operator()(float v) const { return stable_sigmoid(v); }
};
struct Tanh {
  __device__ float operator()(float v) const { return tanhf(v); }
};
struct Silu {
  __device__ float operator()(float v) const { return v * stable_sigmoid(v); }
};
struct Hardswish {
  __device__ float operator()(float v) const { return v * clamp_nan(v + 3.0f, 0.0f, 6.0f) / 6.0f; }
};
struct Hardsigmoid {
  __device__ float operator()(float v) const { return clamp_nan(v + 3.0f, 0.0f, 6.0f) / 6.0f; }
};
struct Elu {
  float alpha;
  __device__ float operator()(float v) const { return v > 0.0f ? v : alpha * expm1f(v); }
};
struct Gelu {
  __device__ float operator()(float v) const {
    constexpr float kInvSqrt2 = 0.70710678118654752440f;
    return 0.5f * v * (1.0f + erff(v * kInvSqrt2));
  }
};
struct GeluTanh {
  __device__ float operator()(float v) const {
    constexpr float kSqrt2OverPi = 0.79788456080286535588f;
    const float inner = kSqrt2OverPi * (v + 0.044715f * v * v * v);
    return 0.5f * v * (1.0f + tanhf(inner));
  }
};
struct Softplus {
  float beta, threshold;
  __device__ float operator()(float v) const { return softplus(v, beta, threshold); }
};
struct Mish {
  __device__ float operator()(float v) const { return v * tanhf(softplus(v, 1.0f, 20.0f)); }
};

}  // namespace

void activation(Activation kind, const ActivationArgs& args, const float* x, float* y, int64_t n,
                void* stream_handle) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  switch (kind) {
    case Activation::relu:
      return launch_elementwise(x, y, n, Relu{}, stream);
    case Activation::leaky_relu:
      return launch_elementwise(x, y, n, LeakyRelu{args.alpha}, stream);
    case Activation::hardtanh:
      return launch_elementwise(x, y, n, Hardtanh{args.lo, args.hi}, stream);
    case Activation::sigmoid:
      return launch_elementwise(x, y, n, Sigmoid{}, stream);
    case Activation::tanh:
      return launch_elementwise(x, y, n, Tanh{}, stream);
    case Activation::silu:
      return launch_elementwise(x, y, n, Silu{}, stream);
    case Activation::hardswish:
      return launch_elementwise(x, y, n, Hardswish{}, stream);
    case Activation::hardsigmoid:
      return launch_elementwise(x, y, n, Hardsigmoid{}, stream);
    case Activation::elu:
      return launch_elementwise(x, y, n, Elu{args.alpha}, stream);
    case Activation::gelu:
      return launch_elementwise(x, y, n, Gelu{}, stream);
    case Activation::gelu_tanh:
      return launch_elementwise(x, y, n, GeluTanh{}, stream);
    case Activation::softplus:
      return launch_elementwise(x, y, n, Softplus{args.beta, args.threshold}, stream);
    case Activation::mish:
      return launch_elementwise(x, y, n, Mish{}, stream);
  }
}

// ---- gradients: gx = gy * f'(v), v the output or the input as activation_backward_uses_output
// says; the formulas of kernels/cpu/activation_grad.cpp (PyTorch's, kinks included), in float.

namespace {

struct Grad {
  Activation kind;
  float alpha, beta, threshold, lo, hi;
  __device__ float operator()(float v, float g) const {
    switch (kind) {
      case Activation::relu:
        return v <= 0.0f ? 0.0f : g;
      case Activation::hardtanh:
        return (v <= lo || v >= hi) ? 0.0f : g;
      case Activation::sigmoid:
        return g * (1.0f - v) * v;
      case Activation::tanh:
        return g * (1.0f - v * v);
      case Activation::leaky_relu:
        return v > 0.0f ? g : g * alpha;
      case Activation::silu: {
        const float s = 1.0f / (1.0f + expf(-v));
        return g * s * (1.0f + v * (1.0f - s));
      }
      case Activation::hardswish:
        if (v < -3.0f) return 0.0f;
        if (v < 3.0f) return g * (v / 3.0f + 0.5f);
        return g;
      case Activation::hardsigmoid:
        return (v > -3.0f && v < 3.0f) ? g * (1.0f / 6.0f) : 0.0f;
      case Activation::elu:
        return v <= 0.0f ? g * alpha * expf(v) : g;
      case Activation::gelu: {
        const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752440f));
        const float pdf = 0.39894228040143267794f * expf(-0.5f * v * v);
        return g * (cdf + v * pdf);
      }
      case Activation::gelu_tanh: {
        constexpr float kBeta = 0.79788456080286535588f, kKappa = 0.044715f;
        const float v_sq = v * v;
        const float t = tanhf(kBeta * (v + kKappa * v_sq * v));
        const float left = 0.5f * v, right = 1.0f + t;
        const float inner_derivative = kBeta * (1.0f + 3.0f * kKappa * v_sq);
        return g * (0.5f * right + left * (1.0f - t * t) * inner_derivative);
      }
      case Activation::softplus: {
        const float z = expf(v * beta);
        return v * beta > threshold ? g : g * z / (z + 1.0f);
      }
      case Activation::mish: {
        const float s = 1.0f / (1.0f + expf(-v));
        const float t = tanhf(log1pf(expf(v)));
        return g * (t + v * s * (1.0f - t * t));
      }
    }
    return g;
  }
};

}  // namespace

void activation_backward(Activation kind, const ActivationArgs& args, const float* v,
                         const float* gy, float* gx, int64_t n, void* stream) {
  launch_elementwise(v, gy, gx, n,
                     Grad{kind, args.alpha, args.beta, args.threshold, args.lo, args.hi},
                     static_cast<cudaStream_t>(stream));
}

}  // namespace nnx::cuda
