// Pruner and AllOrNothingPruner: arguments, the generation switch on the state-dict key, and the
// CPU forward (gate per channel, then one scaling pass).
#include "ops/pruner.h"

#include <random>
#include <vector>

#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/normalization.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {
namespace {

// The package's starting gate weight, before any initialisation or state dict (gate about 1).
constexpr double kInitialWeight = 1.0000008344650269;

}  // namespace

PrunerOp::PrunerOp(const Call& call, bool all_or_nothing) : all_or_nothing_(all_or_nothing) {
  // The package's last versions wrote "threshold={self.threshold}" literally; the call parser
  // reads that as absent, so the defaults apply.
  Args args(call,
            {{"ch", true}, {"prunable"}, {"activated"}, {"threshold"}, {"num_of_appearances"}});
  channels_ = args.get_int("ch", 0);
  NNX_CHECK(channels_ > 0, ErrorKind::format, type(), ": ch must be positive, found ", channels_);
  prunable_ = args.get_bool("prunable", false);
  activated_ = args.get_bool("activated", true);
  threshold_ = args.get_double("threshold", 0.75);
  num_of_appearances_ = args.get_int("num_of_appearances", 1);
  add_param("pruner_weight", Shape{1, channels_, 1, 1});
  mutable_param("pruner_weight").fill(kInitialWeight);
  update_gate();
}

cpu::PrunerGate PrunerOp::gate_kind() const {
  return all_or_nothing_ ? cpu::PrunerGate::all_or_nothing
         : legacy_       ? cpu::PrunerGate::legacy
                         : cpu::PrunerGate::thresholded;
}

void PrunerOp::update_gate() {
  gate_.resize(size_t(channels_));
  const Tensor weight = params()[0].value.to(Device::cpu());  // a copy when held on a device
  cpu::pruner_gate(gate_kind(), weight.data<float>(), channels_, float(threshold_), gate_.data());
}

std::string PrunerOp::repr() const {
  std::string out = type() + "(ch=" + std::to_string(channels_) +
                    ", prunable=" + (prunable_ ? "True" : "False") +
                    ", activated=" + (activated_ ? "True" : "False");
  if (legacy() && !all_or_nothing_) return out + ")";
  return out + ", threshold=" + op_util::float_repr(threshold_) +
         ", num_of_appearances=" + std::to_string(num_of_appearances_) + ")";
}

std::vector<int64_t> PrunerOp::infer_channels(std::span<const int64_t> in_channels,
                                              int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  op_util::expect_channels(channels_, in_channels[0]);
  return {channels_};
}

std::vector<TensorSpec> PrunerOp::infer_shapes(std::span<const TensorSpec> inputs,
                                               int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const TensorSpec& in = inputs[0];
  op_util::expect_rank(in, 4);
  op_util::expect_channels(channels_, in.shape[1]);
  NNX_CHECK(in.dtype == DType::f32, ErrorKind::unsupported, type(),
            ": expected a float32 input, found ", dtype_name(in.dtype));
  return {in};
}

int64_t PrunerOp::flops(std::span<const TensorSpec> inputs,
                        std::span<const TensorSpec> outputs) const {
  return activated_ && !inputs.empty() ? inputs[0].shape.numel() : 0;
}

void PrunerOp::init_params(RandomEngine& rng) {
  Tensor& w = mutable_param(params()[0].name);
  if (!activated_) {
    w.fill(kInitialWeight);
  } else {
    // As the package initialised an active gate: just below 1, so every channel starts open.
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    float* data = w.data<float>();
    for (int64_t c = 0; c < channels_; ++c) data[c] = 1.0f - uniform(rng) * 0.01f;
  }
  update_gate();
}

std::string PrunerOp::canonical_param_name(std::string_view key) const {
  // Either spelling names the one gate parameter, whichever key it was last loaded under.
  if (key == "weights" || key == "pruner_weight") return params()[0].name;
  return std::string(key);
}

void PrunerOp::set_param(std::string_view key, const Tensor& value) {
  if (key == "weights" || key == "pruner_weight") {
    rename_param(params()[0].name, std::string(key));
    legacy_ = key == "weights" && !all_or_nothing_;
  }
  Op::set_param(key, value);
  update_gate();
}

void PrunerOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<Tensor> outputs) const {
  if (!activated_) {
    outputs[0] = inputs[0];
    return;
  }
  Tensor x = inputs[0].contiguous();
  const Shape& s = x.shape();
  cpu::scale_channels(x.data<float>(), gate_.data(), outputs[0].data<float>(), s[0], s[1],
                      s[2] * s[3], ctx.pool);
}

void PrunerOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                            std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  Tensor* gw = !grad_params.empty() && grad_params[0].defined() ? &grad_params[0] : nullptr;
  if (!activated_) {
    if (grad_inputs[0].defined()) grad_inputs[0].copy_from(grad_outputs[0]);
    if (gw != nullptr) gw->fill(0.0);
    return;
  }
  const Tensor g = grad_outputs[0].contiguous();
  const Shape& s = g.shape();
  if (grad_inputs[0].defined())
    cpu::scale_channels(g.data<float>(), gate_.data(), grad_inputs[0].data<float>(), s[0], s[1],
                        s[2] * s[3], ctx.pool);
  if (gw == nullptr) return;
  const Tensor x = inputs[0].contiguous();
  std::vector<double> gate_grad(static_cast<size_t>(channels_));
  cpu::channel_products(x.data<float>(), g.data<float>(), s[0], s[1], s[2] * s[3], gate_grad.data(),
                        ctx.pool);
  cpu::pruner_gate_backward(gate_kind(), params()[0].value.data<float>(), channels_,
                            float(threshold_), gate_grad.data(), gw->data<float>());
}

std::shared_ptr<Op> make_pruner(const Call& call) {
  return std::make_shared<PrunerOp>(call, false);
}

std::shared_ptr<Op> make_all_or_nothing_pruner(const Call& call) {
  return std::make_shared<PrunerOp>(call, true);
}

void PrunerOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  if (!activated_) {
    outputs[0] = inputs[0];
    return;
  }
  const cuda::OpScope scope(ctx, type());
  const Tensor x = scope.input(inputs[0]);
  const Shape& s = x.shape();
  cuda::channel_affine(x.data<float>(), cuda::device_constants(this, 0, gate_, scope.device()),
                       nullptr, scope.output(outputs[0]), s[0], s[1], s[2] * s[3], scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
