// CUDA bodies of the one-input activations (ReLU, Sigmoid, GELU, ...): y = f(x) elementwise over
// contiguous float32 device buffers, with the formulas of kernels/cpu/activation.h.
#pragma once

#include <cstdint>

namespace nnx::cuda {

// The same set and meaning as nnx::cpu::Activation, so that an op maps one onto the other.
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

// y[i] = f(x[i]) for i < n on `stream` (a cudaStream_t; nullptr is the legacy stream), on the
// current device. y may be x (in place), but no other overlap. Returns once queued; throws
// Error(device) if the launch fails.
void activation(Activation kind, const ActivationArgs& args, const float* x, float* y, int64_t n,
                void* stream);

}  // namespace nnx::cuda
