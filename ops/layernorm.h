// torch.nn.LayerNorm: normalisation over the trailing dims given by normalized_shape, of an
// input of any rank (ConvNeXt applies it channels-last, after a Permute).
#pragma once

#include <memory>

#include "nnx/op.h"

namespace nnx {

class LayerNormOp : public Op {
 public:
  explicit LayerNormOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    return !inputs.empty() && normalized_shape_.size() < int(inputs[0].shape.size());
  }
  std::string type() const override { return "LayerNorm"; }
  std::string python_module() const override { return "torch.nn.modules.normalization"; }
  std::string repr() const override;

  // The shape is kept, so dim 1 passes through; whether the trailing dims match
  // normalized_shape is only known with the shape (infer_shapes).
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;
  // weight = 1, bias = 0, as reset_parameters() leaves them.
  void init_params(RandomEngine& rng) override;

  BackwardNeeds backward_needs() const override { return {true, false}; }

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  Shape normalized_shape_;
  double eps_;
  std::string eps_repr_;  // as PyTorch prints what it was given
  bool elementwise_affine_, has_bias_;
};

}  // namespace nnx
