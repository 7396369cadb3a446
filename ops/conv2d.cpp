// torch.nn.Conv2d (see conv2d.h). Non-zero padding modes pad a copy of the input first, exactly
// as PyTorch's module does with F.pad before an unpadded convolution.
#include "ops/conv2d.h"

#include <cmath>

#include "nnx/error.h"
#include "ops/activation.h"
#include "ops/layer_args.h"
#include "ops/pooling.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/activation.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/elementwise.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

namespace {

cpu::PadMode parse_padding_mode(const std::string& mode) {
  if (mode == "zeros") return cpu::PadMode::zeros;
  if (mode == "reflect") return cpu::PadMode::reflect;
  if (mode == "replicate") return cpu::PadMode::replicate;
  if (mode == "circular") return cpu::PadMode::circular;
  fail(ErrorKind::format,
       "padding_mode must be one of {'zeros', 'reflect', 'replicate', 'circular'}, but got "
       "padding_mode='",
       mode, "'");
}

const char* padding_mode_name(cpu::PadMode mode) {
  switch (mode) {
    case cpu::PadMode::zeros:
      return "zeros";
    case cpu::PadMode::reflect:
      return "reflect";
    case cpu::PadMode::replicate:
      return "replicate";
    case cpu::PadMode::circular:
      return "circular";
  }
  return "zeros";
}

void fill_uniform(Tensor& t, float bound, RandomEngine& rng) {
  std::uniform_real_distribution<float> dist(-bound, bound);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
}

}  // namespace

Conv2d::Conv2d(const Call& call) {
  Args args(call, {{"in_channels", true},
                   {"out_channels", true},
                   {"kernel_size", true},
                   {"stride"},
                   {"padding"},
                   {"dilation"},
                   {"groups"},
                   {"bias"},
                   {"padding_mode"},
                   {"device"},
                   {"dtype"}});
  layer_args::check_factory_kwargs(args, "Conv2d");
  in_channels_ = args.get_int("in_channels", 0);
  out_channels_ = args.get_int("out_channels", 0);
  kernel_size_ = layer_args::int_pair(args, "kernel_size", 1);
  stride_ = layer_args::int_pair(args, "stride", 1);
  dilation_ = layer_args::int_pair(args, "dilation", 1);
  groups_ = args.get_int("groups", 1);
  has_bias_ = args.get_bool("bias", true);
  padding_mode_ = parse_padding_mode(args.get_text("padding_mode", "zeros"));

  if (const Value* padding = args.get("padding"); padding != nullptr && padding->is_text()) {
    if (padding->as_text() == "same")
      padding_kind_ = PaddingKind::same;
    else if (padding->as_text() == "valid")
      padding_kind_ = PaddingKind::valid;
    else
      fail(ErrorKind::format, "Invalid padding string '", padding->as_text(),
           "', should be one of {'valid', 'same'}");
  } else {
    padding_ = layer_args::int_pair(args, "padding", 0);
  }

  NNX_CHECK(in_channels_ > 0 && out_channels_ > 0, ErrorKind::format,
            "Conv2d: in_channels and out_channels must be positive, got ", in_channels_, " and ",
            out_channels_);
  layer_args::expect_at_least("Conv2d", "kernel_size", kernel_size_, 1);
  layer_args::expect_at_least("Conv2d", "stride", stride_, 1);
  layer_args::expect_at_least("Conv2d", "padding", padding_, 0);
  layer_args::expect_at_least("Conv2d", "dilation", dilation_, 1);
  NNX_CHECK(groups_ > 0, ErrorKind::format, "groups must be a positive integer, got ", groups_);
  NNX_CHECK(in_channels_ % groups_ == 0, ErrorKind::format,
            "in_channels must be divisible by groups (in_channels=", in_channels_,
            ", groups=", groups_, ")");
  NNX_CHECK(out_channels_ % groups_ == 0, ErrorKind::format,
            "out_channels must be divisible by groups (out_channels=", out_channels_,
            ", groups=", groups_, ")");
  NNX_CHECK(padding_kind_ != PaddingKind::same || (stride_[0] == 1 && stride_[1] == 1),
            ErrorKind::format, "padding='same' is not supported for strided convolutions (stride=",
            op_util::tuple_repr(stride_), ")");

  add_param("weight",
            Shape{out_channels_, in_channels_ / groups_, kernel_size_[0], kernel_size_[1]});
  if (has_bias_) add_param("bias", Shape{out_channels_});
}

