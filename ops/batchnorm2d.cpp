// torch.nn.BatchNorm2d (see batchnorm2d.h): folds the statistics and the affine parameters into
// one scale and shift per channel, then runs kernels/cpu/batchnorm.
#include "ops/batchnorm2d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/batchnorm.h"
#include "nnx/error.h"
#include "ops/layer_args.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/train.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

namespace {

// Whether the call passed None for the argument at this position or keyword (Args::get does not
// tell None from absent; PyTorch prints momentum=None).
bool given_none(const Args& args, std::string_view name, size_t position) {
  const Call& call = args.call();
  for (const auto& [key, value] : call.kwargs)
    if (key == name) return value.is_none();
  return position < call.args.size() && call.args[position].is_none();
}

// Python's str() of a number argument: ints stay ints ("momentum=1"), floats as Python prints.
std::string number_repr(const Args& args, std::string_view name, size_t position, double fallback) {
  if (given_none(args, name, position)) return "None";
  const Value* value = args.get(name);
  if (value == nullptr) return op_util::float_repr(fallback);
  if (value->is_int()) return std::to_string(value->as_int());
  if (!value->is_number()) args.bad_type(name, "a number");
  return op_util::float_repr(value->as_double());
}

// --sync-bn: replaces this process's per-channel mean and biased variance over `count` values
// with those of all processes, from the summed count, sum and sum of squares.
void sync_moments(StatReducer& reducer, double& count, std::vector<double>& mean,
                  std::vector<double>& variance) {
  const size_t channels = mean.size();
  std::vector<double> sums(1 + 2 * channels);
  sums[0] = count;
  for (size_t c = 0; c < channels; ++c) {
    sums[1 + c] = mean[c] * count;
    sums[1 + channels + c] = (variance[c] + mean[c] * mean[c]) * count;
  }
  reducer.sum(sums);
  count = sums[0];
  for (size_t c = 0; c < channels; ++c) {
    mean[c] = count > 0 ? sums[1 + c] / count : 0.0;
    variance[c] =
        count > 0 ? std::max(0.0, sums[1 + channels + c] / count - mean[c] * mean[c]) : 0.0;
  }
}

}  // namespace

BatchNorm2d::BatchNorm2d(const Call& call) {
  Args args(call, {{"num_features", true},
                   {"eps"},
                   {"momentum"},
                   {"affine"},
                   {"track_running_stats"},
                   {"device"},
                   {"dtype"}});
  layer_args::check_factory_kwargs(args, "BatchNorm2d");
  num_features_ = args.get_int("num_features", 0);
  eps_ = args.get_double("eps", 1e-5);
  eps_repr_ = number_repr(args, "eps", 1, 1e-5);
  momentum_repr_ = number_repr(args, "momentum", 2, 0.1);
  cumulative_average_ = given_none(args, "momentum", 2);
  if (!cumulative_average_) momentum_ = args.get_double("momentum", 0.1);
  affine_ = args.get_bool("affine", true);
  track_running_stats_ = args.get_bool("track_running_stats", true);
  NNX_CHECK(num_features_ > 0, ErrorKind::format,
            "BatchNorm2d: num_features must be positive, got ", num_features_);
  NNX_CHECK(eps_ >= 0, ErrorKind::format, "BatchNorm2d: eps must not be negative, got ", eps_);
  // PyTorch's state_dict order: parameters first, then buffers.
  if (affine_) {
    add_param("weight", Shape{num_features_});
    add_param("bias", Shape{num_features_});
  }
  if (track_running_stats_) {
    add_param("running_mean", Shape{num_features_}, false);
    add_param("running_var", Shape{num_features_}, false);
    add_param("num_batches_tracked", Shape{}, false, DType::i64);
  }
  RandomEngine unused;
  init_params(unused);
}

