// torch.nn.MaxPool2d, AvgPool2d and AdaptiveAvgPool2d: arguments with PyTorch's defaults, its
// output-size rules (ceil_mode included), and the CPU forward (kernels/cpu/pooling.h).
#pragma once

#include <array>
#include <memory>
#include <optional>

#include "kernels/cpu/pooling.h"
#include "nnx/op.h"

namespace nnx {

// What the pooling ops share: one input, one output, channels pass through, rank-4 float32.
class Pool2dOp : public Op {
 public:
  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string python_module() const override { return "torch.nn.modules.pooling"; }
  void check_arity(int num_inputs, int num_outputs) const override;
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;

 protected:
  // Checks arity, rank and dtype of the input.
  void check_input(std::span<const TensorSpec> inputs, int num_outputs) const;
};

// A sliding-window pooling: kernel, stride, padding and dilation, with PyTorch's output size.
struct PoolWindow {
  std::array<int64_t, 2> kernel, stride, padding, dilation{1, 1};
  bool ceil_mode = false;
  // Output [N, C, out_h, out_w] for input [N, C, H, W]; throws Error(shape) when too small.
  cpu::Pool2dShape shape(std::string_view op, const Shape& input) const;
};

class MaxPool2d : public Pool2dOp {
 public:
  explicit MaxPool2d(const Call& call);
  std::string type() const override { return "MaxPool2d"; }
  std::string repr() const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;

  // With ctx.saved the forward keeps each output's argmax (int32, its index in the input
  // plane) and the backward scatters with it: neither the input nor the output is kept.
  BackwardNeeds backward_needs() const override { return {false, false}; }

  const PoolWindow& window() const { return window_; }

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
  PoolWindow window_;
  std::string repr_;
};

class AvgPool2d : public Pool2dOp {
 public:
  explicit AvgPool2d(const Call& call);
  std::string type() const override { return "AvgPool2d"; }
  std::string repr() const override { return repr_; }
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
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;
  void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                     std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                     std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  PoolWindow window_;
  bool count_include_pad_ = true;
  int64_t divisor_override_ = 0;  // 0: none
  std::string repr_;
};

class AdaptiveAvgPool2d : public Pool2dOp {
 public:
  explicit AdaptiveAvgPool2d(const Call& call);
  std::string type() const override { return "AdaptiveAvgPool2d"; }
  std::string repr() const override { return repr_; }
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
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;
  void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                     std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                     std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  std::array<std::optional<int64_t>, 2> output_size_;  // nullopt: the input's size
  std::string repr_;
};

std::shared_ptr<Op> make_maxpool2d(const Call& call);
std::shared_ptr<Op> make_avgpool2d(const Call& call);
std::shared_ptr<Op> make_adaptive_avgpool2d(const Call& call);

}  // namespace nnx