std::string Conv2d::repr() const {
  std::string s = "Conv2d(" + std::to_string(in_channels_) + ", " + std::to_string(out_channels_) +
                  ", kernel_size=" + op_util::tuple_repr(kernel_size_) +
                  ", stride=" + op_util::tuple_repr(stride_);
  if (padding_kind_ == PaddingKind::same)
    s += ", padding=same";
  else if (padding_kind_ == PaddingKind::valid)
    s += ", padding=valid";
  else if (padding_[0] != 0 || padding_[1] != 0)
    s += ", padding=" + op_util::tuple_repr(padding_);
  if (dilation_[0] != 1 || dilation_[1] != 1) s += ", dilation=" + op_util::tuple_repr(dilation_);
  if (groups_ != 1) s += ", groups=" + std::to_string(groups_);
  if (!has_bias_) s += ", bias=False";
  if (padding_mode_ != cpu::PadMode::zeros)
    s += std::string(", padding_mode=") + padding_mode_name(padding_mode_);
  return s + ")";
}

void Conv2d::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, 1);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> Conv2d::infer_channels(std::span<const int64_t> in_channels,
                                            int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  op_util::expect_channels(in_channels_, in_channels[0]);
  return {out_channels_};
}

Conv2d::SidePadding Conv2d::side_padding() const {
  if (padding_kind_ == PaddingKind::valid) return {0, 0, 0, 0};
  if (padding_kind_ == PaddingKind::explicit_sizes)
    return {padding_[0], padding_[0], padding_[1], padding_[1]};
  // 'same': PyTorch puts the odd extra row/column of the total on the bottom/right.
  const int64_t total_h = dilation_[0] * (kernel_size_[0] - 1);
  const int64_t total_w = dilation_[1] * (kernel_size_[1] - 1);
  return {total_h / 2, total_h - total_h / 2, total_w / 2, total_w - total_w / 2};
}

Shape Conv2d::output_shape(const Shape& input) const {
  const cpu::Conv2dShape s = geometry(input);
  return Shape{s.batch, s.out_channels, s.out_h, s.out_w};
}

cpu::Conv2dShape Conv2d::weight_geometry() const {
  const SidePadding pad = side_padding();
  return geometry(
      Shape{1, in_channels_,
            std::max<int64_t>(1, dilation_[0] * (kernel_size_[0] - 1) + 1 - pad.top - pad.bottom),
            std::max<int64_t>(1, dilation_[1] * (kernel_size_[1] - 1) + 1 - pad.left - pad.right)});
}

cpu::Conv2dShape Conv2d::geometry(const Shape& input) const {
  const SidePadding pad = side_padding();
  const int64_t padded_h = input[2] + pad.top + pad.bottom;
  const int64_t padded_w = input[3] + pad.left + pad.right;
  const int64_t extent_h = dilation_[0] * (kernel_size_[0] - 1) + 1;
  const int64_t extent_w = dilation_[1] * (kernel_size_[1] - 1) + 1;
  NNX_CHECK(padded_h >= extent_h && padded_w >= extent_w, ErrorKind::shape,
            "Conv2d: padded input size per channel (", padded_h, " x ", padded_w,
            ") is smaller than the dilated kernel (", extent_h, " x ", extent_w, "), input shape ",
            input.str());
  cpu::Conv2dShape s;
  s.batch = input[0];
  s.in_channels = in_channels_;
  s.in_h = input[2];
  s.in_w = input[3];
  s.out_channels = out_channels_;
  s.out_h = (padded_h - extent_h) / stride_[0] + 1;
  s.out_w = (padded_w - extent_w) / stride_[1] + 1;
  s.kernel_h = kernel_size_[0];
  s.kernel_w = kernel_size_[1];
  s.stride_h = stride_[0];
  s.stride_w = stride_[1];
  s.pad_top = pad.top;
  s.pad_left = pad.left;
  s.dilation_h = dilation_[0];
  s.dilation_w = dilation_[1];
  s.groups = groups_;
  return s;
}

