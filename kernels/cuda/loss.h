// The training losses on a CUDA device: train/loss.cpp's formulas (kernels/loss_terms.h), each
// element's term and gradient in double, the gradient rounded once to float32. The loss's sum is
// reduced in a fixed order (per block, then the blocks' sums in one block), so the same inputs
// give the same value on every run. All pointers are contiguous device buffers; each call is
// queued on `stream` (a cudaStream_t) on the current device and returns once queued.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnx::cuda {

// Doubles of device scratch a loss call needs. When its kernels have run, scratch[0] holds the
// loss's sum (before any mean); for cross_entropy with class indices, scratch[1] the sum of the
// weights of the counted positions and scratch[2], as an int64's bits, the first position whose
// label is out of [0, c) and not ignore_index (kNoBadLabel when none; that position counts for
// nothing).
size_t loss_scratch_doubles();
inline constexpr int64_t kNoBadLabel = INT64_MAX;

enum class PointLoss { mse, l1, smooth_l1, bce_with_logits };

// Elementwise losses over n elements of prediction x and target t (float32). bce_with_logits:
// weight and pos_weight, each null or n doubles (already broadcast). grad[i] = the element's
// derivative / divisor (1 for a sum, n for a mean), as float32.
struct PointLossArgs {
  PointLoss kind = PointLoss::mse;
  const float* x = nullptr;
  const float* t = nullptr;
  const double* weight = nullptr;
  const double* pos_weight = nullptr;
  double beta = 1;  // smooth_l1, > 0
  double divisor = 1;
  int64_t n = 0;
  float* grad = nullptr;
};
void point_loss(const PointLossArgs& a, double* scratch, void* stream);

// Cross entropy over logits viewed as [n, c, s] (float32), against either class indices
// `labels` (n * s int64) or class probabilities `probs` (the logits' shape, float32), with an
// optional per-class `weight` (c doubles), label smoothing and ignore_index. grad gets every
// element (zero at ignored positions); with `mean` it is divided by scratch[1] (indices: the
// counted weight, computed first on the device) or by n * s (probabilities).
struct CrossEntropyArgs {
  const float* logits = nullptr;
  int64_t n = 1, c = 1, s = 1;
  const int64_t* labels = nullptr;
  const float* probs = nullptr;
  const double* weight = nullptr;
  double weight_sum = 0;  // the sum of weight's c values (c without a weight)
  int64_t ignore_index = -100;
  double label_smoothing = 0;
  bool mean = true;
  float* grad = nullptr;
};
void cross_entropy_loss(const CrossEntropyArgs& a, double* scratch, void* stream);

}  // namespace nnx::cuda
