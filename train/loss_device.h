// The training losses on a CUDA device in two halves, for callers that must not wait between
// them: queue_device_loss queues the kernels (gradient and the loss's sum into a device
// scratch) on a stream without synchronising, and finish_device_loss turns the scratch's three
// head doubles, copied back whenever the caller likes, into the loss's value. compute_loss
// (train/loss.cpp) does both at once; nnx::TrainStep queues the loss inside a captured CUDA graph.
// Internal: not installed.
#pragma once

#include <cstdint>

#include "nnx/loss.h"
#include "nnx/tensor.h"

namespace nnx::detail {

// What a device loss reads besides the prediction and the target, made once: cross_entropy's
// class weights, or bce_with_logits' weight and pos_weight broadcast to the prediction, as doubles
// on the device (undefined for none).
struct DeviceLossConstants {
  Tensor weight, pos_weight;
  double weight_sum = 0;  // cross_entropy: the sum of the C class weights (C without)
};

// The constants for a prediction of this shape on its device (options checked as compute_loss
// checks them; the copies to the device complete before this returns).
DeviceLossConstants device_loss_constants(const Tensor& prediction, const LossOptions& options);

struct QueuedLoss {
  Tensor grad;     // d loss / d prediction: float32, the prediction's shape, on its device
  Tensor scratch;  // doubles on the device: [0] the sum, [1] the counted weight, [2] bad label
  bool launched = false;  // false: nothing to sum (empty prediction), scratch unread
  LossKind kind = LossKind::mse;
  bool mean = true;
  bool by_count =
      false;           // cross_entropy with class indices: the mean divides by the counted weight
  double divisor = 1;  // otherwise, with a mean
  int64_t classes = 0, ignore_index = -100;
  Tensor labels;  // cross_entropy's class indices, for the message naming a bad one
};

// Queues the loss on `stream` (the prediction's device current): the target contiguous on that
// device, float32 (class probabilities for cross_entropy) or int64 class indices. Shapes are
// checked here. No synchronisation, no host-to-device copy: capturable.
QueuedLoss queue_device_loss(const Tensor& prediction, const Tensor& target,
                             const LossOptions& options, const DeviceLossConstants& constants,
                             void* stream);

// The loss's value from scratch[0..3) as copied back after the kernels ran; Error(usage) naming
// the position for a class index out of range (which counted for nothing).
double finish_device_loss(const QueuedLoss& loss, const double head[3]);

}  // namespace nnx::detail
