// torch.nn.MaxPool2d, AvgPool2d and AdaptiveAvgPool2d (see pooling.h). Reprs keep each argument
// as it was written, since PyTorch's modules store and print them unconverted.
#include "ops/pooling.h"

#include <limits>

#include "nnx/error.h"
#include "ops/layer_args.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/pooling.h"
#include "kernels/cuda/train.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

namespace {

// Python's str() of an argument as the module stores it, or `fallback` when absent or None.
std::string arg_repr(const Args& args, std::string_view name, const std::string& fallback) {
  const Value* value = args.get(name);
  return value == nullptr || value->is_none() ? fallback : value->repr();
}

int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

// PyTorch's pooling_output_shape: with ceil_mode, a last window that would start in the right
// padding is dropped.
int64_t pooled_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation,
                    bool ceil_mode) {
  int64_t out =
      floor_div(in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) +
      1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// Kernel, stride (default: the kernel), padding; and PyTorch's checks of them.
PoolWindow parse_window(const Args& args, std::string_view op) {
  PoolWindow w;
  w.kernel = layer_args::int_pair(args, "kernel_size", 1, true);
  w.stride = args.has("stride") ? layer_args::int_pair(args, "stride", 1, true) : w.kernel;
  w.padding = layer_args::int_pair(args, "padding", 0, true);
  w.ceil_mode = args.get_bool("ceil_mode", false);
  layer_args::expect_at_least(op, "kernel_size", w.kernel, 1);
  layer_args::expect_at_least(op, "stride", w.stride, 1);
  layer_args::expect_at_least(op, "padding", w.padding, 0);
  NNX_CHECK(w.kernel[0] / 2 >= w.padding[0] && w.kernel[1] / 2 >= w.padding[1], ErrorKind::format,
            op, ": pad should be smaller than or equal to half of kernel size, but got padding=",
            op_util::tuple_repr(w.padding), ", kernel_size=", op_util::tuple_repr(w.kernel));
  return w;
}

}  // namespace

cpu::Pool2dShape PoolWindow::shape(std::string_view op, const Shape& input) const {
  cpu::Pool2dShape s;
  s.planes = input[0] * input[1];
  s.in_h = input[2];
  s.in_w = input[3];
  s.kernel_h = kernel[0];
  s.kernel_w = kernel[1];
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.dilation_h = dilation[0];
  s.dilation_w = dilation[1];
  s.out_h = pooled_size(s.in_h, s.kernel_h, s.pad_h, s.stride_h, s.dilation_h, ceil_mode);
  s.out_w = pooled_size(s.in_w, s.kernel_w, s.pad_w, s.stride_w, s.dilation_w, ceil_mode);
  NNX_CHECK(s.out_h >= 1 && s.out_w >= 1, ErrorKind::shape, op, ": input size ", input.str(),
            " gives output size (", s.out_h, " x ", s.out_w, "), which is too small");
  return s;
}

void Pool2dOp::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, 1);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> Pool2dOp::infer_channels(std::span<const int64_t> in_channels,
                                              int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  return {in_channels[0]};
}

void Pool2dOp::check_input(std::span<const TensorSpec> inputs, int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  op_util::expect_rank(inputs[0], 4);
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported, type(),
            " takes float32 input, found ", dtype_name(inputs[0].dtype));
}

// ---- MaxPool2d

MaxPool2d::MaxPool2d(const Call& call) {
  Args args(call, {{"kernel_size", true},
                   {"stride"},
                   {"padding"},
                   {"dilation"},
                   {"return_indices"},
                   {"ceil_mode"}});
  window_ = parse_window(args, "MaxPool2d");
  window_.dilation = layer_args::int_pair(args, "dilation", 1, true);
  layer_args::expect_at_least("MaxPool2d", "dilation", window_.dilation, 1);
  NNX_CHECK(!args.get_bool("return_indices", false), ErrorKind::unsupported,
            "MaxPool2d: return_indices=True is not supported: the op has one output, the pooled "
            "values");
  const std::string kernel = arg_repr(args, "kernel_size", "");
  repr_ = "MaxPool2d(kernel_size=" + kernel + ", stride=" + arg_repr(args, "stride", kernel) +
          ", padding=" + arg_repr(args, "padding", "0") +
          ", dilation=" + arg_repr(args, "dilation", "1") +
          ", ceil_mode=" + arg_repr(args, "ceil_mode", "False") + ")";
}

std::string MaxPool2d::repr() const {
  return repr_;
}

