// Weights rearranged once per layer (see prepared.h).
#include "kernels/cpu/prepared.h"

#include <algorithm>

#include "kernels/cpu/channels_last.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/indirect_conv.h"
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
    winograd_tile_ = winograd_prepared_tile(s);
    winograd_.resize(size_t(winograd_weights_floats(s, winograd_tile_)));
    winograd_transform_weights(s, weight != nullptr ? weight : deferred_.data(), winograd_.data(),
                               winograd_tile_, pool);
    std::vector<float>().swap(deferred_);
  });
  return winograd_.data();
}

namespace {

// The [m][k] weight back from either prepared form (they are permutations of it).
std::vector<float> unpack_panels(const float* panels, int64_t m, int64_t k) {
  std::vector<float> w(size_t(m * k));
  for (int64_t o = 0; o < m; ++o)
    for (int64_t i = 0; i < k; ++i)
      w[size_t(o * k + i)] =
          panels[(o / kPanelRows) * kPanelRows * k + i * kPanelRows + o % kPanelRows];
  return w;
}
std::vector<float> unpack_channels_last(const float* cl, int64_t m, int64_t k) {
  const int64_t ld = (m + 15) / 16 * 16;
  std::vector<float> w(size_t(m * k));
  for (int64_t o = 0; o < m; ++o) {
    const int64_t p0 = o / kClPanel * kClPanel, width = std::min(kClPanel, ld - p0);
    for (int64_t i = 0; i < k; ++i) w[size_t(o * k + i)] = cl[p0 * k + i * width + (o - p0)];
  }
  return w;
}

}  // namespace

void ConvPrepared::make_panels(const Conv2dShape& s, const float* weight, ThreadPool* pool) {
  const int64_t m = s.out_channels, k = s.in_channels / s.groups * s.kernel_h * s.kernel_w;
  std::vector<float> unpacked;
  if (weight == nullptr) {
    unpacked = unpack_channels_last(channels_last_.data(), m, k);
    weight = unpacked.data();
  }
  panels_.resize(size_t((m + kPanelRows - 1) / kPanelRows * kPanelRows * k));
  pack_row_panels(m, k, weight, k, panels_.data(), pool);
  panels_made_ = true;
}

const float* ConvPrepared::panels(const Conv2dShape& s, const float* weight, ThreadPool* pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!panels_made_) make_panels(s, weight, pool);
  panels_used_ = true;  // from now on the pointer is kept valid
  return panels_.data();
}

const float* ConvPrepared::weight_or_unpacked(const float* weight, int64_t m, int64_t k,
                                              std::vector<float>& unpacked) const {
  if (weight != nullptr) return weight;
  unpacked = unpack_panels(panels_.data(), m, k);  // dropped: the weights back from the panels
  return unpacked.data();
}

void ConvPrepared::drop_unread_panels() {
  if (panels_made_ && !panels_used_) {  // made up front, never read: one copy is enough
    AlignedVector<float>().swap(panels_);
    panels_made_ = false;
  }
}

const float* ConvPrepared::channels_last(const Conv2dShape& s, const float* weight,
                                         ThreadPool* pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!channels_last_made_) {
    const int64_t m = s.out_channels, k = s.in_channels * s.kernel_h * s.kernel_w;
    std::vector<float> unpacked;
    weight = weight_or_unpacked(weight, m, k, unpacked);
    channels_last_.resize(size_t((m + 15) / 16 * 16 * k));
    pack_cl_panels(weight, m, k, channels_last_.data());
    channels_last_made_ = true;
    drop_unread_panels();
  }
  return channels_last_.data();
}

const float* ConvPrepared::indirect(const Conv2dShape& s, const float* weight, ThreadPool* pool) {
  std::lock_guard<std::mutex> lock(mutex_);
#if defined(NNX_INDIRECT_CONV)
  if (!indirect_made_) {
    const int64_t m = s.out_channels, k = s.in_channels * s.kernel_h * s.kernel_w;
    std::vector<float> unpacked;
    weight = weight_or_unpacked(weight, m, k, unpacked);
    indirect_.resize(size_t(indirect_weights_floats(s)));
    indirect_pack_weights(s, weight, indirect_.data(), pool);
    indirect_made_ = true;
    drop_unread_panels();
  }
#else
  (void)s, (void)weight, (void)pool;
#endif
  return indirect_.data();
}

void ConvPrepared::prepare(const Conv2dShape& s, const float* weight, ThreadPool* pool) {
  if (conv2d_uses_winograd_prepared(s)) {
    deferred_.assign(weight, weight + s.out_channels * s.in_channels / s.groups * 9);
    return;
  }
#if defined(NNX_INDIRECT_CONV)
  if (indirect_suitable(s, true)) {
    indirect(s, weight, pool);
    return;
  }
#endif
  std::lock_guard<std::mutex> lock(mutex_);
  if (!panels_made_ && !channels_last_made_) make_panels(s, weight, pool);
}

}  // namespace nnx::cpu
