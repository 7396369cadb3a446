// torch.nn.Linear (see linear.h); the body is kernels/cpu/linear.
#include "ops/linear.h"

#include <cmath>

#include "kernels/cpu/linear.h"
#include "nnx/error.h"
#include "ops/layer_args.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/linear.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

Linear::Linear(const Call& call) {
  Args args(call, {{"in_features", true}, {"out_features", true}, {"bias"}, {"device"}, {"dtype"}});
  layer_args::check_factory_kwargs(args, "Linear");
  in_features_ = args.get_int("in_features", 0);
  out_features_ = args.get_int("out_features", 0);
  has_bias_ = args.get_bool("bias", true);
  NNX_CHECK(in_features_ >= 0 && out_features_ >= 0, ErrorKind::format,
            "Linear: in_features and out_features must not be negative, got ", in_features_,
            " and ", out_features_);
  add_param("weight", Shape{out_features_, in_features_});
  if (has_bias_) add_param("bias", Shape{out_features_});
}

std::string Linear::repr() const {
  return "Linear(in_features=" + std::to_string(in_features_) +
         ", out_features=" + std::to_string(out_features_) +
         ", bias=" + (has_bias_ ? "True" : "False") + ")";
}

void Linear::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, 1);
  op_util::expect_outputs(num_outputs, 1, 1);
}

// Channels are dim 1 of a tensor, which for a Linear's usual [batch, features] input are its
// features: a known count must be in_features. Where dim 1 is not known (a channels-last
// tensor after a Permute: the validator passes kUnknownChannels), the output's dim 1 is not
// known either (out_features on rank 2, the input's dim 1 on higher ranks), and infer_shapes
// makes the check once shapes are known.
std::vector<int64_t> Linear::infer_channels(std::span<const int64_t> in_channels,
                                            int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  if (in_channels[0] == kUnknownChannels) return {kUnknownChannels};
  op_util::expect_channels(in_features_, in_channels[0], "input features");
  return {out_features_};
}

std::vector<TensorSpec> Linear::infer_shapes(std::span<const TensorSpec> inputs,
                                             int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Shape& in = inputs[0].shape;
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported,
            "Linear takes float32 input, found ", dtype_name(inputs[0].dtype));
  NNX_CHECK(in.size() >= 1, ErrorKind::shape,
            "Linear: expected an input of rank 1 or more, found a scalar");
  NNX_CHECK(in.back() == in_features_, ErrorKind::shape, "Linear: expected ", in_features_,
            " input features in the last dimension, found ", in.back(), " (input shape ", in.str(),
            ")");
  Shape out = in;
  out[out.size() - 1] = out_features_;
  return {TensorSpec{out, DType::f32}};
}

int64_t Linear::flops(std::span<const TensorSpec> inputs,
                      std::span<const TensorSpec> outputs) const {
  if (outputs.empty()) return 0;
  return 2 * outputs[0].shape.numel() * in_features_;
}

void Linear::init_params(RandomEngine& rng) {
  // kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as does the bias.
  if (in_features_ == 0) return;
  const float bound = 1.0f / std::sqrt(float(in_features_));
  std::uniform_real_distribution<float> dist(-bound, bound);
  for (const char* name : {"weight", "bias"}) {
    if (!has_bias_ && std::string_view(name) == "bias") continue;
    Tensor& t = mutable_param(name);
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  }
}

void Linear::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                         std::span<Tensor> outputs) const {
  const Tensor input = inputs[0].contiguous();
  const Tensor weight = params()[0].value.contiguous();
  const Tensor bias = has_bias_ ? params()[1].value.contiguous() : Tensor();
  const int64_t rows = in_features_ == 0 ? outputs[0].numel() / std::max<int64_t>(1, out_features_)
                                         : input.numel() / in_features_;
  cpu::linear(rows, in_features_, out_features_, input.data<float>(), weight.data<float>(),
              has_bias_ ? bias.data<float>() : nullptr, outputs[0].data<float>(), ctx.pool);
}

void Linear::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                          std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  const bool want_input = !grad_inputs.empty() && grad_inputs[0].defined();
  const bool want_weight = !grad_params.empty() && grad_params[0].defined();
  const bool want_bias = has_bias_ && grad_params.size() > 1 && grad_params[1].defined();
  const Tensor input = inputs[0].contiguous();
  const Tensor weight = params()[0].value.contiguous();
  const Tensor grad_output = grad_outputs[0].contiguous();
  const int64_t rows = in_features_ > 0 ? input.numel() / in_features_
                                        : grad_output.numel() / std::max<int64_t>(1, out_features_);
  cpu::linear_backward(rows, in_features_, out_features_, input.data<float>(), weight.data<float>(),
                       grad_output.data<float>(),
                       want_input ? grad_inputs[0].data<float>() : nullptr,
                       want_weight ? grad_params[0].data<float>() : nullptr,
                       want_bias ? grad_params[1].data<float>() : nullptr, ctx.pool);
}

std::shared_ptr<Op> make_linear(const Call& call) {
  return std::make_shared<Linear>(call);
}

void Linear::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Linear");
  const Tensor input = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const Tensor weight = cuda::device_param(params()[0].value, scope.device());
  const Tensor bias = has_bias_ ? cuda::device_param(params()[1].value, scope.device()) : Tensor();
  const int64_t rows = in_features_ == 0 ? outputs[0].numel() / std::max<int64_t>(1, out_features_)
                                         : input.numel() / in_features_;
  cuda::linear(rows, in_features_, out_features_, input.data<float>(), weight.data<float>(),
               has_bias_ ? bias.data<float>() : nullptr, output, scope.stream(), ctx.allow_tf32);
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void Linear::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                           std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  (void)outputs;
  const bool want_input = !grad_inputs.empty() && grad_inputs[0].defined();
  const bool want_weight = !grad_params.empty() && grad_params[0].defined();
  const bool want_bias = has_bias_ && grad_params.size() > 1 && grad_params[1].defined();
  if (!want_input && !want_weight && !want_bias) return;
  const cuda::OpScope scope(ctx, "Linear");
  const Tensor grad_output = scope.input(grad_outputs[0]);
  const Tensor input = want_weight ? scope.input(inputs[0]) : Tensor();
  const Tensor weight = cuda::device_param(params()[0].value, scope.device());
  const int64_t rows = in_features_ > 0 ? inputs[0].numel() / in_features_
                                        : grad_output.numel() / std::max<int64_t>(1, out_features_);
  cuda::linear_backward(rows, in_features_, out_features_,
                        want_weight ? input.data<float>() : nullptr, weight.data<float>(),
                        grad_output.data<float>(),
                        want_input ? scope.output(grad_inputs[0]) : nullptr,
                        want_weight ? scope.output(grad_params[0]) : nullptr,
                        want_bias ? scope.output(grad_params[1]) : nullptr, scope.stream());
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

}  // namespace nnx
