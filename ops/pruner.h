// The package's channel pruners, Pruner (nn_executor.models) and AllOrNothingPruner
// (nn_executor.pruning.pruners): a learned per-channel gate of shape (1, ch, 1, 1) multiplying
// an NCHW input; bodies in kernels/cpu/pruner.h.
#pragma once

#include <memory>
#include <vector>

#include "kernels/cpu/pruner.h"
#include "nnx/op.h"

namespace nnx {

// Two generations of Pruner exist. The current one stores its gate as "pruner_weight" and
// computes x * sigmoid(100w - 86) * w * (w > threshold); the legacy one stored "weights" and
// computed x * sigmoid(100w - 86) * w^2. The generation follows the key the state dict gives,
// and the parameter keeps that key, so that a saved model is read back as the same generation.
// Without a state dict the gate starts just below 1 and the generation is the current one.
// AllOrNothingPruner has one formula whichever key it is loaded from.
class PrunerOp : public Op {
 public:
  PrunerOp(const Call& call, bool all_or_nothing);

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
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
  void set_param(std::string_view key, const Tensor& value) override;

  bool legacy() const { return legacy_; }
  // The input, for the gate's gradient.
  BackwardNeeds backward_needs() const override { return {true, false}; }

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  // grad_input = grad_output * gate; the gate's weight gets the gradient PyTorch's autograd
  // gives the formula (zero when not activated: the weight is unused).
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  bool all_or_nothing_;
  int64_t channels_;
  bool prunable_, activated_;
  double threshold_;
  int64_t num_of_appearances_;
  bool legacy_ = false;
  std::vector<float> gate_;  // per-channel factor, computed whenever the weights change

  cpu::PrunerGate gate_kind() const;
  void update_gate();
};

}  // namespace nnx
