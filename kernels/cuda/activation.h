// CUDA bodies of the one-input activations (ReLU, Sigmoid, GELU, ...): y = f(x) elementwise over
// contiguous float32 device buffers, with the formulas of kernels/cpu/activation.h.
#pragma once

#include <cstdint>

#include "kernels/activation_kind.h"

namespace nnx::cuda {

using ::nnx::Activation;
using ::nnx::ActivationArgs;

// y[i] = f(x[i]) for i < n on `stream` (a cudaStream_t; nullptr is the legacy stream), on the
// current device. y may be x (in place), but no other overlap. Returns once queued; throws
// Error(device) if the launch fails.
void activation(Activation kind, const ActivationArgs& args, const float* x, float* y, int64_t n,
                void* stream);
// Its gradient: gx[i] = gy[i] * f'(v[i]), v the forward's output for ReLU, Hardtanh, Sigmoid and
// Tanh and its input for the others (cpu::activation_backward_uses_output), with the CPU's
// formulas. gx may be gy.
void activation_backward(Activation kind, const ActivationArgs& args, const float* v,
                         const float* gy, float* gx, int64_t n, void* stream);

}  // namespace nnx::cuda
