// Pruning: structured channel pruning (whole output channels of convolutions and Linear
// features, with every tied channel), and unstructured magnitude pruning with masks that keep
// pruned weights at zero through fine-tuning. See docs/PRUNING.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nnx/model.h"
#include "nnx/shape.h"
#include "nnx/train.h"

namespace nnx {

enum class ChannelScore {
  gates,  // the learned Pruner gates: a channel goes where a prunable gate is off
  l1,     // filter L1 norm
  l2,     // filter L2 norm
  slim,   // |BatchNorm scale| (network slimming)
};

struct ChannelPruneOptions {
  ChannelScore score = ChannelScore::gates;
  // Fraction of the prunable channels to remove (l1, l2, slim): per producing layer, or ranked
  // over the whole network with `global`.
  double amount = 0;
  bool global = false;
  // Input shapes (NCHW) the channel analysis runs at; empty: 1,C,32,32 per input. Spatial sizes
  // matter only where Flatten feeds Linear.
  std::vector<Shape> input_shapes;
};

// Channels of one producing layer before and after.
struct ChannelCount {
  int layer = 0;  // description index in the original model
  std::string type;
  int64_t before = 0, after = 0;
};

struct ChannelPruneResult {
  Model model;
  std::vector<ChannelCount> channels;  // Conv2d/Linear/BatchNorm2d layers, in layer order
  int64_t groups_total = 0, groups_removed = 0;
};

// Removes channels and returns a new model (ordinary ops, no Pruner nodes with `gates`). Tied
// channels go together (BatchNorm, activations, pooling, Upsample, Add/Sub/Mul, Cat, depthwise
// convolutions, Flatten into Linear, shared layers); network inputs and outputs are never
// pruned. With `gates` the result computes what the gated network computed: constants that
// flow out of removed channels are folded into a consumer's bias where that is exact, kept as
// Constant nodes otherwise, and a channel is kept where neither is possible.
NNX_API ChannelPruneResult prune_channels(const Model& model, const ChannelPruneOptions& options);

// Unstructured magnitude pruning of Conv2d and Linear weights.
struct MagnitudeOptions {
  double amount = 0;    // target sparsity, 0..1
  bool global = false;  // one threshold over all layers; else `amount` of every layer
};

// Which weights stay (1) or are held at zero (0), per pruned tensor.
struct WeightMask {
  int layer = 0;      // description index
  std::string param;  // "weight"
  std::vector<uint8_t> keep;
};

// Zeroes the smallest weights (exactly round(amount * n) of them, ties broken by position) in
// a copy of `model`; writes the masks to `masks` when given.
NNX_API Model prune_magnitude(const Model& model, const MagnitudeOptions& options,
                              std::vector<WeightMask>* masks = nullptr);
// Recomputes masks from the current values in place (the smallest go to zero) for the
// trainer's parameters: gradual pruning calls it with a rising amount.
NNX_API std::vector<WeightMask> magnitude_masks(std::vector<Parameter>& params,
                                                const MagnitudeOptions& options);
// Puts masked weights back to zero (after an optimizer step).
NNX_API void apply_masks(std::vector<Parameter>& params, const std::vector<WeightMask>& masks);
// Cubic sparsity schedule (Zhu & Gupta): s_f + (s_i - s_f) (1 - t/n)^3 for t in [0, n].
NNX_API double cubic_sparsity(double initial, double final, int64_t step, int64_t steps);

struct LayerSparsity {
  int layer = 0;
  std::string type;
  int64_t weights = 0, zeros = 0;
};
// Zeros of every Conv2d and Linear weight.
NNX_API std::vector<LayerSparsity> sparsity_report(const Model& model);

}  // namespace nnx