std::string BatchNorm2d::repr() const {
  return "BatchNorm2d(" + std::to_string(num_features_) + ", eps=" + eps_repr_ +
         ", momentum=" + momentum_repr_ + ", affine=" + (affine_ ? "True" : "False") +
         ", track_running_stats=" + (track_running_stats_ ? "True" : "False") + ")";
}

void BatchNorm2d::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, 1);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> BatchNorm2d::infer_channels(std::span<const int64_t> in_channels,
                                                 int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  op_util::expect_channels(num_features_, in_channels[0]);
  return {num_features_};
}

std::vector<TensorSpec> BatchNorm2d::infer_shapes(std::span<const TensorSpec> inputs,
                                                  int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  op_util::expect_rank(inputs[0], 4);
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported,
            "BatchNorm2d takes float32 input, found ", dtype_name(inputs[0].dtype));
  op_util::expect_channels(num_features_, inputs[0].shape[1]);
  if (!track_running_stats_) {
    const Shape& s = inputs[0].shape;
    NNX_CHECK(s[0] * s[2] * s[3] > 1, ErrorKind::shape,
              "BatchNorm2d with track_running_stats=False normalises with batch statistics and "
              "needs more than 1 value per channel, got input size ",
              s.str());
  }
  return {TensorSpec{inputs[0].shape, DType::f32}};
}

int64_t BatchNorm2d::flops(std::span<const TensorSpec> inputs,
                           std::span<const TensorSpec> outputs) const {
  return outputs.empty() ? 0 : 2 * outputs[0].shape.numel();
}

void BatchNorm2d::init_params(RandomEngine&) {
  // reset_parameters(): weight 1, bias 0, running_mean 0, running_var 1, counter 0.
  if (affine_) {
    mutable_param("weight").fill(1.0);
    mutable_param("bias").fill(0.0);
  }
  if (track_running_stats_) {
    mutable_param("running_mean").fill(0.0);
    mutable_param("running_var").fill(1.0);
    mutable_param("num_batches_tracked").fill(0.0);
  }
}

void BatchNorm2d::inference_affine(std::vector<double>& scale, std::vector<double>& shift) const {
  NNX_CHECK(track_running_stats_, ErrorKind::usage,
            "BatchNorm2d without running statistics has no inference affine map");
  // Host copies when the parameters are held on a device (a Trainer's evaluation mode).
  const Tensor mean = find_param("running_mean")->value.to(Device::cpu()).contiguous();
  const Tensor variance = find_param("running_var")->value.to(Device::cpu()).contiguous();
  Tensor weight, bias;
  if (affine_) {
    weight = params()[0].value.to(Device::cpu()).contiguous();
    bias = params()[1].value.to(Device::cpu()).contiguous();
  }
  scale.resize(size_t(num_features_));
  shift.resize(size_t(num_features_));
  for (int64_t c = 0; c < num_features_; ++c) {
    const double inv_std = 1.0 / std::sqrt(double(variance.data<float>()[c]) + eps_);
    const double gamma = affine_ ? weight.data<float>()[c] : 1.0;
    const double beta = affine_ ? bias.data<float>()[c] : 0.0;
    scale[size_t(c)] = gamma * inv_std;
    shift[size_t(c)] = beta - double(mean.data<float>()[c]) * gamma * inv_std;
  }
}

