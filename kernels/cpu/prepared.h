// Weights of a convolution rearranged once, for a layer whose weights no longer change
// (inference: graph/fusion.h keeps one per Conv2d), so that the per-call rearrangement of
// the kernels disappears. Each form is made on the first call that needs it; thread-safe.
#pragma once

#include <mutex>
#include <vector>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

class ConvPrepared {
 public:
  // The Winograd transform of `weight` (winograd.h); made on `pool`'s threads (may be null).
  const float* winograd(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);
  // `weight` as an [out_channels x in_channels * kernel_h * kernel_w] matrix in 12-row panels
  // for panel_gemm (gemm.h).
  const float* panels(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);
  // A 1x1 weight as the channels-last GEMM's panels (channels_last.h: pack_cl_panels); made
  // from `weight` or, where that was dropped, from the 12-row panels.
  const float* channels_last(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);
  // Makes now the form conv2d will use for this shape, where conv2d_reads_prepared_only(s).
  void prepare(const Conv2dShape& s, const float* weight, ThreadPool* pool = nullptr);

 private:
  std::once_flag winograd_once_, panels_once_, channels_last_once_;
  std::vector<float> winograd_, panels_;
  AlignedVector<float> channels_last_;
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
