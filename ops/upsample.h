// torch.nn.Upsample (also nn_executor.models.Upsample) and its fixed-mode subclasses
// UpsamplingNearest2d and UpsamplingBilinear2d: F.interpolate on NCHW inputs.
#pragma once

#include <array>
#include <memory>
#include <optional>

#include "kernels/cpu/upsample.h"
#include "nnx/op.h"

namespace nnx {

class Upsample : public Op {
 public:
  // `type` is "Upsample", "UpsamplingNearest2d" or "UpsamplingBilinear2d".
  Upsample(const Call& call, std::string type);

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return type_; }
  std::string python_module() const override { return "torch.nn.modules.upsampling"; }
  std::string repr() const override { return repr_; }

  void check_arity(int num_inputs, int num_outputs) const override;
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
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  enum class Mode { nearest, nearest_exact, bilinear, bicubic, area };
  // Output size and the scale factors handed to the kernel (0: none) for an input shape.
  cpu::Resample2dShape geometry(const Shape& input) const;

  std::string type_, repr_;
  std::optional<std::array<int64_t, 2>> size_;
  std::optional<std::array<double, 2>> scale_factor_;
  Mode mode_ = Mode::nearest;
  bool align_corners_ = false;
  bool recompute_scale_factor_ = false;
};

std::shared_ptr<Op> make_upsample(const Call& call);
std::shared_ptr<Op> make_upsampling_nearest2d(const Call& call);
std::shared_ptr<Op> make_upsampling_bilinear2d(const Call& call);

}  // namespace nnx