void BatchNorm2d::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                              std::span<Tensor> outputs) const {
  const Tensor input = inputs[0].contiguous();
  const int64_t batch = input.size(0), channels = num_features_;
  const int64_t plane = input.size(2) * input.size(3);
  const bool batch_stats = ctx.training || !track_running_stats_;
  std::vector<double> mean(channels), variance(channels);
  double count = double(batch * plane);  // values per channel: all processes' with --sync-bn
  if (batch_stats) {
    NNX_CHECK(batch * plane > 1, ErrorKind::shape,
              "Expected more than 1 value per channel when training, got input size ",
              input.shape().str());
    cpu::channel_moments(batch, channels, plane, input.data<float>(), mean.data(), variance.data(),
                         ctx.pool);
    if (ctx.training && ctx.reducer != nullptr) sync_moments(*ctx.reducer, count, mean, variance);
  } else {
    const Tensor running_mean = find_param("running_mean")->value.contiguous();
    const Tensor running_var = find_param("running_var")->value.contiguous();
    for (int64_t c = 0; c < channels; ++c) {
      mean[c] = running_mean.data<float>()[c];
      variance[c] = running_var.data<float>()[c];
    }
  }
  if (ctx.training && track_running_stats_) {
    // In place, in the op's own buffers (the Trainer trains a copy of the model).
    const Tensor& counter = find_param("num_batches_tracked")->value;
    int64_t& batches = counter.data<int64_t>()[0];
    batches += 1;
    const double factor = cumulative_average_ ? 1.0 / double(batches) : momentum_;
    float* running_mean = find_param("running_mean")->value.data<float>();
    float* running_var = find_param("running_var")->value.data<float>();
    for (int64_t c = 0; c < channels; ++c) {
      const double unbiased = variance[c] * count / (count - 1);
      running_mean[c] = float((1 - factor) * running_mean[c] + factor * mean[c]);
      running_var[c] = float((1 - factor) * running_var[c] + factor * unbiased);
    }
  }
  Tensor weight, bias;
  if (affine_) {
    weight = params()[0].value.contiguous();
    bias = params()[1].value.contiguous();
  }
  std::vector<float> scale(channels), shift(channels);
  Tensor saved_mean, saved_inv_std;
  if (batch_stats && ctx.saved != nullptr) {
    saved_mean = Tensor::empty(Shape{channels});
    saved_inv_std = Tensor::empty(Shape{channels});
  }
  for (int64_t c = 0; c < channels; ++c) {
    const double inv_std = 1.0 / std::sqrt(variance[c] + eps_);
    const double gamma = affine_ ? weight.data<float>()[c] : 1.0;
    const double beta = affine_ ? bias.data<float>()[c] : 0.0;
    scale[c] = float(inv_std * gamma);
    shift[c] = float(beta - mean[c] * inv_std * gamma);
    if (saved_mean.defined()) {
      saved_mean.data<float>()[c] = float(mean[c]);
      saved_inv_std.data<float>()[c] = float(inv_std);
    }
  }
  cpu::channel_affine(batch, channels, plane, input.data<float>(), scale.data(), shift.data(),
                      outputs[0].data<float>(), ctx.pool);
  if (saved_mean.defined()) {
    ctx.saved->push_back(saved_mean);
    ctx.saved->push_back(saved_inv_std);
  }
}

