// CPU bodies of the one-input activations (ReLU, Sigmoid, GELU, ...): y = f(x) elementwise over
// contiguous float32 buffers, with PyTorch's formulas and their numerically stable forms.
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

enum class Activation {
  relu,
  leaky_relu,  // alpha = negative slope
  hardtanh,    // clamp to [lo, hi] (ReLU6 is hardtanh(0, 6))
  sigmoid,
  tanh,
  silu,
  hardswish,
  hardsigmoid,
  elu,        // alpha
  gelu,       // exact, through erf
  gelu_tanh,  // the tanh approximation
  softplus,   // beta, threshold
  mish,
};

struct ActivationArgs {
  float alpha = 0;
  float beta = 1;
  float threshold = 20;
  float lo = -1, hi = 1;
};

// y[i] = f(x[i]) for i < n; y may be x itself (in place), but no other overlap.
void activation(Activation kind, const ActivationArgs& args, const float* x, float* y, int64_t n,
                ThreadPool* pool);

}  // namespace nnx::cpu
