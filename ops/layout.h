// This project's own data-movement ops (python module `nnx`, docs/FORMAT_EXTENSIONS.md), which
// torch.fx traces of real networks need: Reshape (a view when it can be), Permute (a
// contiguous copy) and Split (one contiguous output per piece).
#pragma once

#include <memory>
#include <vector>

#include "nnx/op.h"
#include "ops/structure.h"

namespace nnx {

// nnx.Reshape(shape=(0, -1)): the target shape, batch dim included; 0 copies the input's size
// at that position, one -1 is inferred.
class ReshapeOp : public ViewOp {
 public:
  explicit ReshapeOp(const Call& call);

  // Where the Executor finds the first dimension the batch at two batch sizes, each sample's
  // elements (contiguous) are reshaped on their own.
  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return "Reshape"; }
  std::string python_module() const override { return "nnx"; }
  std::string repr() const override;

  // Dim 1 is known when the target is rank 2 or 4 and gives it (a size, or 0 copying the
  // input's); any other result has no NCHW channels to speak of.
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;

 protected:
  // A view of the input when it is contiguous, else a reshaped copy.
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;

 private:
  Shape target(const Shape& input) const;
  std::vector<int64_t> shape_;
};

// nnx.Permute(dims=(0, 2, 3, 1)): as torch.permute, the result copied contiguous.
class PermuteOp : public Op {
 public:
  explicit PermuteOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    return !inputs.empty() && !dims_.empty() &&
           wrap_dim(dims_[0], int(inputs[0].shape.size())) == 0;
  }
  std::string type() const override { return "Permute"; }
  std::string python_module() const override { return "nnx"; }
  std::string repr() const override;

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
  // The inverse permutation of the output's gradient.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  std::vector<int64_t> dims_;  // as written (negative allowed)
  std::vector<int> order_;     // wrapped: output dim j is input dim order_[j]
};

// nnx.Split(sizes=[58, 58], dim=1): torch.split with a list of sizes; one output per size.
class SplitOp : public Op {
 public:
  explicit SplitOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    return !inputs.empty() && wrap_dim(dim_, int(inputs[0].shape.size())) != 0;
  }
  std::string type() const override { return "Split"; }
  std::string python_module() const override { return "nnx"; }
  std::string repr() const override;

  void check_arity(int num_inputs, int num_outputs) const override;
  // Along dim 1 the outputs have the sizes as channels (and the input needs their sum); along
  // another non-negative dim the channels pass through.
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
  // The outputs' gradients concatenated along dim.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  std::vector<int64_t> sizes_;
  int64_t dim_;
};

}  // namespace nnx
