// CPU backward bodies of the one-input activations: gx = gy * f'(.) elementwise, with the
// formulas of PyTorch's CPU backward kernels (including their choices at kinks: ReLU's gradient
// at 0 is 0, Hardtanh's is 0 at both bounds, ELU's at 0 is alpha).
#pragma once

#include <cstdint>

#include "kernels/activation_kind.h"

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

// Whether the backward of `kind` reads the forward's output (ReLU, ReLU6/Hardtanh, Sigmoid, Tanh)
// rather than its input.
bool activation_backward_uses_output(Activation kind);

// gx[i] = gy[i] * f'(...) for i < n, where `xy` is the forward's output when
// activation_backward_uses_output(kind), else its input. gx may be gy (in place).
void activation_backward(Activation kind, const ActivationArgs& args, const float* xy,
                         const float* gy, float* gx, int64_t n, ThreadPool* pool);

}  // namespace nnx::cpu