std::vector<TensorSpec> MaxPool2d::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_input(inputs, num_outputs);
  const Shape& in = inputs[0].shape;
  const cpu::Pool2dShape s = window_.shape("MaxPool2d", in);
  return {TensorSpec{Shape{in[0], in[1], s.out_h, s.out_w}, DType::f32}};
}

int64_t MaxPool2d::flops(std::span<const TensorSpec> inputs,
                         std::span<const TensorSpec> outputs) const {
  return outputs.empty() ? 0 : outputs[0].shape.numel() * window_.kernel[0] * window_.kernel[1];
}

void MaxPool2d::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  const Tensor input = inputs[0].contiguous();
  const cpu::Pool2dShape s = window_.shape("MaxPool2d", input.shape());
  if (ctx.saved == nullptr) {
    cpu::max_pool2d(s, input.data<float>(), outputs[0].data<float>(), ctx.pool);
    return;
  }
  // Forward for a backward: the index in its plane of each output's element is kept, so that
  // the backward scatters without the input.
  NNX_CHECK(s.in_h * s.in_w <= std::numeric_limits<int32_t>::max(), ErrorKind::unsupported,
            "MaxPool2d: training needs input planes under 2^31 elements, found ", s.in_h, " x ",
            s.in_w);
  Tensor indices = Tensor::empty(outputs[0].shape(), DType::i32);
  cpu::max_pool2d_with_indices(s, input.data<float>(), outputs[0].data<float>(),
                               indices.data<int32_t>(), ctx.pool);
  ctx.saved->push_back(std::move(indices));
}

// ---- AvgPool2d

AvgPool2d::AvgPool2d(const Call& call) {
  Args args(call, {{"kernel_size", true},
                   {"stride"},
                   {"padding"},
                   {"ceil_mode"},
                   {"count_include_pad"},
                   {"divisor_override"}});
  window_ = parse_window(args, "AvgPool2d");
  count_include_pad_ = args.get_bool("count_include_pad", true);
  if (args.has("divisor_override")) {
    divisor_override_ = args.get_int("divisor_override", 0);
    NNX_CHECK(divisor_override_ != 0, ErrorKind::format,
              "AvgPool2d: divisor_override must be not zero");
  }
  const std::string kernel = arg_repr(args, "kernel_size", "");
  repr_ = "AvgPool2d(kernel_size=" + kernel + ", stride=" + arg_repr(args, "stride", kernel) +
          ", padding=" + arg_repr(args, "padding", "0");
  // PyTorch's repr stops there; the settings that change results follow when not the default,
  // so that a written file loses nothing.
  if (window_.ceil_mode) repr_ += ", ceil_mode=True";
  if (!count_include_pad_) repr_ += ", count_include_pad=False";
  if (divisor_override_ != 0) repr_ += ", divisor_override=" + std::to_string(divisor_override_);
  repr_ += ")";
}

std::vector<TensorSpec> AvgPool2d::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_input(inputs, num_outputs);
  const Shape& in = inputs[0].shape;
  const cpu::Pool2dShape s = window_.shape("AvgPool2d", in);
  return {TensorSpec{Shape{in[0], in[1], s.out_h, s.out_w}, DType::f32}};
}

int64_t AvgPool2d::flops(std::span<const TensorSpec> inputs,
                         std::span<const TensorSpec> outputs) const {
  return outputs.empty() ? 0 : outputs[0].shape.numel() * window_.kernel[0] * window_.kernel[1];
}

void AvgPool2d::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  const Tensor input = inputs[0].contiguous();
  const cpu::Pool2dShape s = window_.shape("AvgPool2d", input.shape());
  cpu::avg_pool2d(s, count_include_pad_, divisor_override_, input.data<float>(),
                  outputs[0].data<float>(), ctx.pool);
}

// ---- AdaptiveAvgPool2d

AdaptiveAvgPool2d::AdaptiveAvgPool2d(const Call& call) {
  Args args(call, {{"output_size", true}});
  const Value* value = args.get("output_size");
  NNX_CHECK(value != nullptr, ErrorKind::format,
            "AdaptiveAvgPool2d: output_size must be an int or a pair of ints, got None");
  auto entry = [&](const Value& v) -> std::optional<int64_t> {
    if (v.is_none()) return std::nullopt;
    if (!v.is_int()) args.bad_type("output_size", "an int or a pair of ints or None");
    NNX_CHECK(v.as_int() >= 0, ErrorKind::format,
              "AdaptiveAvgPool2d: output_size must not be negative, got ", value->repr());
    return v.as_int();
  };
  if (value->is_sequence()) {
    if (value->items().size() != 2) args.bad_type("output_size", "an int or a pair of ints");
    output_size_ = {entry(value->items()[0]), entry(value->items()[1])};
  } else {
    output_size_ = {entry(*value), entry(*value)};
  }
  repr_ = "AdaptiveAvgPool2d(output_size=" + value->repr() + ")";
}

