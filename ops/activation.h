// The one-input activations of torch.nn (ReLU, LeakyReLU, ReLU6, Sigmoid, Tanh, SiLU, Hardswish,
// Hardsigmoid, ELU, GELU, Hardtanh, Softplus, Mish): arguments and reprs as PyTorch 1.13 has
// them; bodies in kernels/cpu/activation.h.
#pragma once

#include <memory>
#include <string>

#include "kernels/cpu/activation.h"
#include "nnx/op.h"

namespace nnx {

class ActivationOp : public Op {
 public:
  // `type` is the class name; `extra_repr` what PyTorch prints between the parentheses.
  ActivationOp(std::string type, cpu::Activation kind, cpu::ActivationArgs args,
               std::string extra_repr)
      : type_(std::move(type)), kind_(kind), args_(args), extra_repr_(std::move(extra_repr)) {}

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return type_; }
  std::string python_module() const override { return "torch.nn.modules.activation"; }
  std::string repr() const override { return type_ + "(" + extra_repr_ + ")"; }

  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;
  // The output for ReLU, ReLU6, Hardtanh, Sigmoid and Tanh, the input for the others.
  BackwardNeeds backward_needs() const override;

  cpu::Activation kind() const { return kind_; }
  const cpu::ActivationArgs& args() const { return args_; }

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;
  // Every kind on the device, with the CPU's formulas (kernels/cuda/activation.h).
  void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                     std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                     std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  std::string type_;
  cpu::Activation kind_;
  cpu::ActivationArgs args_;
  std::string extra_repr_;
};

}  // namespace nnx
