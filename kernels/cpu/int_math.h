// Integer arithmetic the CPU kernels share.
#pragma once

#include <cstdint>

namespace nnx::cpu {

// a / b rounded up, for b > 0 and a > -b (C++ division truncates toward zero).
constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace nnx::cpu