std::vector<TensorSpec> AdaptiveAvgPool2d::infer_shapes(std::span<const TensorSpec> inputs,
                                                        int num_outputs) const {
  check_input(inputs, num_outputs);
  const Shape& in = inputs[0].shape;
  NNX_CHECK(in[2] > 0 && in[3] > 0, ErrorKind::shape,
            "AdaptiveAvgPool2d: expected an input with non-zero height and width, found ",
            in.str());
  return {TensorSpec{
      Shape{in[0], in[1], output_size_[0].value_or(in[2]), output_size_[1].value_or(in[3])},
      DType::f32}};
}

int64_t AdaptiveAvgPool2d::flops(std::span<const TensorSpec> inputs,
                                 std::span<const TensorSpec> outputs) const {
  return inputs.empty() ? 0 : inputs[0].shape.numel();
}

void AdaptiveAvgPool2d::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                                    std::span<Tensor> outputs) const {
  const Tensor input = inputs[0].contiguous();
  const Shape& in = input.shape();
  const Shape& out = outputs[0].shape();
  cpu::adaptive_avg_pool2d(in[0] * in[1], in[2], in[3], out[2], out[3], input.data<float>(),
                           outputs[0].data<float>(), ctx.pool);
}

void MaxPool2d::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                             std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                             std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const Tensor grad_output = grad_outputs[0].contiguous();
  const cpu::Pool2dShape s = window_.shape("MaxPool2d", grad_inputs[0].shape());
  if (ctx.saved != nullptr && !ctx.saved->empty()) {
    const Tensor& indices = ctx.saved->front();
    NNX_CHECK(indices.dtype() == DType::i32 && indices.shape() == grad_output.shape(),
              ErrorKind::usage, "MaxPool2d: backward: the forward's indices do not match");
    cpu::max_pool2d_backward_indices(s, indices.data<int32_t>(), grad_output.data<float>(),
                                     grad_inputs[0].data<float>(), ctx.pool);
    return;
  }
  // A forward that kept nothing (run without ctx.saved): the argmax from the input, if given.
  NNX_CHECK(!inputs.empty() && inputs[0].defined(), ErrorKind::usage,
            "MaxPool2d: backward needs the indices its forward keeps in ctx.saved, or the input");
  const Tensor input = inputs[0].contiguous();
  cpu::max_pool2d_backward(s, input.data<float>(), grad_output.data<float>(),
                           grad_inputs[0].data<float>(), ctx.pool);
}

void AvgPool2d::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                             std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                             std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const Tensor grad_output = grad_outputs[0].contiguous();
  const cpu::Pool2dShape s = window_.shape("AvgPool2d", grad_inputs[0].shape());
  cpu::avg_pool2d_backward(s, count_include_pad_, divisor_override_, grad_output.data<float>(),
                           grad_inputs[0].data<float>(), ctx.pool);
}

void AdaptiveAvgPool2d::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                                     std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                                     std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const Tensor grad_output = grad_outputs[0].contiguous();
  const Shape& in = grad_inputs[0].shape();
  const Shape& out = grad_output.shape();
  cpu::adaptive_avg_pool2d_backward(in[0] * in[1], in[2], in[3], out[2], out[3],
                                    grad_output.data<float>(), grad_inputs[0].data<float>(),
                                    ctx.pool);
}

std::shared_ptr<Op> make_maxpool2d(const Call& call) {
  return std::make_shared<MaxPool2d>(call);
}
std::shared_ptr<Op> make_avgpool2d(const Call& call) {
  return std::make_shared<AvgPool2d>(call);
}
std::shared_ptr<Op> make_adaptive_avgpool2d(const Call& call) {
  return std::make_shared<AdaptiveAvgPool2d>(call);
}

