// torch.nn.Conv2d: arguments as PyTorch's signature takes them, shape rules, parameters and the
// CPU forward (kernels/cpu/conv2d.h).
#pragma once

#include <array>
#include <memory>

#include "kernels/cpu/conv2d.h"
#include "nnx/op.h"

namespace nnx {

class ActivationOp;
namespace cuda {
class OpScope;
struct Conv2dParams;
}  // namespace cuda

struct PoolWindow;

class Conv2d : public Op {
 public:
  explicit Conv2d(const Call& call);

  bool batch_separable(std::span<const TensorSpec> /*inputs*/) const override { return true; }
  std::string type() const override { return "Conv2d"; }
  std::string python_module() const override { return "torch.nn.modules.conv"; }
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

  int64_t out_channels() const { return out_channels_; }
  // The convolution's shape with placeholder spatial sizes (an input as small as the dilated
  // kernel): what choosing a kernel path from the weights alone needs.
  cpu::Conv2dShape weight_geometry() const;
  // The output's shape for an NCHW input of this shape (as infer_shapes, without allocating).
  Shape output_shape(const Shape& input) const;
  bool has_bias() const { return has_bias_; }
  // The convolution's shape for an NCHW input of this shape (zero padding as PyTorch applies it;
  // other padding modes are applied by forward_fused before the kernel runs).
  cpu::Conv2dShape geometry(const Shape& input) const;
  cpu::PadMode padding_mode() const { return padding_mode_; }
  // Inference on the CPU with the given weight and bias (null: none) in place of the layer's
  // own, and `epilogue` applied to each output block: a Conv2d with its BatchNorm folded in and
  // its activation fused (graph/fusion.h). `output` is allocated as for forward.
  // `prepared` keeps rearranged weights between calls when they no longer change (kernels/cpu/
  // prepared.h); null: none are kept. With `max_pool`, a MaxPool2d with that window is applied
  // to the result band by band (cpu::conv2d_max_pool) and `output` is the pooled tensor.
  void forward_fused(const ExecContext& ctx, const Tensor& input, const float* weight,
                     const float* bias, const cpu::Epilogue& epilogue, Tensor& output,
                     cpu::ConvPrepared* prepared = nullptr,
                     const PoolWindow* max_pool = nullptr) const;
  // Inference on CUDA for a fused chain (graph/fusion.h): this convolution with `weight` and
  // `bias` (contiguous float32 on the device, bias defined) in place of its own, plus `skip` (a
  // residual of the output's shape; null: none), then `act` (null: none), into `output`. ReLU
  // chains are one cuDNN call (convolution, bias, residual and ReLU) where cuDNN takes them.
  void forward_cuda_chain(const ExecContext& ctx, const Tensor& input, const Tensor& weight,
                          const Tensor& bias, const Tensor* skip, const ActivationOp* act,
                          Tensor& output) const;

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
  enum class PaddingKind { explicit_sizes, same, valid };
  // Padding of each side for an input of this height and width, as PyTorch applies it.
  struct SidePadding {
    int64_t top, bottom, left, right;
  };
  SidePadding side_padding() const;
  // CUDA: whether cuDNN needs the input padded into a copy first (padding modes other than
  // zeros, or unequal sides), and that copy: `s` becomes the padded problem's shape; with `copy`
  // false only `s` changes and the input comes back as it is.
  bool needs_padded_copy() const;
#ifdef NNX_WITH_CUDA
  Tensor padded_for_cudnn(const cuda::OpScope& scope, const Tensor& input, cpu::Conv2dShape& s,
                          bool copy = true) const;
#endif

  int64_t in_channels_, out_channels_;
  std::array<int64_t, 2> kernel_size_, stride_, padding_{0, 0}, dilation_;
  PaddingKind padding_kind_ = PaddingKind::explicit_sizes;
  int64_t groups_;
  bool has_bias_;
  cpu::PadMode padding_mode_ = cpu::PadMode::zeros;
};

std::shared_ptr<Op> make_conv2d(const Call& call);

#ifdef NNX_WITH_CUDA
// The CUDA kernels' description of a convolution of this shape (zero padding, the same on both
// sides: cuDNN's only form).
cuda::Conv2dParams cuda_conv_params(const cpu::Conv2dShape& s);
#endif

}  // namespace nnx
