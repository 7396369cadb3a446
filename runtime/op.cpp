// The Op base class: device dispatch, parameters, default arity and channel rules.
#include "nnx/op.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <sstream>
#include <unordered_set>

#include "nnx/error.h"
#include "runtime/host_fallback.h"
#include "runtime/host_task.h"

namespace nnx {

void Op::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, 1);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> Op::infer_channels(std::span<const int64_t> in_channels,
                                        int num_outputs) const {
  // Default: channels pass through (elementwise ops, activations).
  int64_t c = in_channels.empty() ? kUnknownChannels : in_channels[0];
  return std::vector<int64_t>(size_t(num_outputs), c);
}

void Op::forward(const ExecContext& ctx, std::span<const Tensor> inputs,
                 std::span<Tensor> outputs) const {
  if (ctx.device.is_cuda())
    forward_cuda(ctx, inputs, outputs);
  else
    forward_cpu(ctx, inputs, outputs);
}

void Op::backward(const ExecContext& ctx, std::span<const Tensor> inputs,
                  std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                  std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  if (ctx.device.is_cuda())
    backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
  else
    backward_cpu(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
}

namespace {

Tensor on_host(const Tensor& t) {
  return t.defined() ? t.to(Device::cpu()) : t;
}

// The parameters of an op that are held on a device, swapped for host copies while it lives.
class HostParams {
 public:
  explicit HostParams(std::vector<Param>& params) : params_(params) {
    for (size_t k = 0; k < params_.size(); ++k) {
      Tensor& v = params_[k].value;
      if (!v.defined() || v.device().is_cpu()) continue;
      swapped_.push_back({k, v});
      v = v.to(Device::cpu());
    }
  }
  // Copies the host values (changed in place by a training forward) back to the device.
  void write_back() {
    for (auto& [k, device_value] : swapped_) device_value.copy_from(params_[k].value);
  }
  ~HostParams() {
    for (auto& [k, device_value] : swapped_) params_[k].value = device_value;
  }
  HostParams(const HostParams&) = delete;
  HostParams& operator=(const HostParams&) = delete;

 private:
  std::vector<Param>& params_;
  std::vector<std::pair<size_t, Tensor>> swapped_;
};

}  // namespace

namespace detail {
namespace {
thread_local uint64_t host_fallback_count = 0;
HostTaskHooks task_hooks;
}  // namespace

uint64_t host_fallbacks() {
  return host_fallback_count;
}

const HostTaskHooks& host_task_hooks() {
  return task_hooks;
}

void set_host_task_hooks(const HostTaskHooks& hooks) {
  task_hooks = hooks;
}
}  // namespace detail

namespace {

// Ops whose training forward on the host kept state for their backward (ExecContext::saved,
// host tensors the backward reads): their host bodies stay synchronous, outside CUDA graphs.
std::mutex saving_mutex;
std::unordered_set<const Op*> saving_ops;

bool saves_on_host(const Op* op) {
  std::lock_guard<std::mutex> lock(saving_mutex);
  return saving_ops.count(op) != 0;
}

void note_saves_on_host(const Op* op) {
  std::lock_guard<std::mutex> lock(saving_mutex);
  saving_ops.insert(op);
}

// Whether a host fallback on `ctx` is queued as nodes of the CUDA graph being captured on its
// stream (copies to page-locked memory, the CPU body as a host task, copies back) instead of run
// with waits, which a capture refuses. Only for ops without parameters (whose host copies and
// write-back would be copies of their own), tensors contiguous on the device.
bool queue_in_graph(const ExecContext& ctx, bool no_params,
                    std::initializer_list<std::span<const Tensor>> tensors) {
  const detail::HostTaskHooks& h = detail::host_task_hooks();
  if (!ctx.device.is_cuda() || !no_params || h.capturing == nullptr || !h.capturing(ctx.stream))
    return false;
  for (std::span<const Tensor> list : tensors)
    for (const Tensor& t : list)
      if (t.defined() && (!t.is_contiguous() || t.device() != ctx.device)) return false;
  return true;
}

// A page-locked host tensor that a captured copy fills from `t` (undefined stays undefined).
Tensor queued_to_host(const Tensor& t, void* stream) {
  if (!t.defined()) return t;
  const detail::HostTaskHooks& h = detail::host_task_hooks();
  Tensor host = h.pinned(t.shape(), t.dtype());
  h.copy(host.raw_data(), Device::cpu(), t.raw_data(), t.device(), t.nbytes(), stream);
  return host;
}

// The context a queued host body runs with: on the CPU, single-threaded (it runs on a driver
// thread), with a generator of its own whose draws are refused (a replay would repeat them).
ExecContext host_task_context(const ExecContext& ctx) {
  ExecContext host = ctx;
  host.device = Device::cpu();
  host.stream = nullptr;
  host.pool = nullptr;
  host.saved = nullptr;
  host.reducer = nullptr;
  host.rng = nullptr;
  return host;
}

}  // namespace

void Op::forward_on_host(const ExecContext& ctx, std::span<const Tensor> inputs,
                         std::span<Tensor> outputs) const {
  ++detail::host_fallback_count;
  bool all_outputs = true;
  for (const Tensor& t : outputs) all_outputs = all_outputs && t.defined();
  if (all_outputs && !(ctx.training && saves_on_host(this)) &&
      queue_in_graph(ctx, params_.empty(), {inputs, std::span<const Tensor>(outputs)})) {
    // Inside a CUDA graph being captured: the copies and the CPU body are nodes of the graph.
    const detail::HostTaskHooks& h = detail::host_task_hooks();
    std::vector<Tensor> ins, outs;
    for (const Tensor& t : inputs) ins.push_back(queued_to_host(t, ctx.stream));
    for (const Tensor& t : outputs) outs.push_back(h.pinned(t.shape(), t.dtype()));
    const RandomEngine generator = ctx.rng != nullptr ? *ctx.rng : RandomEngine();
    h.launch(ctx.stream, ctx.device.index,
             [this, host = host_task_context(ctx), ins, outs, generator]() mutable {
               RandomEngine rng = generator;
               std::vector<Tensor> saved;
               host.rng = &rng;
               host.saved = host.training ? &saved : nullptr;
               // The op may replace an output tensor rather than fill it: then its values are
               // copied into the page-locked one the graph's copy reads (and nothing the graph
               // holds is freed here, on the driver's thread).
               std::vector<Tensor> filled = outs;
               forward_cpu(host, ins, filled);
               for (size_t k = 0; k < outs.size(); ++k)
                 if (filled[k].defined() && filled[k].raw_data() != outs[k].raw_data())
                   outs[k].copy_from(filled[k]);
               NNX_CHECK(rng == generator, ErrorKind::unsupported, repr(),
                         ": draws random numbers on the host, which a CUDA graph would repeat");
               NNX_CHECK(saved.empty(), ErrorKind::unsupported, repr(),
                         ": keeps state on the host for its backward, which a CUDA graph cannot");
             });
    for (size_t k = 0; k < outputs.size(); ++k)
      h.copy(outputs[k].raw_data(), ctx.device, outs[k].raw_data(), Device::cpu(),
             outputs[k].nbytes(), ctx.stream);
    return;
  }
  std::vector<Tensor> host_inputs, host_outputs;
  for (const Tensor& t : inputs) host_inputs.push_back(on_host(t));
  for (const Tensor& t : outputs)
    host_outputs.push_back(t.defined() ? Tensor::empty(t.shape(), t.dtype()) : Tensor());
  ExecContext host = ctx;
  host.device = Device::cpu();
  host.stream = nullptr;
  // The saved state stays on the host: backward_on_host reads it there.
  HostParams swap(const_cast<Op*>(this)->params_);
  const size_t kept = ctx.saved != nullptr ? ctx.saved->size() : 0;
  forward_cpu(host, host_inputs, host_outputs);
  if (ctx.saved != nullptr && ctx.saved->size() != kept) note_saves_on_host(this);
  if (ctx.training) swap.write_back();
  for (size_t k = 0; k < outputs.size(); ++k) {
    if (outputs[k].defined())
      outputs[k].copy_from(host_outputs[k]);
    else if (host_outputs[k].defined())  // a view output the op set
      outputs[k] = host_outputs[k].to(ctx.device);
  }
}

void Op::backward_on_host(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                          std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  bool no_param_grads = true;
  for (const Tensor& t : grad_params) no_param_grads = no_param_grads && !t.defined();
  if (no_param_grads && (ctx.saved == nullptr || ctx.saved->empty()) &&
      queue_in_graph(ctx, params_.empty(),
                     {inputs, outputs, grad_outputs, std::span<const Tensor>(grad_inputs)})) {
    // Inside a CUDA graph being captured, as in forward_on_host.
    const detail::HostTaskHooks& h = detail::host_task_hooks();
    std::vector<Tensor> ins, outs, gouts, gins;
    for (const Tensor& t : inputs) ins.push_back(queued_to_host(t, ctx.stream));
    for (const Tensor& t : outputs) outs.push_back(queued_to_host(t, ctx.stream));
    for (const Tensor& t : grad_outputs) gouts.push_back(queued_to_host(t, ctx.stream));
    for (const Tensor& t : grad_inputs)
      gins.push_back(t.defined() ? h.pinned(t.shape(), t.dtype()) : Tensor());
    const size_t param_count = grad_params.size();
    h.launch(ctx.stream, ctx.device.index,
             [this, host = host_task_context(ctx), ins, outs, gouts, gins, param_count]() mutable {
               std::vector<Tensor> gparams(param_count), filled = gins;
               backward_cpu(host, ins, outs, gouts, filled, gparams);
               for (size_t k = 0; k < gins.size(); ++k)  // as in forward_on_host
                 if (filled[k].defined() && gins[k].defined() &&
                     filled[k].raw_data() != gins[k].raw_data())
                   gins[k].copy_from(filled[k]);
             });
    for (size_t k = 0; k < grad_inputs.size(); ++k)
      if (grad_inputs[k].defined())
        h.copy(grad_inputs[k].raw_data(), ctx.device, gins[k].raw_data(), Device::cpu(),
               grad_inputs[k].nbytes(), ctx.stream);
    return;
  }
  std::vector<Tensor> ins, outs, gouts, gins, gparams, saved;
  for (const Tensor& t : inputs) ins.push_back(on_host(t));
  for (const Tensor& t : outputs) outs.push_back(on_host(t));
  for (const Tensor& t : grad_outputs) gouts.push_back(on_host(t));
  auto host_like = [](const Tensor& t) {
    return t.defined() ? Tensor::empty(t.shape(), t.dtype()) : Tensor();
  };
  for (const Tensor& t : grad_inputs) gins.push_back(host_like(t));
  for (const Tensor& t : grad_params) gparams.push_back(host_like(t));
  ExecContext host = ctx;
  host.device = Device::cpu();
  host.stream = nullptr;
  if (ctx.saved != nullptr) {
    for (const Tensor& t : *ctx.saved) saved.push_back(on_host(t));
    host.saved = &saved;
  }
  {
    HostParams swap(const_cast<Op*>(this)->params_);
    backward_cpu(host, ins, outs, gouts, gins, gparams);
  }
  for (size_t k = 0; k < grad_inputs.size(); ++k)
    if (grad_inputs[k].defined()) grad_inputs[k].copy_from(gins[k]);
  for (size_t k = 0; k < grad_params.size(); ++k)
    if (grad_params[k].defined()) grad_params[k].copy_from(gparams[k]);
}

// An op without a CUDA body (a user op) runs on the CPU: its inputs are copied to the host and
// its outputs back, in order on the current stream.
void Op::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                      std::span<Tensor> outputs) const {
  forward_on_host(ctx, inputs, outputs);
}