#ifdef NNX_WITH_CUDA
namespace {
// The window of a CPU pooling shape, for the CUDA kernels (kernels/cuda/pooling.h).
cuda::Pool2dGeometry cuda_geometry(const cpu::Pool2dShape& s) {
  cuda::Pool2dGeometry g;
  g.planes = s.planes;
  g.in_h = s.in_h;
  g.in_w = s.in_w;
  g.out_h = s.out_h;
  g.out_w = s.out_w;
  g.kernel_h = s.kernel_h;
  g.kernel_w = s.kernel_w;
  g.stride_h = s.stride_h;
  g.stride_w = s.stride_w;
  g.pad_h = s.pad_h;
  g.pad_w = s.pad_w;
  g.dilation_h = s.dilation_h;
  g.dilation_w = s.dilation_w;
  return g;
}
}  // namespace
#endif

void MaxPool2d::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                             std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "MaxPool2d");
  const Tensor input = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const cpu::Pool2dShape s = window_.shape("MaxPool2d", input.shape());
  const cuda::Pool2dGeometry g = cuda_geometry(s);
  if (ctx.saved == nullptr) {
    cuda::max_pool2d(g, input.data<float>(), output, scope.stream());
    return;
  }
  // Forward for a backward: each output's argmax in its plane is kept, as on the CPU.
  NNX_CHECK(s.in_h * s.in_w <= std::numeric_limits<int32_t>::max(), ErrorKind::unsupported,
            "MaxPool2d: training needs input planes under 2^31 elements, found ", s.in_h, " x ",
            s.in_w);
  Tensor indices = scope.empty(outputs[0].shape(), DType::i32);
  cuda::max_pool2d_with_indices(g, input.data<float>(), output, indices.data<int32_t>(),
                                scope.stream());
  ctx.saved->push_back(std::move(indices));
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void MaxPool2d::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                              std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                              std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const bool native =
      ctx.saved != nullptr && !ctx.saved->empty() && ctx.saved->front().device() == ctx.device;
  if (!native) {
    backward_on_host(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
    return;
  }
  const cuda::OpScope scope(ctx, "MaxPool2d");
  const Tensor grad_output = scope.input(grad_outputs[0]);
  const Tensor& indices = ctx.saved->front();
  NNX_CHECK(indices.dtype() == DType::i32 && indices.shape() == grad_output.shape() &&
                indices.is_contiguous(),
            ErrorKind::usage, "MaxPool2d: backward: the forward's indices do not match");
  const cpu::Pool2dShape s = window_.shape("MaxPool2d", grad_inputs[0].shape());
  cuda::max_pool2d_backward_indices(cuda_geometry(s), indices.data<int32_t>(),
                                    grad_output.data<float>(), scope.output(grad_inputs[0]),
                                    scope.stream());
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

void AvgPool2d::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                             std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "AvgPool2d");
  const Tensor input = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const cpu::Pool2dShape s = window_.shape("AvgPool2d", input.shape());
  const cuda::Pool2dGeometry g = cuda_geometry(s);
  cuda::avg_pool2d(g, count_include_pad_, divisor_override_, input.data<float>(), output,
                   scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void AdaptiveAvgPool2d::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                     std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "AdaptiveAvgPool2d");
  const Tensor input = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const Shape& in = input.shape();
  const Shape& out = outputs[0].shape();
  cuda::adaptive_avg_pool2d(in[0] * in[1], in[2], in[3], out[2], out[3], input.data<float>(),
                            output, scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void AvgPool2d::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                              std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                              std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const cuda::OpScope scope(ctx, "AvgPool2d");
  const Tensor grad_output = scope.input(grad_outputs[0]);
  const cpu::Pool2dShape s = window_.shape("AvgPool2d", grad_inputs[0].shape());
  cuda::avg_pool2d_backward(cuda_geometry(s), count_include_pad_, divisor_override_,
                            grad_output.data<float>(), scope.output(grad_inputs[0]),
                            scope.stream());
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

void AdaptiveAvgPool2d::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                      std::span<const Tensor> outputs,
                                      std::span<const Tensor> grad_outputs,
                                      std::span<Tensor> grad_inputs,
                                      std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const cuda::OpScope scope(ctx, "AdaptiveAvgPool2d");
  const Tensor grad_output = scope.input(grad_outputs[0]);
  const Shape& in = grad_inputs[0].shape();
  const Shape& out = grad_output.shape();
  cuda::adaptive_avg_pool2d_backward(in[0] * in[1], in[2], in[3], out[2], out[3],
                                     grad_output.data<float>(), scope.output(grad_inputs[0]),
                                     scope.stream());
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

}  // namespace nnx
