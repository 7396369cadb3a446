// Factories of the activations: each binds PyTorch's constructor signature and keeps the repr
// PyTorch would print (numbers as given, so LeakyReLU(negative_slope=1) stays an int).
#include "ops/activation.h"

#include "kernels/cpu/activation_grad.h"
#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/activation.h"
#include "kernels/cuda/train.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {
namespace {

// A numeric argument as Python's str() shows it in an extra_repr: as given, else the default.
std::string number_text(const Args& args, std::string_view name, std::string fallback) {
  const Value* v = args.get(name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) args.bad_type(name, "a number");
  return v->repr();
}

std::string inplace_suffix(const Args& args, bool first) {
  if (!args.get_bool("inplace", false)) return "";
  return first ? "inplace=True" : ", inplace=True";
}

std::shared_ptr<Op> make(std::string type, cpu::Activation kind, cpu::ActivationArgs a = {},
                         std::string extra = "") {
  return std::make_shared<ActivationOp>(std::move(type), kind, a, std::move(extra));
}

}  // namespace

std::vector<TensorSpec> ActivationOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                   int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported, type_,
            ": expected a float32 input, found ", dtype_name(inputs[0].dtype));
  return {inputs[0]};
}

int64_t ActivationOp::flops(std::span<const TensorSpec> inputs,
                            std::span<const TensorSpec> outputs) const {
  return inputs.empty() ? 0 : inputs[0].shape.numel();
}

void ActivationOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                               std::span<Tensor> outputs) const {
  Tensor x = inputs[0].contiguous();
  cpu::activation(kind_, args_, x.data<float>(), outputs[0].data<float>(), x.numel(), ctx.pool);
}

BackwardNeeds ActivationOp::backward_needs() const {
  const bool output = cpu::activation_backward_uses_output(kind_);
  return {!output, output};
}

void ActivationOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                                std::span<const Tensor> outputs,
                                std::span<const Tensor> grad_outputs, std::span<Tensor> grad_inputs,
                                std::span<Tensor>) const {
  if (!grad_inputs[0].defined()) return;
  Tensor v = (cpu::activation_backward_uses_output(kind_) ? outputs[0] : inputs[0]).contiguous();
  Tensor g = grad_outputs[0].contiguous();
  cpu::activation_backward(kind_, args_, v.data<float>(), g.data<float>(),
                           grad_inputs[0].data<float>(), v.numel(), ctx.pool);
}

std::shared_ptr<Op> make_relu(const Call& call) {
  Args args(call, {{"inplace"}});
  return make("ReLU", cpu::Activation::relu, {}, inplace_suffix(args, true));
}

std::shared_ptr<Op> make_relu6(const Call& call) {
  Args args(call, {{"inplace"}});
  cpu::ActivationArgs a;
  a.lo = 0;
  a.hi = 6;
  return make("ReLU6", cpu::Activation::hardtanh, a, inplace_suffix(args, true));
}

std::shared_ptr<Op> make_leaky_relu(const Call& call) {
  Args args(call, {{"negative_slope"}, {"inplace"}});
  cpu::ActivationArgs a;
  a.alpha = float(args.get_double("negative_slope", 0.01));
  return make("LeakyReLU", cpu::Activation::leaky_relu, a,
              "negative_slope=" + number_text(args, "negative_slope", "0.01") +
                  inplace_suffix(args, false));
}

std::shared_ptr<Op> make_hardtanh(const Call& call) {
  // min_value and max_value are PyTorch's deprecated spellings, taking precedence when given.
  Args args(call, {{"min_val"}, {"max_val"}, {"inplace"}, {"min_value"}, {"max_value"}});
  const char* lo_name = args.has("min_value") ? "min_value" : "min_val";
  const char* hi_name = args.has("max_value") ? "max_value" : "max_val";
  cpu::ActivationArgs a;
  double lo = args.get_double(lo_name, -1.0), hi = args.get_double(hi_name, 1.0);
  NNX_CHECK(hi > lo, ErrorKind::format,
            "Hardtanh: expected max_val > min_val, found min_val=", op_util::float_repr(lo),
            " and max_val=", op_util::float_repr(hi));
  a.lo = float(lo);
  a.hi = float(hi);
  return make("Hardtanh", cpu::Activation::hardtanh, a,
              "min_val=" + number_text(args, lo_name, "-1.0") +
                  ", max_val=" + number_text(args, hi_name, "1.0") + inplace_suffix(args, false));
}

