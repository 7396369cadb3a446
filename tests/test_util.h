// Helpers shared by the tests.
#pragma once

#include <algorithm>
#include <cmath>

#include "nnx/tensor.h"

namespace nnx::testing_util {

// The project's agreement measure: max|got - ref| / max(1, max|ref|); NaN/shape mismatch -> inf.
inline double relative_error(const Tensor& got, const Tensor& ref) {
  if (got.shape() != ref.shape()) return INFINITY;
  Tensor g = got.to(DType::f64).contiguous(), r = ref.to(DType::f64).contiguous();
  const double* gp = g.data<double>();
  const double* rp = r.data<double>();
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (std::isnan(gp[i]) != std::isnan(rp[i])) return INFINITY;
    if (std::isnan(gp[i])) continue;
    if (std::isinf(gp[i]) || std::isinf(rp[i])) {
      if (gp[i] != rp[i]) return INFINITY;
      continue;
    }
    max_diff = std::max(max_diff, std::abs(gp[i] - rp[i]));
    max_ref = std::max(max_ref, std::abs(rp[i]));
  }
  return max_diff / std::max(1.0, max_ref);
}

}  // namespace nnx::testing_util
