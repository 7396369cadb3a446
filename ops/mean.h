// nnx.Mean(dim=(2, 3), keepdim=False): the mean over the listed dims (negative allowed), as
// torch.mean; what torch.fx records for x.mean((2, 3)) in global pooling heads.
#pragma once

#include <memory>
#include <vector>

#include "nnx/op.h"

namespace nnx {

class MeanOp : public Op {
 public:
  explicit MeanOp(const Call& call);

  bool batch_separable(std::span<const TensorSpec> inputs) const override {
    if (inputs.empty() || dims_.empty()) return false;
    for (int64_t d : dims_)
      if (wrap_dim(d, int(inputs[0].shape.size())) == 0) return false;
    return true;
  }
  std::string type() const override { return "Mean"; }
  std::string python_module() const override { return "nnx"; }
  std::string repr() const override;

  // Channels pass through when dims 0 and 1 are kept; a reduced dim 1 kept as size 1 gives 1.
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
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
  // The output's gradient spread over the reduced dims, divided by their element count.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  // Which input dims are reduced; throws Error(shape) for a dim out of range or repeated.
  std::vector<bool> reduced_dims(const Shape& input) const;
  std::vector<int64_t> dims_;
  bool keepdim_;
};

}  // namespace nnx
