// nnx::TrainStep (nnx/train.h): zero_grad, forward, loss, backward and the optimizer's update as
// one unit. On a CUDA device the step runs on a stream of its own; from the third run with the
// same shapes it is captured as two CUDA graphs (up to backward, then the update) and replayed,
// so that a step costs the host two graph launches instead of a few hundred library calls and
// launches.
//
// What a replay needs to stay the step the calls would make:
// - every address the graph reads or writes stays put: the inputs and targets are copied into
//   buffers of this object; the outputs and the losses' gradients are kept alive here; the
//   temporaries freed inside the capture stay in a GraphPool; parameters, gradients and the
//   optimizer's state are checked to be the same memory before each replay;
// - nothing the host computes per step is baked in: Adam's step count is counted on the device
//   (cuda::increment_each, adam_update's device_step); a step whose forward draws from the
//   trainer's generator (Dropout) is not replayed; the optimizer's settings are part of the key;
// - the host's bookkeeping follows the replay: the optimizer's step counts advance as step() would
//   advance them.
#include <algorithm>
#include <cstring>
#include <exception>
#include <functional>

#include "graph/graph.h"
#include "graph/planner.h"
#include "nnx/cuda.h"
#include "nnx/error.h"
#include "nnx/optim.h"
#include "nnx/train.h"
#include "train/loss_device.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/train.h"
#include "runtime/cuda/cuda_graph.h"
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/host_task.h"
#endif

namespace nnx {

struct TrainStep::Impl {
  Impl(Trainer& t, Optimizer& o, TrainStepOptions opt)
      : trainer(t), optimizer(o), options(std::move(opt)) {}
  Trainer& trainer;
  Optimizer& optimizer;
  TrainStepOptions options;
  std::vector<Tensor> outputs;

  std::vector<double> run_host(std::span<const Tensor> inputs, std::span<const Tensor> targets);

#ifdef NNX_WITH_CUDA
  ~Impl() {
    try {
      drop_graph();
    } catch (...) {  // a device error at exit: nothing left to do about it
    }
    if (stream != nullptr) {
      try {
        cuda::destroy_stream(stream);
      } catch (...) {
      }
    }
    cuda::free_pinned(pinned);
  }

  std::vector<double> run_cuda(std::span<const Tensor> inputs, std::span<const Tensor> targets);
  void body();
  void update(bool captured);
  void drop_graph();
  void launch_step();
  std::vector<int64_t> key_now() const;
  std::string try_capture();