void Op::backward_cpu(const ExecContext&, std::span<const Tensor>, std::span<const Tensor>,
                      std::span<const Tensor>, std::span<Tensor>, std::span<Tensor>) const {
  fail(ErrorKind::unsupported, type(), " has no backward pass on the CPU");
}

// An op without a CUDA backward runs its CPU one on host copies.
void Op::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                       std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                       std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  backward_on_host(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
}

void Op::place_params(Device device) {
  for (Param& p : params_)
    if (p.value.defined() && p.value.device() != device) p.value = p.value.contiguous().to(device);
}

const Param* Op::find_param(std::string_view name) const {
  for (const auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

void Op::set_param(std::string_view key, const Tensor& value) {
  std::string name = canonical_param_name(key);
  Tensor& slot = mutable_param(name);
  NNX_CHECK(value.shape() == slot.shape(), ErrorKind::shape, "tensor '", key, "': expected shape ",
            slot.shape().str(), ", found ", value.shape().str());
  // Floating parameters are kept in the op's dtype (a float64 state dict still loads);
  // integer buffers (num_batches_tracked) keep theirs.
  NNX_CHECK(dtype_is_floating(value.dtype()) == dtype_is_floating(slot.dtype()), ErrorKind::shape,
            "tensor '", key, "': expected dtype ", dtype_name(slot.dtype()), ", found ",
            dtype_name(value.dtype()));
  const Device device = slot.device();
  slot = value.to(Device::cpu()).to(slot.dtype()).contiguous();
  if (!device.is_cpu()) slot = slot.to(device);
}

void Op::add_param(std::string name, const Shape& shape, bool trainable, DType dtype) {
  params_.push_back({std::move(name), Tensor::zeros(shape, dtype), trainable});
}

void Op::rename_param(std::string_view from, std::string to) {
  for (auto& p : params_)
    if (p.name == from) {
      p.name = std::move(to);
      return;
    }
  fail(ErrorKind::usage, type(), " has no parameter '", from, "' to rename");
}

Tensor& Op::mutable_param(std::string_view name) {
  for (auto& p : params_)
    if (p.name == name) return p.value;
  std::string known;
  for (auto& p : params_) known += (known.empty() ? "" : ", ") + p.name;
  fail(ErrorKind::shape, "unexpected tensor '", name, "' for ", type(),
       known.empty() ? std::string(" (it has no parameters)") : " (expected: " + known + ")");
}

namespace op_util {

void expect_inputs(int n, int lo, int hi) {
  if (n >= lo && n <= hi) return;
  if (lo == hi)
    fail(ErrorKind::shape, "expected ", lo, lo == 1 ? " input" : " inputs", ", found ", n);
  if (hi == INT32_MAX) fail(ErrorKind::shape, "expected at least ", lo, " inputs, found ", n);
  fail(ErrorKind::shape, "expected ", lo, " to ", hi, " inputs, found ", n);
}

void expect_outputs(int n, int lo, int hi) {
  if (n >= lo && n <= hi) return;
  if (lo == hi)
    fail(ErrorKind::shape, "expected ", lo, lo == 1 ? " output" : " outputs", ", found ", n);
  if (hi == INT32_MAX) fail(ErrorKind::shape, "expected at least ", lo, " outputs, found ", n);
  fail(ErrorKind::shape, "expected ", lo, " to ", hi, " outputs, found ", n);
}

void expect_channels(int64_t expected, int64_t found, std::string_view what) {
  if (found == kUnknownChannels || expected == kUnknownChannels || found == expected) return;
  fail(ErrorKind::shape, "expected ", expected, " ", what, ", found ", found);
}

void expect_rank(const TensorSpec& spec, int rank, std::string_view what) {
  NNX_CHECK(spec.shape.size() == rank, ErrorKind::shape, "expected a ", rank, "-d ", what,
            ", found shape ", spec.shape.str());
}

std::string tuple_repr(std::span<const int64_t> values) {
  std::ostringstream out;
  out << '(';
  for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  if (values.size() == 1) out << ',';
  out << ')';
  return out.str();
}

std::string float_repr(double value) {
  // Python's repr: the shortest text that reads back exactly, with ".0" on integral values
  // and exponents below 1e-4 or from 1e16.
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  std::string s = buf;
  double mag = std::fabs(value);
  if (mag != 0 && (mag < 1e-4 || mag >= 1e16)) {
    // %g's exponent form "1e-05" is also Python's; make the mantissa match ("1e-05", "1.5e-05").
    if (s.find('e') == std::string::npos) {
      std::snprintf(buf, sizeof buf, "%.16e", value);
      s = buf;
    }
    return s;
  }
  if (s.find('e') != std::string::npos) {  // %g chose an exponent Python would not use
    std::snprintf(buf, sizeof buf, "%.17f", value);
    s = buf;
    while (s.size() > 1 && s.back() == '0') s.pop_back();
  }
  if (s.find('.') == std::string::npos) s += ".0";
  if (s.back() == '.') s += '0';
  return s;
}

}  // namespace op_util
}  // namespace nnx