std::vector<TensorSpec> Conv2d::infer_shapes(std::span<const TensorSpec> inputs,
                                             int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  op_util::expect_rank(inputs[0], 4);
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported,
            "Conv2d takes float32 input, found ", dtype_name(inputs[0].dtype));
  const Shape& in = inputs[0].shape;
  op_util::expect_channels(in_channels_, in[1]);
  if (padding_mode_ != cpu::PadMode::zeros) {
    const SidePadding pad = side_padding();
    const int64_t most_h = std::max(pad.top, pad.bottom), most_w = std::max(pad.left, pad.right);
    if (padding_mode_ == cpu::PadMode::reflect)
      NNX_CHECK(most_h < in[2] && most_w < in[3], ErrorKind::shape, "Conv2d: reflect padding (",
                most_h, ", ", most_w,
                ") must be smaller than the input's height and width, input shape ", in.str());
    if (padding_mode_ == cpu::PadMode::circular)
      NNX_CHECK(most_h <= in[2] && most_w <= in[3], ErrorKind::shape, "Conv2d: circular padding (",
                most_h, ", ", most_w,
                ") must not exceed the input's height and width, input shape ", in.str());
    if (padding_mode_ == cpu::PadMode::replicate)
      NNX_CHECK((in[2] > 0 || most_h == 0) && (in[3] > 0 || most_w == 0), ErrorKind::shape,
                "Conv2d: replicate padding needs a non-empty input, input shape ", in.str());
  }
  const cpu::Conv2dShape s = geometry(in);
  return {TensorSpec{Shape{s.batch, out_channels_, s.out_h, s.out_w}, DType::f32}};
}

int64_t Conv2d::flops(std::span<const TensorSpec> inputs,
                      std::span<const TensorSpec> outputs) const {
  if (outputs.empty()) return 0;
  const int64_t macs_per_output = (in_channels_ / groups_) * kernel_size_[0] * kernel_size_[1];
  return 2 * outputs[0].shape.numel() * macs_per_output;
}

void Conv2d::init_params(RandomEngine& rng) {
  // kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as does the bias.
  const int64_t fan_in = (in_channels_ / groups_) * kernel_size_[0] * kernel_size_[1];
  const float bound = 1.0f / std::sqrt(float(fan_in));
  fill_uniform(mutable_param("weight"), bound, rng);
  if (has_bias_) fill_uniform(mutable_param("bias"), bound, rng);
}

void Conv2d::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                         std::span<Tensor> outputs) const {
  const Tensor weight = params()[0].value.contiguous();
  const Tensor bias = has_bias_ ? params()[1].value.contiguous() : Tensor();
  forward_fused(ctx, inputs[0], weight.data<float>(), has_bias_ ? bias.data<float>() : nullptr, {},
                outputs[0]);
}

void Conv2d::forward_fused(const ExecContext& ctx, const Tensor& input_tensor, const float* weight,
                           const float* bias, const cpu::Epilogue& epilogue, Tensor& output,
                           cpu::ConvPrepared* prepared, const PoolWindow* max_pool) const {
  Tensor input = input_tensor.contiguous();
  cpu::Conv2dShape s = geometry(input.shape());
  const SidePadding pad = side_padding();
  if (padding_mode_ != cpu::PadMode::zeros &&
      (pad.top != 0 || pad.bottom != 0 || pad.left != 0 || pad.right != 0)) {
    Tensor padded = Tensor::empty(Shape{s.batch, s.in_channels, s.in_h + pad.top + pad.bottom,
                                        s.in_w + pad.left + pad.right});
    cpu::pad2d(padding_mode_, input.data<float>(), s.batch * s.in_channels, s.in_h, s.in_w, pad.top,
               pad.bottom, pad.left, pad.right, padded.data<float>(), ctx.pool);
    input = padded;
    s.in_h = padded.size(2);
    s.in_w = padded.size(3);
    s.pad_top = s.pad_left = 0;
  }
  if (max_pool != nullptr) {
    const cpu::Pool2dShape p =
        max_pool->shape("MaxPool2d", Shape{s.batch, s.out_channels, s.out_h, s.out_w});
    return cpu::conv2d_max_pool(s, p, input.data<float>(), weight, bias, output.data<float>(),
                                ctx.pool, epilogue, prepared);
  }
  cpu::conv2d(s, input.data<float>(), weight, bias, output.data<float>(), ctx.pool, epilogue,
              prepared);
}

