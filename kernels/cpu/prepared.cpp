// Weights rearranged once per layer (see prepared.h).
#include "kernels/cpu/prepared.h"

#include <algorithm>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/winograd.h"

namespace nnx::cpu {

void pack_row_panels(int64_t m, int64_t k, const float* a, int64_t lda, float* out) {
  for (int64_t i0 = 0; i0 < m; i0 += kPanelRows, out += kPanelRows * k)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t r = 0; r < kPanelRows; ++r)
        out[p * kPanelRows + r] = i0 + r < m ? a[(i0 + r) * lda + p] : 0.f;
}

const float* ConvPrepared::winograd(const Conv2dShape& s, const float* weight) {
  std::call_once(winograd_once_, [&] {
    winograd_.assign(size_t(winograd_weights_floats(s)), 0.f);
    winograd_transform_weights(s, weight, winograd_.data());
  });
  return winograd_.data();
}

const float* ConvPrepared::panels(const Conv2dShape& s, const float* weight) {
  std::call_once(panels_once_, [&] {
    const int64_t m = s.out_channels, k = s.in_channels / s.groups * s.kernel_h * s.kernel_w;
    panels_.resize(size_t((m + kPanelRows - 1) / kPanelRows * kPanelRows * k));
    pack_row_panels(m, k, weight, k, panels_.data());
  });
  return panels_.data();
}

}  // namespace nnx::cpu
