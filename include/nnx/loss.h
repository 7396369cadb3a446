// Training losses as PyTorch computes them (torch.nn.functional, 1.13): the value and its
// gradient with respect to the prediction, accumulated in double.
#pragma once

#include <cstdint>
#include <string_view>

#include "nnx/export.h"
#include "nnx/tensor.h"

namespace nnx {

enum class LossKind { cross_entropy, mse, l1, smooth_l1, bce_with_logits };
enum class Reduction { mean, sum };

// "cross_entropy", "mse", "l1", "smooth_l1", "bce_with_logits"; Error(usage) otherwise.
NNX_API LossKind parse_loss_name(std::string_view name);
NNX_API const char* loss_name(LossKind kind);

struct LossOptions {
  LossKind kind = LossKind::cross_entropy;
  Reduction reduction = Reduction::mean;
  // cross_entropy: one weight per class (C). bce_with_logits: broadcast to the prediction.
  Tensor weight{};
  int64_t ignore_index = -100;  // cross_entropy with class-index targets
  double label_smoothing = 0;   // cross_entropy, in [0, 1]
  double beta = 1.0;            // smooth_l1; 0 gives l1
  Tensor pos_weight{};          // bce_with_logits: broadcast to the prediction (usually C)
};

struct LossResult {
  double value = 0;
  Tensor grad{};  // d value / d prediction: the prediction's shape and dtype, contiguous
};

// prediction: f32 or f64 on the CPU, or on a CUDA device (a Trainer's output there). A contiguous
// f32 prediction on a device, with a float32 target (class indices: any integer dtype) on the
// host or contiguous on that device, is computed there (kernels/cuda/loss.h: the same per-element
// arithmetic in double, the gradient left on the device, the value read back); any other
// combination on the host, the gradient copied to the prediction's device. cross_entropy: logits
// N,C or N,C,d1..dk (or C alone) and either class indices (i64/i32) of shape N,d1..dk, or class
// probabilities of the prediction's shape. The others: a float target of the prediction's shape.
// Error(shape) on shapes that disagree, Error(usage) on class indices out of range.
NNX_API LossResult compute_loss(const Tensor& prediction, const Tensor& target,
                                const LossOptions& options = {});

// The same, one function per loss (options.kind is ignored).
NNX_API LossResult cross_entropy_loss(const Tensor& logits, const Tensor& target,
                                      const LossOptions& options = {});
NNX_API LossResult mse_loss(const Tensor& prediction, const Tensor& target,
                            const LossOptions& options = {});
NNX_API LossResult l1_loss(const Tensor& prediction, const Tensor& target,
                           const LossOptions& options = {});
NNX_API LossResult smooth_l1_loss(const Tensor& prediction, const Tensor& target,
                                  const LossOptions& options = {});
NNX_API LossResult bce_with_logits_loss(const Tensor& logits, const Tensor& target,
                                        const LossOptions& options = {});

// Classification: positions where the argmax over dim 1 of logits (N,C or N,C,d1..dk; the
// first maximum wins) equals the label (N or N,d1..dk); labels equal to ignore_index are not
// counted. accuracy() is correct / counted (0 when nothing is counted).
NNX_API int64_t count_correct(const Tensor& logits, const Tensor& labels,
                              int64_t ignore_index = -100);
NNX_API int64_t count_labelled(const Tensor& labels, int64_t ignore_index = -100);
NNX_API double accuracy(const Tensor& logits, const Tensor& labels, int64_t ignore_index = -100);

}  // namespace nnx