// Non-zero padding modes: the convolution's input gradient is that of the padded copy, folded
// back onto the elements the padding copied.
void Conv2d::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                          std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  const bool want_input = !grad_inputs.empty() && grad_inputs[0].defined();
  const bool want_weight = !grad_params.empty() && grad_params[0].defined();
  const bool want_bias = has_bias_ && grad_params.size() > 1 && grad_params[1].defined();
  if (!want_input && !want_weight && !want_bias) return;
  Tensor input = inputs[0].contiguous();
  const Tensor weight = params()[0].value.contiguous();
  const Tensor grad_output = grad_outputs[0].contiguous();
  cpu::Conv2dShape s = geometry(input.shape());
  const SidePadding pad = side_padding();
  const bool padded = padding_mode_ != cpu::PadMode::zeros &&
                      (pad.top != 0 || pad.bottom != 0 || pad.left != 0 || pad.right != 0);
  const int64_t in_h = s.in_h, in_w = s.in_w;
  if (padded) {
    s.in_h += pad.top + pad.bottom;
    s.in_w += pad.left + pad.right;
    s.pad_top = s.pad_left = 0;
    if (want_weight) {
      Tensor copy = Tensor::empty(Shape{s.batch, s.in_channels, s.in_h, s.in_w});
      cpu::pad2d(padding_mode_, input.data<float>(), s.batch * s.in_channels, in_h, in_w, pad.top,
                 pad.bottom, pad.left, pad.right, copy.data<float>(), ctx.pool);
      input = copy;
    }
  }
  Tensor grad_input;
  if (want_input)
    grad_input =
        padded ? Tensor::empty(Shape{s.batch, s.in_channels, s.in_h, s.in_w}) : grad_inputs[0];
  cpu::conv2d_backward(s, input.data<float>(), weight.data<float>(), grad_output.data<float>(),
                       want_input ? grad_input.data<float>() : nullptr,
                       want_weight ? grad_params[0].data<float>() : nullptr,
                       want_bias ? grad_params[1].data<float>() : nullptr, ctx.pool);
  if (want_input && padded)
    cpu::pad2d_backward(padding_mode_, grad_input.data<float>(), s.batch * s.in_channels, in_h,
                        in_w, pad.top, pad.bottom, pad.left, pad.right,
                        grad_inputs[0].data<float>(), ctx.pool);
}

std::shared_ptr<Op> make_conv2d(const Call& call) {
  return std::make_shared<Conv2d>(call);
}

#ifdef NNX_WITH_CUDA
cuda::Conv2dParams cuda_conv_params(const cpu::Conv2dShape& s) {
  cuda::Conv2dParams p;
  p.batch = s.batch;
  p.in_channels = s.in_channels;
  p.in_h = s.in_h;
  p.in_w = s.in_w;
  p.out_channels = s.out_channels;
  p.out_h = s.out_h;
  p.out_w = s.out_w;
  p.kernel_h = s.kernel_h;
  p.kernel_w = s.kernel_w;
  p.stride_h = s.stride_h;
  p.stride_w = s.stride_w;
  p.pad_h = s.pad_top;
  p.pad_w = s.pad_left;
  p.dilation_h = s.dilation_h;
  p.dilation_w = s.dilation_w;
  p.groups = s.groups;
  return p;
}

