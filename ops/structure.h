// Ops that move or pass data without arithmetic: Cat (nn_executor.models), Identity (both
// torch.nn's and the package's, which passes several inputs through), Flatten and Unflatten,
// and the Dropout family and StochasticDepth, which are the identity at inference. All but Cat
// return views.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "nnx/op.h"

namespace nnx {

class CatOp : public Op {
 public:
  explicit CatOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    return !inputs.empty() && wrap_dim(dim_, int(inputs[0].shape.size())) != 0;
  }
  std::string type() const override { return "Cat"; }
  std::string python_module() const override { return "nn_executor.models"; }
  std::string repr() const override;

  void check_arity(int num_inputs, int num_outputs) const override;
  // dim=1 sums the channels; another non-negative dim needs equal channels; a negative dim
  // cannot be placed without the rank, so the result is unknown.
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  std::optional<int> concat_dim(int rank) const override;
  // Backward needs only the inputs' sizes along dim: from the gradients asked for, else from
  // what the forward saved.
  BackwardNeeds backward_needs() const override { return {false, false}; }

 protected:
  // Saves the inputs' sizes along dim when ctx.saved is given.
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
  // Each input's size along dim: from its gradient or input when given, else from the forward's
  // saved sizes, else (one unknown) what the others leave. Error(usage) if two are unknown.
  std::vector<int64_t> input_sizes(const ExecContext& ctx, std::span<const Tensor> inputs,
                                   std::span<const Tensor> grad_inputs, int64_t total) const;
  int64_t dim_;
};

// Outputs that are views of an input, whatever the device: forward only assigns them.
class ViewOp : public Op {
 public:
  // Output k views input 0 unless an op says otherwise (Identity: output k views input k).
  std::optional<int> output_view_of(int out) const override { return 0; }
  // The gradient passes through unchanged, reshaped: nothing of the forward is read.
  BackwardNeeds backward_needs() const override { return {false, false}; }

 protected:
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override {
    forward_cpu(ctx, inputs, outputs);
  }
  // grad_inputs[k] = grad_outputs[k] (for the output that views input k), reshaped.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;
  // The same copies on the device; with a saved mask (Dropout, StochasticDepth in training),
  // the CPU body.
  void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                     std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                     std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;
};

class IdentityOp : public ViewOp {
 public:
  explicit IdentityOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return "Identity"; }
  std::string python_module() const override { return module_; }
  std::string repr() const override { return "Identity()"; }

  // Any positive number of inputs, as many outputs.
  void check_arity(int num_inputs, int num_outputs) const override;
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  std::optional<int> output_view_of(int out) const override { return out; }

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;

 private:
  std::string module_;
};

class FlattenOp : public ViewOp {
 public:
  explicit FlattenOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    return !inputs.empty() && wrap_dim(start_dim_, int(inputs[0].shape.size())) != 0;
  }
  std::string type() const override { return "Flatten"; }
  std::string python_module() const override { return "torch.nn.modules.flatten"; }
  std::string repr() const override;

  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;

 private:
  Shape flattened(const Shape& in) const;  // the output shape (no heap vector per run)
  int64_t start_dim_, end_dim_;
};

class UnflattenOp : public ViewOp {
 public:
  explicit UnflattenOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    return !inputs.empty() && wrap_dim(dim_, int(inputs[0].shape.size())) != 0;
  }
  std::string type() const override { return "Unflatten"; }
  std::string python_module() const override { return "torch.nn.modules.flatten"; }
  std::string repr() const override;

  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;

 private:
  int64_t dim_;
  std::vector<int64_t> sizes_;  // at most one -1, inferred from the input
  std::string sizes_repr_;      // as given: a tuple or a list
};

// Dropout, Dropout1d, Dropout2d, Dropout3d: the identity at inference (the output is a view);
// a training forward multiplies by a mask drawn from ctx.rng (per element, or per channel for
// the feature dropouts, as PyTorch 1.13 shapes it) holding 0 or 1/(1-p), and saves the mask.
class DropoutOp : public ViewOp {
 public:
  DropoutOp(const Call& call, std::string type);

  // At inference the identity.
  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return type_; }
  std::string python_module() const override { return "torch.nn.modules.dropout"; }
  std::string repr() const override;

  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  // With a saved mask, grad_input = grad_output * mask; without one, grad_output.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  // The shape of one training draw for an input of this shape (size 1 where it broadcasts).
  Shape mask_shape(const Shape& input) const;
  std::string type_;
  double p_;
  std::string p_repr_;
  bool inplace_;
};

// nnx.StochasticDepth(p=0.1, mode=row): torchvision.ops.StochasticDepth, the identity at
// inference; in training, as torchvision.ops.stochastic_depth: one draw per sample (row) or one
// for the batch, kept with probability 1-p and scaled by 1/(1-p), the mask saved.
class StochasticDepthOp : public ViewOp {
 public:
  explicit StochasticDepthOp(const Call& call);

  // At inference the identity.
  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return "StochasticDepth"; }
  std::string python_module() const override { return "nnx"; }
  std::string repr() const override;

  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  double p_;
  std::string p_repr_, mode_;
};

}  // namespace nnx
