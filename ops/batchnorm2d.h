// torch.nn.BatchNorm2d in inference: running statistics when tracked, else the batch's own
// (as PyTorch does in eval mode with track_running_stats=False).
#pragma once

#include <memory>
#include <vector>

#include "nnx/op.h"

namespace nnx {

class BatchNorm2d : public Op {
 public:
  explicit BatchNorm2d(const Call& call);

  // Inference only: a training forward (nnx::Trainer) normalises with the batch's statistics.
  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return "BatchNorm2d"; }
  std::string python_module() const override { return "torch.nn.modules.batchnorm"; }
  std::string repr() const override;

  void check_arity(int num_inputs, int num_outputs) const override;
  std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                      int num_outputs) const override;
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                       int num_outputs) const override;
  int64_t flops(std::span<const TensorSpec> inputs,
                std::span<const TensorSpec> outputs) const override;
  void init_params(RandomEngine& rng) override;
  BackwardNeeds backward_needs() const override { return {true, false}; }

  int64_t num_features() const { return num_features_; }
  // In inference with running statistics batch norm is y = scale * x + shift per channel;
  // without them (track_running_stats=False) it normalises with the batch's own and is not.
  bool inference_is_affine() const { return track_running_stats_; }
  // scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale, in double
  // (graph/fusion.h folds them into a preceding Conv2d). Needs inference_is_affine().
  void inference_affine(std::vector<double>& scale, std::vector<double>& shift) const;

 protected:
  void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                   std::span<Tensor> outputs) const override;
  void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<Tensor> outputs) const override;
  // With batch statistics (training, or no running statistics) the gradient flows through the
  // batch mean and variance; otherwise batch norm is a per-channel affine map.
  void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                    std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                    std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;
  void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                     std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                     std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const override;

 private:
  int64_t num_features_;
  double eps_;
  std::string eps_repr_, momentum_repr_;  // as PyTorch prints what it was given
  double momentum_ = 0.1;
  bool cumulative_average_ = false;  // momentum=None: running stats are plain averages
  bool affine_, track_running_stats_;
};

std::shared_ptr<Op> make_batchnorm2d(const Call& call);

}  // namespace nnx