namespace {

cuda::ConvIo reduced_io(const ExecContext& ctx) {
  return ctx.conv_dtype == DType::f16 ? cuda::ConvIo::f16 : cuda::ConvIo::bf16;
}

cuda::PadMode cuda_pad_mode(cpu::PadMode mode) {
  return mode == cpu::PadMode::reflect     ? cuda::PadMode::reflect
         : mode == cpu::PadMode::replicate ? cuda::PadMode::replicate
         : mode == cpu::PadMode::circular  ? cuda::PadMode::circular
                                           : cuda::PadMode::zeros;
}

}  // namespace
#endif

bool Conv2d::needs_padded_copy() const {
  // cuDNN pads with zeros, the same on both sides: other modes and 'same' with an odd total
  // pad a copy of the input first, as the CPU does.
  const SidePadding pad = side_padding();
  const bool padded = pad.top != 0 || pad.bottom != 0 || pad.left != 0 || pad.right != 0;
  const bool symmetric = pad.top == pad.bottom && pad.left == pad.right;
  return padded && (padding_mode_ != cpu::PadMode::zeros || !symmetric);
}

#ifdef NNX_WITH_CUDA
Tensor Conv2d::padded_for_cudnn(const cuda::OpScope& scope, const Tensor& input,
                                cpu::Conv2dShape& s, bool copy) const {
  if (!needs_padded_copy()) return input;
  const SidePadding pad = side_padding();
  const int64_t in_h = s.in_h, in_w = s.in_w;
  s.in_h += pad.top + pad.bottom;
  s.in_w += pad.left + pad.right;
  s.pad_top = s.pad_left = 0;
  if (!copy) return input;
  Tensor padded = scope.empty(Shape{s.batch, s.in_channels, s.in_h, s.in_w});
  cuda::pad2d(cuda_pad_mode(padding_mode_), input.data<float>(), s.batch * s.in_channels, in_h,
              in_w, pad.top, pad.bottom, pad.left, pad.right, padded.data<float>(), scope.stream());
  return padded;
}
#endif