std::shared_ptr<Op> make_sigmoid(const Call& call) {
  Args args(call, {});
  return make("Sigmoid", cpu::Activation::sigmoid);
}

std::shared_ptr<Op> make_tanh(const Call& call) {
  Args args(call, {});
  return make("Tanh", cpu::Activation::tanh);
}

std::shared_ptr<Op> make_silu(const Call& call) {
  Args args(call, {{"inplace"}});
  return make("SiLU", cpu::Activation::silu, {}, inplace_suffix(args, true));
}

std::shared_ptr<Op> make_mish(const Call& call) {
  Args args(call, {{"inplace"}});
  return make("Mish", cpu::Activation::mish, {}, inplace_suffix(args, true));
}

// Hardswish and Hardsigmoid take inplace but PyTorch does not print it.
std::shared_ptr<Op> make_hardswish(const Call& call) {
  Args args(call, {{"inplace"}});
  args.get_bool("inplace", false);
  return make("Hardswish", cpu::Activation::hardswish);
}

std::shared_ptr<Op> make_hardsigmoid(const Call& call) {
  Args args(call, {{"inplace"}});
  args.get_bool("inplace", false);
  return make("Hardsigmoid", cpu::Activation::hardsigmoid);
}

std::shared_ptr<Op> make_elu(const Call& call) {
  Args args(call, {{"alpha"}, {"inplace"}});
  cpu::ActivationArgs a;
  a.alpha = float(args.get_double("alpha", 1.0));
  return make("ELU", cpu::Activation::elu, a,
              "alpha=" + number_text(args, "alpha", "1.0") + inplace_suffix(args, false));
}

std::shared_ptr<Op> make_gelu(const Call& call) {
  Args args(call, {{"approximate"}});
  std::string approximate = args.get_text("approximate", "none");
  NNX_CHECK(approximate == "none" || approximate == "tanh", ErrorKind::format,
            "GELU: approximate must be 'none' or 'tanh', found '", approximate, "'");
  return make("GELU", approximate == "tanh" ? cpu::Activation::gelu_tanh : cpu::Activation::gelu,
              {}, "approximate='" + approximate + "'");
}

std::shared_ptr<Op> make_softplus(const Call& call) {
  Args args(call, {{"beta"}, {"threshold"}});
  cpu::ActivationArgs a;
  a.beta = float(args.get_double("beta", 1.0));
  a.threshold = float(args.get_double("threshold", 20.0));
  return make("Softplus", cpu::Activation::softplus, a,
              "beta=" + number_text(args, "beta", "1") +
                  ", threshold=" + number_text(args, "threshold", "20"));
}

void ActivationOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, type_);
  const Tensor x = scope.input(inputs[0]);
  cuda::activation(kind_, args_, x.data<float>(), scope.output(outputs[0]), x.numel(),
                   scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void ActivationOp::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                 std::span<const Tensor> outputs,
                                 std::span<const Tensor> grad_outputs,
                                 std::span<Tensor> grad_inputs,
                                 std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  (void)grad_params;
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const cuda::OpScope scope(ctx, type_);
  const Tensor v =
      scope.input(cpu::activation_backward_uses_output(kind_) ? outputs[0] : inputs[0]);
  const Tensor g = scope.input(grad_outputs[0]);
  cuda::activation_backward(kind_, args_, v.data<float>(), g.data<float>(),
                            scope.output(grad_inputs[0]), v.numel(), scope.stream());
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

}  // namespace nnx
