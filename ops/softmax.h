// torch.nn.Softmax and LogSoftmax, including PyTorch's legacy implicit dim (dim=None); bodies in
// kernels/cpu/softmax.h.
#pragma once

#include <memory>
#include <optional>

#include "nnx/op.h"

namespace nnx {

class SoftmaxOp : public Op {
 public:
  SoftmaxOp(const Call& call, bool log);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    return !inputs.empty() && reduced_dim(int(inputs[0].shape.size())) != 0;
  }
  std::string type() const override { return log_ ? "LogSoftmax" : "Softmax"; }
  std::string python_module() const override { return "torch.nn.modules.activation"; }
  std::string repr() const override;

  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;

  // Backward reads the output only.
  BackwardNeeds backward_needs() const override { return {false, true}; }

  // The dimension reduced for an input of this rank (dim=None: 0 for ranks 0, 1, 3, else 1).
  int reduced_dim(int rank) const;

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  bool log_;
  std::optional<int64_t> dim_;
};

}  // namespace nnx