  class StreamScope;
  void* stream = nullptr;
  double* pinned = nullptr;  // 3 doubles per output: the head of each loss's scratch
  // The step's own copies of the caller's inputs and targets (what the graph reads).
  std::vector<Tensor> inputs, targets;
  std::vector<detail::DeviceLossConstants> constants;
  std::vector<bool> have_constants;
  std::vector<detail::QueuedLoss> losses;
  Tensor device_steps;  // Adam's step of each parameter, counted on the device in a graph
  cuda::GraphPoolPtr pool;
  // The step as two graphs: up to backward, then the update. When the first holds host tasks
  // (ops without a CUDA body), their errors are checked between the two, so that a failed one
  // leaves the parameters unchanged.
  void* graph = nullptr;
  void* update_graph = nullptr;
  bool check_between = false;
  std::vector<int64_t> key;           // what the current inputs, settings and memory are (key_now)
  int runs_with_key = 0;              // runs since the key last changed
  std::string eager_reason;           // why this key's steps are not captured (empty: they may be)
  int64_t replays = 0, captures = 0;  // in this object's life
  int64_t expected_steps = -1;        // the optimizer's step() count after our last run
  std::vector<int64_t> classes;       // per output: its class count (dim 1), for checking labels
#endif
};

TrainStep::TrainStep(Trainer& trainer, Optimizer& optimizer, TrainStepOptions options)
    : impl_(std::make_unique<Impl>(trainer, optimizer, std::move(options))) {}

TrainStep::~TrainStep() = default;

const std::vector<Tensor>& TrainStep::outputs() const {
  return impl_->outputs;
}

std::vector<double> TrainStep::run(std::span<const Tensor> inputs,
                                   std::span<const Tensor> targets) {
  Impl& m = *impl_;
  const int outputs = m.trainer.model().num_outputs();
  NNX_CHECK(int(targets.size()) == outputs, ErrorKind::usage, "TrainStep: expected ", outputs,
            " target(s), one per output (undefined for none), found ", targets.size());
#ifdef NNX_WITH_CUDA
  if (m.trainer.device().is_cuda()) return m.run_cuda(inputs, targets);
#endif
  return m.run_host(inputs, targets);
}

std::vector<double> TrainStep::Impl::run_host(std::span<const Tensor> inputs,
                                              std::span<const Tensor> targets) {
  outputs = trainer.forward(inputs);
  std::vector<double> values(outputs.size(), 0.0);
  std::vector<Tensor> grads(outputs.size());
  for (size_t k = 0; k < outputs.size(); ++k) {
    if (!targets[k].defined()) continue;
    LossResult r = compute_loss(outputs[k], targets[k], options.loss);
    values[k] = r.value;
    grads[k] = std::move(r.grad);
  }
  trainer.backward_replacing(grads);  // zero_grad() and backward()
  optimizer.step(trainer.parameters(), trainer.thread_pool());
  return values;
}

std::string TrainStep::cuda_graph_state() const {
  const Impl& m = *impl_;
  if (!m.trainer.device().is_cuda()) return "CPU: no CUDA graphs";
  if (!m.options.cuda_graph) return "off (op by op)";
#ifdef NNX_WITH_CUDA
  const std::string totals = "; " + std::to_string(m.replays) + " step(s) replayed, " +
                             std::to_string(m.captures) + " capture(s)";
  if (m.graph != nullptr) return "captured: the whole step as CUDA graphs" + totals;
  if (!m.eager_reason.empty()) return "op by op: " + m.eager_reason + totals;
  return "op by op until a step runs again with these shapes and optimizer state" + totals;
#else
  return "off (op by op)";
#endif
}

#ifdef NNX_WITH_CUDA

namespace {

// Class indices (any integer dtype, host or device) checked against [0, classes) and
// ignore_index, with compute_loss's message, before anything runs.
void check_labels(const Tensor& target, int64_t classes, int64_t ignore_index) {
  const Tensor y = target.to(Device::cpu()).to(DType::i64).contiguous();
  const int64_t* p = y.data<int64_t>();
  for (int64_t i = 0; i < y.numel(); ++i)
    NNX_CHECK(p[i] == ignore_index || (p[i] >= 0 && p[i] < classes), ErrorKind::usage,
              "cross_entropy: class index ", p[i], " at position ", i, " is out of range [0, ",
              classes, ") (ignore_index ", ignore_index, ")");
}

// The optimizer's host counters, to put back when a capture is discarded (its body ran on the
// host, its kernels never).
struct Counters {
  int64_t steps = 0;
  std::vector<Optimizer::ParamState> state;
};

}  // namespace

// Makes `stream` the trainer's and this thread's current stream on `device` for a scope.
class TrainStep::Impl::StreamScope {
 public:
  StreamScope(Trainer& trainer, void* stream, int device)
      : trainer_(trainer), device_(device), guard_(device) {
    previous_trainer_ = trainer.exchange_stream(stream);
    previous_current_ = cuda::current_stream(device);
    cuda::set_current_stream(stream, device);
  }
  ~StreamScope() {
    cuda::set_current_stream(previous_current_, device_);
    trainer_.exchange_stream(previous_trainer_);
  }
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  Trainer& trainer_;
  int device_;
  cuda::DeviceGuard guard_;
  void* previous_trainer_ = nullptr;
  void* previous_current_ = nullptr;
};

void TrainStep::Impl::drop_graph() {
  if (graph == nullptr) return;
  const int device = trainer.device().index;
  cuda::synchronize_stream(stream);
  cuda::destroy_graph(graph);
  cuda::destroy_graph(update_graph);
  graph = update_graph = nullptr;
  cuda::release_graph_pool(*pool, device);
  // What the graph wrote into can go back to the cache now.
  losses.clear();
  outputs.clear();
}

// Everything a captured step depends on besides the data: shapes and dtypes of the inputs and
// targets, the training mode, the optimizer's settings, and where the parameters, their
// gradients and the optimizer's state are.
std::vector<int64_t> TrainStep::Impl::key_now() const {
  std::vector<int64_t> k;
  auto add_spec = [&](const Tensor& t) {
    k.push_back(t.defined() ? t.dim() : -1);
    if (!t.defined()) return;
    for (int d = 0; d < t.dim(); ++d) k.push_back(t.size(d));
    k.push_back(int64_t(t.dtype()));
  };
  for (const Tensor& t : inputs) add_spec(t);
  for (const Tensor& t : targets) add_spec(t);
  k.push_back(trainer.training());
  k.push_back(int64_t(std::hash<std::string>{}(trainer.capture_obstacle())));  // hooks, profiling
  k.push_back(int64_t(optimizer.version_));
  for (const Parameter& p : trainer.parameters()) {
    k.push_back(int64_t(reinterpret_cast<uintptr_t>(p.value.defined() ? p.value.raw_data() : 0)));
    k.push_back(int64_t(reinterpret_cast<uintptr_t>(p.grad.defined() ? p.grad.raw_data() : 0)));
  }
  for (const Optimizer::ParamState& st : optimizer.state())
    for (const Tensor& b : st.buffers)
      k.push_back(int64_t(reinterpret_cast<uintptr_t>(b.defined() ? b.raw_data() : 0)));
  return k;
}

// A step up to the update, queued on the stream: zero_grad, forward, the losses (their values
// copied to page-locked memory), backward.
void TrainStep::Impl::body() {
  const Device device = trainer.device();
  trainer.zero_grad();
  std::vector<Tensor> out = trainer.forward(inputs);
  losses.assign(out.size(), detail::QueuedLoss{});
  std::vector<Tensor> grads(out.size());
  constants.resize(out.size());
  have_constants.resize(out.size(), false);
  for (size_t k = 0; k < out.size(); ++k) {
    if (!targets[k].defined()) continue;
    Tensor prediction = out[k];
    NNX_CHECK(prediction.dtype() == DType::f32, ErrorKind::unsupported, "TrainStep: output ", k,
              " is ", prediction.str(), ", the device losses take float32");
    if (!prediction.is_contiguous()) prediction = prediction.contiguous();
    if (!have_constants[k]) {  // made in an op-by-op run: copies to the device wait
      constants[k] = detail::device_loss_constants(prediction, options.loss);
      have_constants[k] = true;
    }
    losses[k] =
        detail::queue_device_loss(prediction, targets[k], options.loss, constants[k], stream);
    if (losses[k].launched)
      cuda::copy_async(pinned + 3 * k, Device::cpu(), losses[k].scratch.raw_data(), device,
                       3 * sizeof(double), stream);
    grads[k] = losses[k].grad;
  }
  trainer.backward(grads);
  outputs = std::move(out);
}

// The optimizer's update queued on the stream; `captured`: Adam reads its step on the device.
void TrainStep::Impl::update(bool captured) {
  const int64_t* steps = nullptr;
  if (captured && device_steps.defined()) {
    cuda::increment_each(device_steps.data<int64_t>(), int(device_steps.numel()), stream);
    steps = device_steps.data<int64_t>();
  }
  optimizer.step_impl(trainer.parameters(), nullptr, stream, steps);
}

// Captures the step as its two graphs (nothing runs); on any obstacle leaves no graph and the
// host state as it was, and returns why.
std::string TrainStep::Impl::try_capture() {
  const Device device = trainer.device();
  std::string obstacle = trainer.capture_obstacle();
  if (!obstacle.empty()) return obstacle;
  auto& params = trainer.parameters();
  const auto& state = optimizer.state();
  if (state.size() != params.size()) return "the optimizer has no state for these parameters yet";
  for (size_t k = 0; k < params.size(); ++k)
    if (params[k].grad.defined() && !state[k].present)
      return "the optimizer has no state for parameter " + params[k].name + " yet";
  const RandomEngine generator = trainer.generator();
  Counters saved{optimizer.steps_, optimizer.state_};
  device_steps = Tensor();
  if (optimizer.kind() != OptimizerKind::sgd) {
    Tensor host = Tensor::empty(Shape{int64_t(params.size())}, DType::i64);
    for (size_t k = 0; k < params.size(); ++k) host.data<int64_t>()[k] = state[k].step;
    device_steps = host.to(device);  // complete before the capture begins
  }
  if (!pool) pool = cuda::new_graph_pool();
  // The capture ran the calls on the host, their kernels never: the optimizer's counters go back
  // (the launches count them, as replays do).
  auto restore_counters = [&] {
    optimizer.steps_ = saved.steps;
    for (size_t k = 0; k < saved.state.size() && k < optimizer.state_.size(); ++k) {
      optimizer.state_[k].step = saved.state[k].step;
      optimizer.state_[k].fresh = saved.state[k].fresh;
      optimizer.state_[k].present = saved.state[k].present;
    }
  };
  void* front = nullptr;
  void* back = nullptr;
  auto discard = [&] {
    cuda::destroy_graph(front);
    cuda::destroy_graph(back);
    restore_counters();
    trainer.generator() = generator;
    losses.clear();
    outputs.clear();
    cuda::release_graph_pool(*pool, device.index);
  };
  try {
    front = cuda::capture_graph(stream, device.index, *pool, [&] { body(); });
    back = cuda::capture_graph(stream, device.index, *pool, [&] { update(true); });
  } catch (const Error& e) {
    discard();
    return "the step cannot be captured (" + e.message() + ")";
  } catch (...) {
    discard();
    throw;
  }
  if (!(trainer.generator() == generator)) {
    discard();
    return "the step draws random numbers (Dropout, StochasticDepth)";
  }
  restore_counters();
  graph = front;
  update_graph = back;
  check_between = cuda::graph_pool_tasks(*pool) > 0;
  ++captures;
  return {};
}

// One step from the graphs, and the host's side of its update: the optimizer's step counts.
void TrainStep::Impl::launch_step() {
  cuda::launch_graph(graph, stream);
  if (check_between) {
    cuda::synchronize_stream(stream);
    if (std::string e = cuda::take_host_task_error(stream); !e.empty())
      fail(ErrorKind::unsupported, trainer.model().source(),
           ": a training step's host task (an op's CPU body): ", e, "; the update was not applied");
  }
  cuda::launch_graph(update_graph, stream);
  ++replays;
  auto& params = trainer.parameters();
  for (size_t k = 0; k < params.size() && k < optimizer.state_.size(); ++k)
    if (params[k].grad.defined()) ++optimizer.state_[k].step;
  ++optimizer.steps_;
}

std::vector<double> TrainStep::Impl::run_cuda(std::span<const Tensor> in,
                                              std::span<const Tensor> tg) {
  const Device device = trainer.device();
  cuda::DeviceGuard guard(device.index);
  if (stream == nullptr) stream = cuda::create_stream(device.index);
  const size_t n_out = tg.size();
  if (pinned == nullptr)
    pinned = static_cast<double*>(cuda::alloc_pinned(3 * n_out * sizeof(double)));
  const bool cross_entropy = options.loss.kind == LossKind::cross_entropy;

  // The caller's tensors as the step's buffers hold them: inputs float32 (NCHW), targets float32
  // or, for class indices, int64.
  std::vector<Tensor> src_in(in.size()), src_tg(n_out);
  for (size_t k = 0; k < in.size(); ++k) {
    NNX_CHECK(in[k].defined(), ErrorKind::usage, "input ", k, " is an undefined tensor");
    Tensor t = in[k].dim() == 3 ? in[k].unsqueeze(0) : in[k];
    if (t.dtype() != DType::f32) t = t.to(Device::cpu()).to(DType::f32);
    src_in[k] = t.device() == device || t.device().is_cpu() ? t.contiguous()
                                                            : t.to(Device::cpu()).contiguous();
  }
  for (size_t k = 0; k < n_out; ++k) {
    if (!tg[k].defined()) continue;
    Tensor t = tg[k];
    const DType want = cross_entropy && !dtype_is_floating(t.dtype()) ? DType::i64 : DType::f32;
    NNX_CHECK(cross_entropy || dtype_is_floating(t.dtype()), ErrorKind::usage,
              loss_name(options.loss.kind), ": expected a floating-point target, found ", t.str());
    if (t.dtype() != want) t = t.to(Device::cpu()).to(want);
    src_tg[k] = t.device() == device || t.device().is_cpu() ? t.contiguous()
                                                            : t.to(Device::cpu()).contiguous();
  }
  // The buffers: kept while shapes and dtypes stay (the graph reads them), else made anew.
  auto same_spec = [](const Tensor& a, const Tensor& b) {
    return a.defined() == b.defined() &&
           (!a.defined() || (a.shape() == b.shape() && a.dtype() == b.dtype()));
  };
  bool respec = inputs.size() != src_in.size() || targets.size() != src_tg.size();
  for (size_t k = 0; !respec && k < src_in.size(); ++k) respec = !same_spec(inputs[k], src_in[k]);
  for (size_t k = 0; !respec && k < src_tg.size(); ++k) respec = !same_spec(targets[k], src_tg[k]);
  if (respec) {
    drop_graph();
    inputs.assign(src_in.size(), Tensor());
    targets.assign(src_tg.size(), Tensor());
    for (size_t k = 0; k < src_in.size(); ++k)
      inputs[k] = Tensor::empty(src_in[k].shape(), DType::f32, device);
    for (size_t k = 0; k < src_tg.size(); ++k)
      if (src_tg[k].defined())
        targets[k] = Tensor::empty(src_tg[k].shape(), src_tg[k].dtype(), device);
    have_constants.assign(n_out, false);
  }
  // Class indices are checked before anything changes (the loss's own check would come after the
  // update in a replay); the class count is the last step's (same shapes) or found on the way.
  if (cross_entropy) {
    if (respec || classes.size() != n_out) {  // the outputs' shapes for these inputs
      std::vector<TensorSpec> specs;
      for (const Tensor& t : src_in) specs.push_back({t.shape(), DType::f32});
      const Graph& g = trainer.model().graph();
      const Plan plan = make_plan(g, specs);
      classes.assign(n_out, 0);
      for (size_t k = 0; k < n_out && k < g.outputs.size(); ++k) {
        const Shape& shape = plan.specs[size_t(g.outputs[k].node)][size_t(g.outputs[k].port)].shape;
        classes[k] = shape.size() >= 2 ? shape[1] : (shape.size() == 1 ? shape[0] : 0);
      }
    }
    for (size_t k = 0; k < n_out; ++k)
      if (src_tg[k].defined() && src_tg[k].dtype() == DType::i64)
        check_labels(src_tg[k], classes[k], options.loss.ignore_index);
  }

  StreamScope scope(trainer, stream, device.index);
  const std::vector<int64_t> now = key_now();
  if (graph != nullptr && (now != key || optimizer.steps() != expected_steps)) drop_graph();
  if (now != key) {
    key = now;
    runs_with_key = 0;
    eager_reason.clear();
  }
  // Should anything below throw, the work queued so far finishes before the sources it reads
  // (the caller's tensors, temporaries here) are freed.
  struct FinishOnThrow {
    void* stream;
    int exceptions = std::uncaught_exceptions();
    ~FinishOnThrow() {
      if (std::uncaught_exceptions() <= exceptions) return;
      try {
        cuda::synchronize_stream(stream);
      } catch (...) {  // the device's error is the one being thrown already, or comes next
      }
    }
  } finish_on_throw{stream};
  // Work the caller queued on the legacy stream (weights loaded, data made) comes first.
  cuda::wait_for_legacy(stream, device.index);
  for (size_t k = 0; k < inputs.size(); ++k)
    cuda::copy_async(inputs[k].raw_data(), device, src_in[k].raw_data(), src_in[k].device(),
                     inputs[k].nbytes(), stream);
  for (size_t k = 0; k < targets.size(); ++k)
    if (targets[k].defined())
      cuda::copy_async(targets[k].raw_data(), device, src_tg[k].raw_data(), src_tg[k].device(),
                       targets[k].nbytes(), stream);

  if (graph == nullptr && options.cuda_graph && eager_reason.empty() && runs_with_key >= 1) {
    eager_reason = try_capture();
    if (graph != nullptr) key = key_now();  // the capture's own buffers (none new in a steady step)
  }
  if (graph != nullptr) {
    launch_step();
  } else {
    // What rules a capture out, seen in an op-by-op run: random draws (a graph would repeat
    // them).
    const RandomEngine generator = trainer.generator();
    body();
    update(false);
    if (options.cuda_graph && eager_reason.empty() && !(trainer.generator() == generator))
      eager_reason = "the step draws random numbers (Dropout, StochasticDepth)";
  }
  cuda::synchronize_stream(stream);
  ++runs_with_key;
  expected_steps = optimizer.steps();
  std::vector<double> values(n_out, 0.0);
  for (size_t k = 0; k < n_out && k < losses.size(); ++k)
    if (targets[k].defined()) values[k] = detail::finish_device_loss(losses[k], pinned + 3 * k);
  return values;
}

#endif  // NNX_WITH_CUDA

}  // namespace nnx
