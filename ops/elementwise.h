// Add, Sub and Mul of the original package (nn_executor.models): a left fold over all inputs
// with NumPy/PyTorch broadcasting; `num` is informative only.
#pragma once

#include <memory>

#include "kernels/cpu/elementwise.h"
#include "nnx/op.h"

namespace nnx {

class ActivationOp;

// The broadcast of two shapes as NumPy defines it; throws Error(shape) naming both.
Shape broadcast_shapes(const Shape& a, const Shape& b);

class BroadcastFoldOp : public Op {
 public:
  BroadcastFoldOp(const Call& call, cpu::BinaryOp kind);

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override;
  std::string python_module() const override { return "nn_executor.models"; }
  std::string repr() const override;

  void check_arity(int num_inputs, int num_outputs) const override;
  // The broadcast of the inputs' channel counts: equal, or 1 against anything.
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;
  // Mul reads its inputs, Add and Sub nothing.
  BackwardNeeds backward_needs() const override;
  // The first operand where it has the output's shape, and for Add and Mul (commutative to the
  // bit) the second: forward folds the other operand into it in place. Later operands are
  // read after the output's first write.
  std::vector<int> in_place_inputs(std::span<const TensorSpec> inputs,
                                   const TensorSpec& output) const override;

  // The forward on the CPU with `epilogue` applied to each stretch of the result as the last
  // input is folded in (Add+ReLU fused, graph/fusion.h).
  void forward_fused(const ExecContext& ctx, std::span<const Tensor> inputs,
                     const cpu::Epilogue& epilogue, Tensor& output) const;
  // The same on CUDA with `act` after it (ReLU inside the kernel for two operands of the
  // output's shape; other activations in place after).
  void forward_cuda_chain(const ExecContext& ctx, std::span<const Tensor> inputs,
                          const ActivationOp& act, Tensor& output) const;

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  // Each input's gradient is the output's (times the other factors for Mul, negated for Sub's
  // later inputs) summed over the dimensions the input was broadcast along.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;
  // On the device when no input was broadcast (and Mul has two inputs); else the CPU body.
  void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                     std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                     std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  cpu::BinaryOp kind_;
  int64_t num_;
};

}  // namespace nnx