void BatchNorm2d::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                               std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                               std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  const Tensor input = inputs[0].contiguous();
  const Tensor grad_output = grad_outputs[0].contiguous();
  const int64_t batch = input.size(0), channels = num_features_;
  const int64_t plane = input.size(2) * input.size(3);
  const bool batch_stats = ctx.training || !track_running_stats_;
  std::vector<double> mean(channels), inv_std(channels);
  if (batch_stats && ctx.saved != nullptr && ctx.saved->size() >= 2) {
    for (int64_t c = 0; c < channels; ++c) {
      mean[c] = (*ctx.saved)[0].data<float>()[c];
      inv_std[c] = (*ctx.saved)[1].data<float>()[c];
    }
  } else {
    std::vector<double> variance(channels);
    if (batch_stats) {
      cpu::channel_moments(batch, channels, plane, input.data<float>(), mean.data(),
                           variance.data(), ctx.pool);
    } else {
      const Tensor running_mean = find_param("running_mean")->value.contiguous();
      const Tensor running_var = find_param("running_var")->value.contiguous();
      for (int64_t c = 0; c < channels; ++c) {
        mean[c] = running_mean.data<float>()[c];
        variance[c] = running_var.data<float>()[c];
      }
    }
    for (int64_t c = 0; c < channels; ++c) inv_std[c] = 1.0 / std::sqrt(variance[c] + eps_);
  }
  // Per channel: sum(dy) and sum(dy * x_hat).
  std::vector<double> sum_dy(channels), sum_dy_xhat(channels);
  cpu::channel_grad_sums(batch, channels, plane, input.data<float>(), grad_output.data<float>(),
                         mean.data(), inv_std.data(), sum_dy.data(), sum_dy_xhat.data(), ctx.pool);
  if (affine_ && grad_params.size() >= 2) {
    if (grad_params[0].defined())
      for (int64_t c = 0; c < channels; ++c)
        grad_params[0].data<float>()[c] = float(sum_dy_xhat[c]);
    if (grad_params[1].defined())
      for (int64_t c = 0; c < channels; ++c) grad_params[1].data<float>()[c] = float(sum_dy[c]);
  }
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  double count = double(batch * plane);
  if (batch_stats && ctx.training && ctx.reducer != nullptr) {
    // --sync-bn: the statistics were all processes', so are the two sums (the parameter
    // gradients above stay this process's share: the Trainer's caller sums them).
    std::vector<double> sums(size_t(1 + 2 * channels));
    sums[0] = count;
    std::copy(sum_dy.begin(), sum_dy.end(), sums.begin() + 1);
    std::copy(sum_dy_xhat.begin(), sum_dy_xhat.end(), sums.begin() + 1 + channels);
    ctx.reducer->sum(sums);
    count = sums[0];
    std::copy(sums.begin() + 1, sums.begin() + 1 + channels, sum_dy.begin());
    std::copy(sums.begin() + 1 + channels, sums.end(), sum_dy_xhat.begin());
  }
  // dx = dy * a + (x - mean) * b + shift per channel.
  const Tensor weight = affine_ ? params()[0].value.contiguous() : Tensor();
  std::vector<float> a(channels), b(channels), center(channels), shift(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double k = inv_std[c] * (affine_ ? weight.data<float>()[c] : 1.0);
    a[c] = float(k);
    b[c] = float(-k * inv_std[c] * sum_dy_xhat[c] / count);
    center[c] = float(mean[c]);
    shift[c] = batch_stats ? float(-k * sum_dy[c] / count) : 0.f;
  }
  cpu::channel_affine_grad(batch, channels, plane, grad_output.data<float>(), input.data<float>(),
                           a.data(), batch_stats ? b.data() : nullptr, center.data(), shift.data(),
                           grad_inputs[0].data<float>(), ctx.pool);
}

std::shared_ptr<Op> make_batchnorm2d(const Call& call) {
  return std::make_shared<BatchNorm2d>(call);
}

