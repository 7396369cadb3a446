// CPU bodies of the one-input activations (ReLU, Sigmoid, GELU, ...): y = f(x) elementwise over
// contiguous float32 buffers, with PyTorch's formulas and their numerically stable forms.
#pragma once

#include <cstdint>

#include "kernels/activation_kind.h"

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

using ::nnx::Activation;
using ::nnx::ActivationArgs;

// y[i] = f(x[i]) for i < n; y may be x itself (in place), but no other overlap.
void activation(Activation kind, const ActivationArgs& args, const float* x, float* y, int64_t n,
                ThreadPool* pool);

}  // namespace nnx::cpu
