// The package's channel pruners, Pruner (nn_executor.models) and AllOrNothingPruner
// (nn_executor.pruning.pruners): a learned per-channel gate of shape (1, ch, 1, 1) multiplying
// an NCHW input; bodies in kernels/cpu/pruner.h.
#pragma once

#include <atomic>
#include <memory>

#include "kernels/cpu/pruner.h"
#include "nnx/op.h"

namespace nnx {

// Two generations of Pruner exist. The current one stores its gate as "pruner_weight" and
// computes x * sigmoid(100w - 86) * w * (w > threshold); the legacy one stored "weights" and
// computed x * sigmoid(100w - 86) * w^2. The generation follows the key the state dict gives:
// set_param("weights", ...) (and the importer's canonical_param_name("weights") that precedes
// it) switches the op to the legacy formula, "pruner_weight" back to the current one. The
// parameter itself is always listed as "pruner_weight". Without a state dict the weight starts
// as the package's did: 1.0000008344650269 everywhere, and init_params draws 1 - U(0, 1) * 0.01
// for an activated gate; the generation is then the current one. AllOrNothingPruner
// accepts the "weights" spelling too, with its formula unchanged.
class PrunerOp : public Op {
 public:
  PrunerOp(const Call& call, bool all_or_nothing);

  std::string type() const override { return all_or_nothing_ ? "AllOrNothingPruner" : "Pruner"; }
  std::string python_module() const override {
    return all_or_nothing_ ? "nn_executor.pruning.pruners" : "nn_executor.models";
  }
  // The legacy generation is written as the package then wrote it, without threshold and
  // num_of_appearances.
  std::string repr() const override;

  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  // activated=False passes the input through.
  std::optional<int> output_view_of(int out) const override {
    return activated_ ? std::nullopt : std::optional<int>(0);
  }
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;
  void init_params(RandomEngine& rng) override;
  std::string canonical_param_name(std::string_view key) const override;

  bool legacy() const { return legacy_.load(std::memory_order_relaxed); }
  void set_legacy(bool legacy) { legacy_.store(legacy, std::memory_order_relaxed); }

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;

 private:
  bool all_or_nothing_;
  int64_t channels_;
  bool prunable_, activated_;
  double threshold_;
  int64_t num_of_appearances_;
  // Set by canonical_param_name, which is const because the base class asks it on load.
  mutable std::atomic<bool> legacy_{false};
};

}  // namespace nnx
