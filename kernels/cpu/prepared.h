// Weights of a convolution rearranged once, for a layer whose weights no longer change
// (inference: graph/fusion.h keeps one per Conv2d), so that the per-call rearrangement of
// the kernels disappears. Each form is made on the first call that needs it; thread-safe. The
// 12-row panels made up front (prepare) are dropped again when the layer turns out to run on
// the channels-last form only (small planes), so that a layer holds one copy of its weights.
#pragma once

#include <mutex>
#include <vector>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

class ConvPrepared {
 public:
  // The Winograd transform of `weight` (winograd.h); made on `pool`'s threads (may be null).
  // Its output tile (winograd.h: winograd_prepared_tile) is chosen by the first call's shape
  // and kept for every later one, whatever its plane.
  const float* winograd(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);
  // The tile of the transform winograd() returned.
  int winograd_tile() const { return winograd_tile_; }
  // `weight` as an [out_channels x in_channels * kernel_h * kernel_w] matrix in 12-row panels
  // for panel_gemm (gemm.h); made from `weight` or, where that was dropped, from the
  // channels-last form. Once returned, kept.
  const float* panels(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);
  // The weight as the channels-last GEMM's panels (channels_last.h: pack_cl_panels); made from
  // `weight` or, where that was dropped, from the 12-row panels, which are then dropped unless
  // a call has used them.
  const float* channels_last(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);
  // The weight as the indirect convolution's panels (indirect_conv.h, AVX-512 builds); made
  // from `weight` or, where that was dropped, from the 12-row panels, which are then dropped
  // unless a call has used them.
  const float* indirect(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);
  // Makes now the form conv2d will use for this shape, where conv2d_reads_prepared_only(s); the
  // shape's spatial sizes do not matter. The Winograd transform, whose tile depends on the
  // plane, is made by the first call instead, from a copy of `weight` kept until then.
  void prepare(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);

 private:
  // The 12-row panels for `weight` (or, if null, from the channels-last form); mutex_ held.
  void make_panels(const Conv2dShape& s, const float* weight, ThreadPool* pool);
  // Drops the 12-row panels made up front once another form replaces them, unless a call has
  // read them (its pointer stays valid); mutex_ held.
  void drop_unread_panels();
  // `weight`, or where that was dropped, the weight unpacked from the 12-row panels into
  // `unpacked`; mutex_ held.
  const float* weight_or_unpacked(const float* weight, int64_t m, int64_t k,
                                  std::vector<float>& unpacked) const;

  std::once_flag winograd_once_;
  AlignedVector<float> winograd_;
  int winograd_tile_ = 2;
  std::vector<float> deferred_;  // prepare's copy of the weight for the Winograd transform
  std::mutex mutex_;             // guards the two forms below and their flags
  AlignedVector<float> panels_;
  AlignedVector<float> channels_last_, indirect_;
  bool panels_made_ = false, panels_used_ = false, channels_last_made_ = false;
  bool indirect_made_ = false;
};

// Whether conv2d, given prepared weights for a layer of this shape (its spatial sizes do not
// matter), reads only those and never the weights themselves: a caller that prepares them up
// front may then drop its own copy.
bool conv2d_reads_prepared_only(const Conv2dShape& s);
// Whether that form is the Winograd transform (else the 12-row panels).
bool conv2d_uses_winograd_prepared(const Conv2dShape& s);

// A [m x k] row-major matrix (row stride lda) as panels of kPanelRows rows, k-major within a
// panel ([k][12] each), rows past m zero: ceil(m / 12) * 12 * k floats at `out`; the panels
// split over `pool`'s threads when given.
void pack_row_panels(int64_t m, int64_t k, const float* a, int64_t lda, float* out,
                     ThreadPool* pool = nullptr);

}  // namespace nnx::cpu
