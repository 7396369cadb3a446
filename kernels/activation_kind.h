// The one-input activations and their arguments, shared by the CPU and CUDA kernels (C++17, so
// that nvcc can include it).
#pragma once

namespace nnx {

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

}  // namespace nnx
