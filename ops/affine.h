// nnx.Affine(scale=0.5, shift=3.0): y = x * scale + shift, the form torch.fx traces of
// tensor-scalar arithmetic take (x * 0.5, x + 3, x / 6, 3 - x).
#pragma once

#include <memory>

#include "nnx/op.h"

namespace nnx {

class AffineOp : public Op {
 public:
  explicit AffineOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return "Affine"; }
  std::string python_module() const override { return "nnx"; }
  // Both numbers as Python's repr(float) prints them: "Affine(scale=0.16666666666666666,
  // shift=0.0)".
  std::string repr() const override;

  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;
  BackwardNeeds backward_needs() const override { return {false, false}; }

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  // grad_input = grad_output * scale.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  double scale_, shift_;
};

}  // namespace nnx
