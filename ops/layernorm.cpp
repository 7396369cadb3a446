// torch.nn.LayerNorm (see layernorm.h); the body is kernels/cpu/layernorm.h.
#include "ops/layernorm.h"

#include "kernels/cpu/layernorm.h"
#include "nnx/error.h"
#include "ops/layer_args.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/normalization.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

LayerNormOp::LayerNormOp(const Call& call) {
  // torch 1.13's signature, with the bias keyword that torch 2.1 added before device.
  Args args(call, {{"normalized_shape", true},
                   {"eps"},
                   {"elementwise_affine"},
                   {"bias"},
                   {"device"},
                   {"dtype"}});
  layer_args::check_factory_kwargs(args, "LayerNorm");
  const Value* shape = args.get("normalized_shape");
  if (shape == nullptr || !(shape->is_int() || shape->is_sequence()))
    args.bad_type("normalized_shape", "an int or a tuple of ints");
  normalized_shape_ = Shape(args.get_ints("normalized_shape", 0, {}));
  NNX_CHECK(normalized_shape_.size() >= 1, ErrorKind::format,
            "LayerNorm: normalized_shape must list at least one size");
  for (int64_t s : normalized_shape_)
    NNX_CHECK(s > 0, ErrorKind::format,
              "LayerNorm: normalized_shape must hold positive sizes, got ",
              op_util::tuple_repr(normalized_shape_.span()));
  eps_ = args.get_double("eps", 1e-5);
  NNX_CHECK(eps_ >= 0, ErrorKind::format, "LayerNorm: eps must not be negative, got ",
            op_util::float_repr(eps_));
  const Value* eps = args.get("eps");
  eps_repr_ = eps == nullptr  ? "1e-05"
              : eps->is_int() ? std::to_string(eps->as_int())
                              : op_util::float_repr(eps_);
  elementwise_affine_ = args.get_bool("elementwise_affine", true);
  has_bias_ = elementwise_affine_ && args.get_bool("bias", true);
  if (elementwise_affine_) add_param("weight", normalized_shape_);
  if (has_bias_) add_param("bias", normalized_shape_);
  RandomEngine unused;
  init_params(unused);
}

std::string LayerNormOp::repr() const {
  return "LayerNorm(" + op_util::tuple_repr(normalized_shape_.span()) + ", eps=" + eps_repr_ +
         ", elementwise_affine=" + (elementwise_affine_ ? "True" : "False") + ")";
}

std::vector<int64_t> LayerNormOp::infer_channels(std::span<const int64_t> in_channels,
                                                 int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  return {in_channels[0]};
}

std::vector<TensorSpec> LayerNormOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                  int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Shape& in = inputs[0].shape;
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported,
            "LayerNorm takes float32 input, found ", dtype_name(inputs[0].dtype));
  const int n = normalized_shape_.size();
  bool matches = in.size() >= n;
  for (int k = 0; matches && k < n; ++k) matches = in[in.size() - n + k] == normalized_shape_[k];
  std::string expected = "[*";
  for (int64_t s : normalized_shape_) expected += ", " + std::to_string(s);
  NNX_CHECK(matches, ErrorKind::shape,
            "LayerNorm: normalized_shape=", op_util::tuple_repr(normalized_shape_.span()),
            " expects an input of shape ", expected, "], found ", in.str());
  return {inputs[0]};
}

int64_t LayerNormOp::flops(std::span<const TensorSpec> inputs, std::span<const TensorSpec>) const {
  return inputs.empty() ? 0 : 6 * inputs[0].shape.numel();
}

void LayerNormOp::init_params(RandomEngine&) {
  if (elementwise_affine_) mutable_param("weight").fill(1.0);
  if (has_bias_) mutable_param("bias").fill(0.0);
}

void LayerNormOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                              std::span<Tensor> outputs) const {
  const Tensor x = inputs[0].contiguous();
  const int64_t n = normalized_shape_.numel();
  const Tensor weight = elementwise_affine_ ? find_param("weight")->value.contiguous() : Tensor();
  const Tensor bias = has_bias_ ? find_param("bias")->value.contiguous() : Tensor();
  cpu::layer_norm(
      x.data<float>(), x.numel() / n, n, elementwise_affine_ ? weight.data<float>() : nullptr,
      has_bias_ ? bias.data<float>() : nullptr, float(eps_), outputs[0].data<float>(), ctx.pool);
}

void LayerNormOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                               std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                               std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  const Tensor x = inputs[0].contiguous();
  const Tensor grad_output = grad_outputs[0].contiguous();
  const int64_t n = normalized_shape_.numel();
  const Tensor weight = elementwise_affine_ ? find_param("weight")->value.contiguous() : Tensor();
  float* grad_weight = nullptr;
  float* grad_bias = nullptr;
  for (size_t k = 0; k < grad_params.size() && k < params().size(); ++k) {
    if (!grad_params[k].defined()) continue;
    if (params()[k].name == "weight") grad_weight = grad_params[k].data<float>();
    if (params()[k].name == "bias") grad_bias = grad_params[k].data<float>();
  }
  const bool want_input = !grad_inputs.empty() && grad_inputs[0].defined();
  cpu::layer_norm_backward(
      x.data<float>(), n == 0 ? 0 : x.numel() / n, n,
      elementwise_affine_ ? weight.data<float>() : nullptr, float(eps_), grad_output.data<float>(),
      want_input ? grad_inputs[0].data<float>() : nullptr, grad_weight, grad_bias, ctx.pool);
}

std::shared_ptr<Op> make_layer_norm(const Call& call) {
  return std::make_shared<LayerNormOp>(call);
}

void LayerNormOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                               std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "LayerNorm");
  const Tensor x = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const int64_t n = normalized_shape_.numel();
  const Tensor weight = elementwise_affine_
                            ? cuda::device_param(find_param("weight")->value, scope.device())
                            : Tensor();
  const Tensor bias =
      has_bias_ ? cuda::device_param(find_param("bias")->value, scope.device()) : Tensor();
  if (n == 0) return;
  cuda::layer_norm(x.data<float>(), x.numel() / n, n,
                   elementwise_affine_ ? weight.data<float>() : nullptr,
                   has_bias_ ? bias.data<float>() : nullptr, float(eps_), output, scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
