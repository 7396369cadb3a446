// torch.nn.Linear: y = x W^T + b over the last dimension of an input of any rank >= 1.
#pragma once

#include <memory>

#include "nnx/op.h"

namespace nnx {

class Linear : public Op {
 public:
  explicit Linear(const Call& call);

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return "Linear"; }
  std::string python_module() const override { return "torch.nn.modules.linear"; }
  std::string repr() const override;

  void check_arity(int num_inputs, int num_outputs) const override;
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;
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
  void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                     std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                     std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  int64_t in_features_, out_features_;
  bool has_bias_;
};

std::shared_ptr<Op> make_linear(const Call& call);

}  // namespace nnx