void Conv2d::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Conv2d");
  Tensor input = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const Tensor weight = cuda::device_param(params()[0].value, scope.device());
  const Tensor bias = has_bias_ ? cuda::device_param(params()[1].value, scope.device()) : Tensor();
  cpu::Conv2dShape s = geometry(input.shape());
  input = padded_for_cudnn(scope, input, s);
  cuda::Conv2dParams params = cuda_conv_params(s);
  params.allow_tf32 = ctx.allow_tf32;
  if (ctx.conv_dtype != DType::f32) {
    const Tensor rounded = cuda::device_param_as(weight, scope.device(), ctx.conv_dtype);
    cuda::conv2d_forward_reduced(params, reduced_io(ctx), input.data<float>(), rounded.raw_data(),
                                 has_bias_ ? bias.data<float>() : nullptr, output,
                                 scope.device().index, scope.stream());
    return;
  }
  cuda::conv2d_forward(params, input.data<float>(), weight.data<float>(),
                       has_bias_ ? bias.data<float>() : nullptr, output, scope.device().index,
                       scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void Conv2d::forward_cuda_chain(const ExecContext& ctx, const Tensor& input, const Tensor& weight,
                                const Tensor& bias, const Tensor* skip, const ActivationOp* act,
                                Tensor& output) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Conv2d");
  Tensor x = scope.input(input);
  float* y = scope.output(output);
  cpu::Conv2dShape s = geometry(x.shape());
  x = padded_for_cudnn(scope, x, s);
  cuda::Conv2dParams params = cuda_conv_params(s);
  params.allow_tf32 = ctx.allow_tf32;
  const Tensor w = scope.input(weight), b = scope.input(bias);
  const Tensor z = skip != nullptr ? scope.input(*skip) : Tensor();
  NNX_CHECK(!z.defined() || z.shape() == output.shape(), ErrorKind::shape,
            "Conv2d on CUDA: a fused residual of shape ", z.shape().str(), " for an output of ",
            output.shape().str());
  const bool relu = act != nullptr && act->kind() == cpu::Activation::relu;
  const bool aliased = z.defined() && z.raw_data() == output.raw_data();
  const int device = scope.device().index;
  const bool reduced = ctx.conv_dtype != DType::f32;
  if (!reduced && relu && !aliased &&
      cuda::conv2d_bias_relu_forward(params, x.data<float>(), w.data<float>(), b.data<float>(),
                                     z.defined() ? z.data<float>() : nullptr, y, device,
                                     scope.stream()))
    return;
  if (reduced && relu && !aliased &&
      cuda::conv2d_bias_relu_forward_reduced(
          params, reduced_io(ctx), x.data<float>(),
          cuda::device_param_as(weight, scope.device(), ctx.conv_dtype).raw_data(),
          b.defined() ? b.data<float>() : nullptr, z.defined() ? z.data<float>() : nullptr, y,
          device, scope.stream()))
    return;
  // The pieces: the convolution with its bias (into a buffer of its own where the residual
  // lies in the output), the residual added (with the ReLU), the activation in place.
  const int64_t n = output.numel();
  Tensor own = aliased ? scope.empty(output.shape()) : Tensor();
  float* conv_out = aliased ? own.data<float>() : y;
  if (reduced)
    cuda::conv2d_forward_reduced(
        params, reduced_io(ctx), x.data<float>(),
        cuda::device_param_as(weight, scope.device(), ctx.conv_dtype).raw_data(), b.data<float>(),
        conv_out, device, scope.stream());
  else
    cuda::conv2d_forward(params, x.data<float>(), w.data<float>(), b.data<float>(), conv_out,
                         device, scope.stream());
  if (z.defined())
    cuda::binary_same_shape(cuda::BinaryOp::add, relu, conv_out, z.data<float>(), y, n,
                            scope.stream());
  if (act != nullptr && !(relu && z.defined()))
    cuda::activation(act->kind(), act->args(), y, y, n, scope.stream());
#else
  (void)input;
  (void)weight;
  (void)bias;
  (void)skip;
  (void)act;
  (void)output;
  fail(ErrorKind::device, "Conv2d: ", ctx.device.str(), ": this build has no CUDA backend");
#endif
}

void Conv2d::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                           std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  const bool want_input = !grad_inputs.empty() && grad_inputs[0].defined();
  const bool want_weight = !grad_params.empty() && grad_params[0].defined();
  const bool want_bias = has_bias_ && grad_params.size() > 1 && grad_params[1].defined();
  (void)outputs;
  if (!want_input && !want_weight && !want_bias) return;
  const cuda::OpScope scope(ctx, "Conv2d");
  Tensor input = scope.input(inputs[0]);
  const Tensor grad_output = scope.input(grad_outputs[0]);
  const Tensor weight = cuda::device_param(params()[0].value, scope.device());
  cpu::Conv2dShape s = geometry(input.shape());
  const SidePadding pad = side_padding();
  // As the forward: modes cuDNN lacks run on a padded copy, whose gradient is folded back.
  const bool copy_padded = needs_padded_copy();
  const int64_t in_h = s.in_h, in_w = s.in_w;
  input = padded_for_cudnn(scope, input, s, want_weight);
  Tensor grad_input;
  if (want_input)
    grad_input =
        copy_padded ? scope.empty(Shape{s.batch, s.in_channels, s.in_h, s.in_w}) : grad_inputs[0];
  cuda::conv2d_backward(
      cuda_conv_params(s), want_weight ? input.data<float>() : nullptr, weight.data<float>(),
      grad_output.data<float>(), want_input ? scope.output(grad_input) : nullptr,
      want_weight ? scope.output(grad_params[0]) : nullptr,
      want_bias ? scope.output(grad_params[1]) : nullptr, scope.device().index, scope.stream());
  if (want_input && copy_padded)
    cuda::pad2d_backward(cuda_pad_mode(padding_mode_), grad_input.data<float>(),
                         s.batch * s.in_channels, in_h, in_w, pad.top, pad.bottom, pad.left,
                         pad.right, scope.output(grad_inputs[0]), scope.stream());
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

}  // namespace nnx