void BatchNorm2d::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                               std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const bool batch_stats = ctx.training || !track_running_stats_;
  const bool update_running = ctx.training && track_running_stats_;
  const Tensor* counter = update_running ? &find_param("num_batches_tracked")->value : nullptr;
  if (batch_stats && ((ctx.training && ctx.reducer != nullptr) ||
                      (counter != nullptr && !counter->device().is_cuda()))) {
    // Synchronised statistics, or running statistics held on the host (updated in place there):
    // the CPU body.
    forward_on_host(ctx, inputs, outputs);
    return;
  }
  const cuda::OpScope scope(ctx, "BatchNorm2d");
  const Tensor input = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const int64_t batch = input.size(0), channels = num_features_;
  const int64_t plane = input.size(2) * input.size(3);
  if (!batch_stats) {
    // y = scale * x + shift, the map worked out on the host in double as on the CPU.
    std::vector<double> scale, shift;
    inference_affine(scale, shift);
    const std::vector<float> scale_f(scale.begin(), scale.end());
    const std::vector<float> shift_f(shift.begin(), shift.end());
    cuda::channel_affine(input.data<float>(),
                         cuda::device_constants(this, 0, scale_f, scope.device()),
                         cuda::device_constants(this, 1, shift_f, scope.device()), output, batch,
                         channels, plane, scope.stream());
    return;
  }
  NNX_CHECK(batch * plane > 1, ErrorKind::shape,
            "Expected more than 1 value per channel when training, got input size ",
            input.shape().str());
  Tensor weight, bias;
  if (affine_) {
    weight = cuda::device_param(params()[0].value, scope.device());
    bias = cuda::device_param(params()[1].value, scope.device());
  }
  Tensor saved_mean, saved_inv_std;
  if (ctx.saved != nullptr) {
    saved_mean = scope.empty(Shape{channels});
    saved_inv_std = scope.empty(Shape{channels});
  }
  float* running_mean = nullptr;
  float* running_var = nullptr;
  int64_t* batches = nullptr;
  if (update_running) {
    // The Trainer placed the buffers on the device (Op::place_params): updated there in place.
    running_mean = scope.output(const_cast<Tensor&>(find_param("running_mean")->value));
    running_var = scope.output(const_cast<Tensor&>(find_param("running_var")->value));
    NNX_CHECK(counter->dtype() == DType::i64 && counter->numel() == 1, ErrorKind::usage,
              "BatchNorm2d: num_batches_tracked is ", counter->str());
    batches = counter->data<int64_t>();
  }
  Tensor scratch = scope.empty(Shape{2 * channels});
  cuda::batch_norm_train_forward(input.data<float>(), affine_ ? weight.data<float>() : nullptr,
                                 affine_ ? bias.data<float>() : nullptr, eps_, momentum_,
                                 cumulative_average_, batches, running_mean, running_var, batch,
                                 channels, plane,
                                 saved_mean.defined() ? saved_mean.data<float>() : nullptr,
                                 saved_inv_std.defined() ? saved_inv_std.data<float>() : nullptr,
                                 scratch.data<float>(), output, scope.stream());
  if (saved_mean.defined()) {
    ctx.saved->push_back(saved_mean);
    ctx.saved->push_back(saved_inv_std);
  }
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void BatchNorm2d::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                std::span<const Tensor> outputs,
                                std::span<const Tensor> grad_outputs, std::span<Tensor> grad_inputs,
                                std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  const bool batch_stats = ctx.training || !track_running_stats_;
  const bool native = batch_stats && !(ctx.training && ctx.reducer != nullptr) &&
                      ctx.saved != nullptr && ctx.saved->size() >= 2 &&
                      (*ctx.saved)[0].device() == ctx.device &&
                      (*ctx.saved)[1].device() == ctx.device;
  if (!native) {
    // Running statistics (a frozen BatchNorm), synchronised statistics, or a forward that ran
    // on the host: the CPU body.
    backward_on_host(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
    return;
  }
  const cuda::OpScope scope(ctx, "BatchNorm2d");
  const Tensor input = scope.input(inputs[0]);
  const Tensor grad_output = scope.input(grad_outputs[0]);
  const int64_t batch = input.size(0), channels = num_features_;
  const int64_t plane = input.size(2) * input.size(3);
  const Tensor weight = affine_ ? cuda::device_param(params()[0].value, scope.device()) : Tensor();
  float* grad_gamma = nullptr;
  float* grad_beta = nullptr;
  if (affine_ && grad_params.size() >= 2) {
    if (grad_params[0].defined()) grad_gamma = scope.output(grad_params[0]);
    if (grad_params[1].defined()) grad_beta = scope.output(grad_params[1]);
  }
  float* dx =
      !grad_inputs.empty() && grad_inputs[0].defined() ? scope.output(grad_inputs[0]) : nullptr;
  Tensor scratch = scope.empty(Shape{4 * channels});
  cuda::batch_norm_backward(
      input.data<float>(), grad_output.data<float>(), scope.input((*ctx.saved)[0]).data<float>(),
      scope.input((*ctx.saved)[1]).data<float>(), affine_ ? weight.data<float>() : nullptr, batch,
      channels, plane, grad_gamma, grad_beta, scratch.data<float>(), dx, scope.stream());
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

}  // namespace nnx
