// Weights rearranged once per layer (see prepared.h).
#include "kernels/cpu/prepared.h"

#include <algorithm>

#include "kernels/cpu/channels_last.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/winograd.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

void pack_row_panels(int64_t m, int64_t k, const float* a, int64_t lda, float* out,
                     ThreadPool* pool) {
  const int64_t panels = (m + kPanelRows - 1) / kPanelRows;
  parallel_for(pool, panels, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      float* panel = out + q * kPanelRows * k;
      for (int64_t p = 0; p < k; ++p)
        for (int64_t r = 0; r < kPanelRows; ++r) {
          const int64_t i = q * kPanelRows + r;
          panel[p * kPanelRows + r] = i < m ? a[i * lda + p] : 0.f;
        }
    }
  });
}

const float* ConvPrepared::winograd(const Conv2dShape& s, const float* weight, ThreadPool* pool) {
  std::call_once(winograd_once_, [&] {
    winograd_.resize(size_t(winograd_weights_floats(s)));
    winograd_transform_weights(s, weight, winograd_.data(), pool);
  });
  return winograd_.data();
}

const float* ConvPrepared::panels(const Conv2dShape& s, const float* weight, ThreadPool* pool) {
  std::call_once(panels_once_, [&] {
    const int64_t m = s.out_channels, k = s.in_channels / s.groups * s.kernel_h * s.kernel_w;
    panels_.resize(size_t((m + kPanelRows - 1) / kPanelRows * kPanelRows * k));
    pack_row_panels(m, k, weight, k, panels_.data(), pool);
  });
  return panels_.data();
}

const float* ConvPrepared::channels_last(const Conv2dShape& s, const float* weight,
                                         ThreadPool* pool) {
  std::call_once(channels_last_once_, [&] {
    const int64_t m = s.out_channels, k = s.in_channels * s.kernel_h * s.kernel_w;
    std::vector<float> unpacked;
    if (weight == nullptr) {  // dropped: the weights back from the panels
      const float* from = panels(s, nullptr, pool);
      unpacked.resize(size_t(m * k));
      for (int64_t o = 0; o < m; ++o)
        for (int64_t i = 0; i < k; ++i)
          unpacked[size_t(o * k + i)] =
              from[(o / kPanelRows) * kPanelRows * k + i * kPanelRows + o % kPanelRows];
      weight = unpacked.data();
    }
    channels_last_.resize(size_t((m + 15) / 16 * 16 * k));
    pack_cl_panels(weight, m, k, channels_last_.data());
  });
  return channels_last_.data();
}

void ConvPrepared::prepare(const Conv2dShape& s, const float* weight, ThreadPool* pool) {
  if (conv2d_uses_winograd_prepared(s))
    winograd(s, weight, pool);
  else
    panels(s, weight, pool);
}

}  // namespace nnx::cpu
