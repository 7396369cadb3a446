// Constant(t) and Variable(t) of the original package: no inputs, one output, the tensor t
// (state key "t"; trainable for Variable). Without a state dict, t is the constructor's literal.
#pragma once

#include <memory>
#include <string_view>

#include "nnx/op.h"

namespace nnx {

class ConstantOp : public Op {
 public:
  // `trainable`: Variable (a parameter) rather than Constant (a buffer).
  ConstantOp(const Call& call, bool trainable);

  std::string type() const override { return trainable_ ? "Variable" : "Constant"; }
  std::string python_module() const override { return "nn_executor.models"; }
  // The shape and dtype as a zeros literal, the way the package wrote it
  // ("Constant(t=torch.zeros((1, 5),dtype=torch.float32))"); the values live in the state dict.
  std::string repr() const override;

  void check_arity(int num_inputs, int num_outputs) const override;
  // t's dimension 1 when it has one.
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  BackwardNeeds backward_needs() const override { return {false, false}; }

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  // Variable: t's gradient is the output's. Constant: nothing (no input, no parameter).
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  bool trainable_;
};

// The tensor a Constant/Variable literal stands for. The package's older reprs wrote the
// shape as `torch.tensor((1, 5), dtype=...)`, which Python reads as the values [1, 5] but which
// meant zeros of shape (1, 5) (ARCH_FORMAT.md section 8). Rule: when the source text spells the
// literal as torch.tensor followed by a parenthesised tuple, and the parsed tensor is 1-D with
// non-negative integral values, the result is zeros of that shape in the literal's dtype.
// Anything else (torch.zeros/ones, torch.tensor([...]) with a list) is taken as written.
Tensor constant_literal(const Tensor& parsed, std::string_view source_text);

}  // namespace nnx
