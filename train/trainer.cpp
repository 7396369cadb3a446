// The Trainer: a training forward that keeps what each node's backward reads (and frees the
// rest as soon as the forward is past it), then the backward passes in reverse schedule order,
// with gradients summed where a value feeds several consumers and where one layer stands at
// several nodes.
#include "nnx/train.h"

#include <algorithm>
#include <chrono>

#include "graph/planner.h"
#include "nnx/cuda.h"
#include "nnx/error.h"
#include "nnx/thread_pool.h"
#include "runtime/model_impl.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/train.h"
#include "runtime/cuda/cuda_runtime.h"
#endif

namespace nnx {

namespace {

size_t bytes_of(const Tensor& t) {
  return t.defined() ? size_t(t.numel()) * dtype_size(t.dtype()) : 0;
}

// t = 0, t contiguous f32, split over the pool (Tensor::fill goes element by element); on a
// CUDA device queued on `stream`.
void zero_into(ThreadPool* pool, Tensor& t, void* stream) {
#ifdef NNX_WITH_CUDA
  if (t.device().is_cuda()) {
    cuda::DeviceGuard guard(t.device().index);
    cuda::fill_zero(t.raw_data(), t.nbytes(), stream);
    return;
  }
#endif
  (void)stream;
  float* d = t.data<float>();
  parallel_for(pool, t.numel(), 1 << 16,
               [&](int64_t b, int64_t e) { std::fill(d + b, d + e, 0.f); });
}

// dst += src, both contiguous f32 of one shape on one device (queued on `stream` there).
void add_into(ThreadPool* pool, Tensor& dst, const Tensor& src, void* stream) {
#ifdef NNX_WITH_CUDA
  if (dst.device().is_cuda()) {
    NNX_CHECK(src.device() == dst.device(), ErrorKind::usage, "gradient sum of ", src.str(), " on ",
              src.device().str(), " into one on ", dst.device().str());
    cuda::DeviceGuard guard(dst.device().index);
    cuda::binary_same_shape(cuda::BinaryOp::add, false, dst.data<float>(), src.data<float>(),
                            dst.data<float>(), dst.numel(), stream);
    return;
  }
#endif
  (void)stream;
  float* d = dst.data<float>();
  const float* s = src.data<float>();
  parallel_for(pool, dst.numel(), 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] += s[i];
  });
}

}  // namespace

struct Trainer::Impl {
  Model model;
  Device device = Device::cpu();
  // The CUDA stream the ops, fills and sums are queued on: the legacy one, or a TrainStep's own
  // while it runs the trainer.
  void* stream = nullptr;
  // zero_grad(); `lazily`: the grads backward can write in place are left as they are, marked
  // stale for it to overwrite.
  void zero_grads(bool lazily);
  // Profiling on CUDA: the node's kernels waited for, so that the time is theirs.
  void settle() const {
    if (profiling && device.is_cuda()) cuda::synchronize(device.index);
  }
  // Zeros of this shape on the trainer's device.
  Tensor zeros(const Shape& shape) const {
    if (device.is_cpu()) return Tensor::zeros(shape, DType::f32);
    Tensor t = Tensor::empty(shape, DType::f32, device);
    zero_into(nullptr, t, stream);
    return t;
  }
  // An input or gradient the caller passed, as contiguous f32 on the trainer's device (itself
  // when it already is one).
  Tensor on_device(const Tensor& t) const {
    if (t.device() == device && t.dtype() == DType::f32 && t.is_contiguous()) return t;
    return t.to(Device::cpu()).to(DType::f32).contiguous().to(device);
  }
  bool profiling = false;
  std::vector<double> forward_ms, backward_ms;  // [node], while profiling
  std::vector<int64_t> forward_calls;
  std::unique_ptr<ThreadPool> pool;
  RandomEngine rng;
  bool training = true;

  std::vector<Parameter> params;
  // zeroed[k]: params[k].grad is zero as zero_grad() left it (same storage, nothing added since):
  // the first backward contribution is written straight into it instead of added.
  std::vector<bool> zeroed;
  std::vector<const Storage*> zeroed_storage;
  // stale[k]: params[k].grad still holds an earlier step's values that backward_replacing() left
  // for this backward to overwrite (zeroed[k] set too); what it does not overwrite is zeroed at
  // its end.
  std::vector<bool> stale;
  // param_index[layer][k]: index into params of the layer's k-th parameter, or -1 (buffers).
  std::vector<std::vector<int>> param_index;

  std::vector<TensorSpec> planned_inputs;
  Plan plan;
  bool planned = false;
  // Per node: whether its outputs carry a gradient, what its backward reads, how many
  // forward consumers and backward readers each output port has.
  std::vector<bool> requires_grad;
  std::vector<BackwardNeeds> needs;
  std::vector<std::vector<int>> forward_uses;  // [node][port], consumers still to run forward
  std::vector<std::vector<bool>> kept;         // [node][port], read by some backward

  std::vector<std::vector<Tensor>> values;  // [node][port] of the last forward
  std::vector<std::vector<Tensor>> saved;   // [node]: what its training forward kept
  std::vector<std::vector<Tensor>> grads;   // [node][port] during backward
  // Storage of the caller's output gradients, which backward reads in place and never writes.
  std::vector<const Storage*> caller_grads;
  bool is_caller(const Tensor& t) const {
    return t.defined() && std::find(caller_grads.begin(), caller_grads.end(), t.storage().get()) !=
                              caller_grads.end();
  }
  bool have_forward = false;
  // Data-parallel hooks; final_node[layer]: the layer's last node in backward order, or -1.
  StatReducer* reducer = nullptr;
  std::function<void(int)> grad_ready;
  std::vector<int> final_node;

  size_t live_bytes = 0, peak_bytes = 0;
  void grow(size_t n) {
    live_bytes += n;
    peak_bytes = std::max(peak_bytes, live_bytes);
  }
  void shrink(size_t n) { live_bytes -= std::min(live_bytes, n); }
  // Drops a forward value or gradient this trainer allocated (views count nothing).
  void drop(Tensor& t, bool owned) {
    if (owned) shrink(bytes_of(t));
    t = Tensor();
  }

  const Graph& graph() const { return model.graph(); }
  bool is_view(int v, int port) const {
    return v == 0 || graph().layer_of(v).op->output_view_of(port).has_value();
  }
  // Whether values[v][p] is memory this trainer counts: allocated here, or made by an op whose
  // output is a view in evaluation but a new tensor in training (Dropout).
  std::vector<std::vector<bool>> owned;
  bool owns(int v, int port) const { return v != 0 && owned[size_t(v)][size_t(port)]; }

  void collect_parameters() {
    const Graph& g = graph();
    param_index.assign(g.layers.size(), {});
    for (size_t l = 0; l < g.layers.size(); ++l) {
      const Layer& layer = g.layers[l];
      if (!layer.op) continue;
      for (const Param& p : layer.op->params()) {
        int index = -1;
        if (p.trainable && p.value.dtype() == DType::f32) {
          index = int(params.size());
          params.push_back({std::to_string(layer.description_index) + "." + p.name,
                            layer.description_index, p.value, zeros(p.value.shape())});
        }
        param_index[l].push_back(index);
      }
    }
  }

  void replan(const std::vector<TensorSpec>& specs) {
    const Graph& g = graph();
    plan = make_plan(g, specs);
    size_t n = g.nodes.size();
    requires_grad.assign(n, false);
    needs.assign(n, BackwardNeeds{});
    forward_uses.assign(n, {});
    kept.assign(n, {});
    values.assign(n, {});
    saved.assign(n, {});
    grads.assign(n, {});
    owned.assign(n, {});
    forward_uses[0].assign(specs.size(), 0);
    kept[0].assign(specs.size(), false);
    for (int v : plan.steps) {
      const Node& node = g.nodes[size_t(v)];
      const Layer& layer = g.layer_of(v);
      bool rg = false;
      for (int k : param_index[size_t(node.layer)]) rg = rg || k >= 0;
      for (const PortRef& in : node.inputs) rg = rg || requires_grad[size_t(in.node)];
      requires_grad[size_t(v)] = rg;
      needs[size_t(v)] = layer.op->backward_needs();
      forward_uses[size_t(v)].assign(size_t(node.num_outputs), 0);
      owned[size_t(v)].assign(size_t(node.num_outputs), false);
      kept[size_t(v)].assign(size_t(node.num_outputs), false);
    }
    for (int v : plan.steps) {
      const Node& node = g.nodes[size_t(v)];
      bool back = requires_grad[size_t(v)];
      for (const PortRef& in : node.inputs) {
        ++forward_uses[size_t(in.node)][size_t(in.port)];
        if (back && needs[size_t(v)].inputs) kept[size_t(in.node)][size_t(in.port)] = true;
      }
      if (back && needs[size_t(v)].outputs)
        for (size_t p = 0; p < kept[size_t(v)].size(); ++p) kept[size_t(v)][p] = true;
    }
    for (const PortRef& o : g.outputs) kept[size_t(o.node)][size_t(o.port)] = true;
    final_node.assign(g.layers.size(), -1);
    for (auto it = plan.steps.rbegin(); it != plan.steps.rend(); ++it)
      if (requires_grad[size_t(*it)]) final_node[size_t(g.nodes[size_t(*it)].layer)] = *it;
    planned_inputs = specs;
    planned = true;
  }

  void release_all() {
    for (size_t v = 0; v < values.size(); ++v) {
      for (size_t p = 0; p < values[v].size(); ++p) drop(values[v][p], owns(int(v), int(p)));
      for (auto& t : saved[v]) drop(t, true);
      saved[v].clear();
      for (auto& t : grads[v]) drop(t, !is_caller(t));
    }
    caller_grads.clear();
    have_forward = false;
  }
};

Trainer::Trainer(const Model& model, TrainerOptions options) : impl_(std::make_unique<Impl>()) {
  NNX_CHECK(model.defined(), ErrorKind::usage, "Trainer needs a loaded model");
  impl_->model = model.clone();
  int threads = options.threads > 0 ? options.threads : ThreadPool::hardware_threads();
  impl_->pool = std::make_unique<ThreadPool>(threads);
  impl_->rng.seed(options.seed);
  impl_->device = options.device;
  if (!options.device.is_cpu()) {
    NNX_CHECK(options.device.is_cuda(), ErrorKind::usage, "Trainer: no training on ",
              options.device.str());
    NNX_CHECK(cuda::available(), ErrorKind::device, "Trainer on ", options.device.str(), ": ",
              cuda::unavailable_reason());
    NNX_CHECK(options.device.index >= 0 && options.device.index < cuda::device_count(),
              ErrorKind::device, "Trainer on ", options.device.str(), ": the machine has ",
              cuda::device_count(), " CUDA device(s)");
    cuda::init();
    // The copy's parameters and buffers move to the device, where the ops and the optimizer
    // update them.
    for (const Layer& layer : impl_->model.graph().layers)
      if (layer.op) layer.op->place_params(options.device);
  }
  impl_->collect_parameters();
}

Trainer::~Trainer() = default;
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;

void Trainer::set_training(bool on) {
  impl_->training = on;
}
void Trainer::set_seed(uint64_t seed) {
  impl_->rng.seed(seed);
}
bool Trainer::training() const {
  return impl_->training;
}
std::vector<Parameter>& Trainer::parameters() {
  return impl_->params;
}
const Model& Trainer::model() const {
  return impl_->model;
}
Device Trainer::device() const {
  return impl_->device;
}

void Trainer::zero_grad() {
  Impl& m = *impl_;
  m.zero_grads(false);
}

void Trainer::backward_replacing(std::span<const Tensor> grad_outputs) {
  Impl& m = *impl_;
  m.zero_grads(m.device.is_cpu());
  try {
    backward(grad_outputs);
  } catch (...) {
    m.zero_grads(false);  // no stale gradient outlives a failed backward
    throw;
  }
}

void Trainer::Impl::zero_grads(bool lazily) {
  Impl& m = *this;
  m.zeroed.assign(m.params.size(), false);
  m.zeroed_storage.assign(m.params.size(), nullptr);
  m.stale.assign(m.params.size(), false);
  for (size_t k = 0; k < m.params.size(); ++k) {
    Parameter& p = m.params[k];
    if (p.grad.defined() && p.grad.device() == m.device && p.grad.dtype() == DType::f32 &&
        p.grad.is_contiguous() && p.grad.shape() == p.value.shape()) {
      if (lazily)
        m.stale[k] = true;
      else
        zero_into(m.pool.get(), p.grad, m.stream);
      m.zeroed[k] = true;
      m.zeroed_storage[k] = p.grad.storage().get();
    } else if (p.grad.defined() && p.grad.device().is_cpu()) {
      p.grad.fill(0.0);
    } else {
      p.grad = m.zeros(p.value.shape());  // replaced by the caller with one elsewhere
    }
  }
}

void Trainer::set_profiling(bool on) {
  Impl& m = *impl_;
  m.profiling = on;
  const size_t nodes = m.graph().nodes.size();
  m.forward_ms.assign(nodes, 0.0);
  m.backward_ms.assign(nodes, 0.0);
  m.forward_calls.assign(nodes, 0);
}

std::vector<NodeProfile> Trainer::profile() const {
  const Impl& m = *impl_;
  std::vector<NodeProfile> out;
  if (m.forward_ms.empty()) return out;
  for (int v : m.plan.steps) {
    NodeProfile p;
    p.node = m.graph().describe_node(v);
    p.forward_ms = m.forward_ms[size_t(v)];
    p.backward_ms = m.backward_ms[size_t(v)];
    p.calls = m.forward_calls[size_t(v)];
    out.push_back(std::move(p));
  }
  return out;
}

TrainMemory Trainer::memory() const {
  TrainMemory m;
  for (const Layer& layer : impl_->graph().layers)
    if (layer.op)
      for (const Param& p : layer.op->params()) m.parameter_bytes += bytes_of(p.value);
  for (const Parameter& p : impl_->params) m.gradient_bytes += bytes_of(p.grad);
  m.peak_activation_bytes = impl_->peak_bytes;
  return m;
}

void Trainer::reset_peak() {
  impl_->peak_bytes = impl_->live_bytes;
}

void Trainer::set_stat_reducer(StatReducer* reducer) {
  impl_->reducer = reducer;
}

void Trainer::set_grad_ready_hook(std::function<void(int)> on_grad_ready) {
  impl_->grad_ready = std::move(on_grad_ready);
}

void* Trainer::exchange_stream(void* stream) {
  void* previous = impl_->stream;
  impl_->stream = stream;
  return previous;
}

std::string Trainer::capture_obstacle() const {
  if (impl_->profiling) return "profiling is on";
  if (impl_->reducer != nullptr) return "a stat reducer is set";
  if (impl_->grad_ready) return "a grad-ready hook is set";
  return {};
}

RandomEngine& Trainer::generator() {
  return impl_->rng;
}

ThreadPool* Trainer::thread_pool() {
  return impl_->pool.get();
}

std::vector<Tensor> Trainer::forward(std::span<const Tensor> inputs) {
  Impl& m = *impl_;
  const Graph& g = m.graph();
  NNX_CHECK(int(inputs.size()) == g.num_inputs(), ErrorKind::shape, g.source, ": expected ",
            g.num_inputs(), " input tensor(s), found ", inputs.size());
  m.release_all();
  std::vector<Tensor> bound(inputs.size());
  std::vector<TensorSpec> specs(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    NNX_CHECK(inputs[k].defined(), ErrorKind::usage, "input ", k, " is an undefined tensor");
    Tensor t = inputs[k];
    if (t.dim() == 3) t = t.unsqueeze(0);
    NNX_CHECK(t.dim() == 4, ErrorKind::shape, g.source, ": input ", k,
              ": expected an NCHW (or CHW) tensor, found shape ", inputs[k].shape().str());
    t = m.on_device(t);
    specs[k] = {t.shape(), t.dtype()};
    bound[k] = std::move(t);
  }
  if (!m.planned || specs != m.planned_inputs) m.replan(specs);
  m.values[0] = std::move(bound);
  auto uses = m.forward_uses;

  ExecContext ctx;
  ctx.device = m.device;
  ctx.pool = m.pool.get();
  ctx.training = m.training;
  ctx.rng = &m.rng;
  ctx.reducer = m.training ? m.reducer : nullptr;
  ctx.stream = m.stream;
  std::vector<Tensor> args;
  for (int v : m.plan.steps) {
    const Node& node = g.nodes[size_t(v)];
    const Op& op = *g.layer_of(v).op;
    args.assign(node.inputs.size(), Tensor());
    for (size_t i = 0; i < node.inputs.size(); ++i)
      args[i] = m.values[size_t(node.inputs[i].node)][size_t(node.inputs[i].port)];
    auto& out = m.values[size_t(v)];
    out.assign(size_t(node.num_outputs), Tensor());
    for (size_t p = 0; p < out.size(); ++p) {
      if (m.is_view(v, int(p))) continue;
      const TensorSpec& spec = m.plan.specs[size_t(v)][p];
      out[p] = Tensor::empty(spec.shape, spec.dtype, m.device);
      m.grow(bytes_of(out[p]));
    }
    ctx.saved = &m.saved[size_t(v)];
    m.settle();
    const auto start = std::chrono::steady_clock::now();
    try {
      op.forward(ctx, args, out);
    } catch (const Error& e) {
      throw Error(e.kind(), g.source + ": " + g.describe_node(v) + ": " + e.message());
    }
    m.settle();
    if (m.profiling) {
      m.forward_ms[size_t(v)] +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      ++m.forward_calls[size_t(v)];
    }
    for (const Tensor& t : m.saved[size_t(v)]) m.grow(bytes_of(t));
    for (size_t p = 0; p < out.size(); ++p) {
      bool own = !m.is_view(v, int(p));
      if (!own && out[p].defined()) {
        const Tensor& of = args[size_t(*op.output_view_of(int(p)))];
        own = out[p].storage() != of.storage();
        if (own) m.grow(bytes_of(out[p]));
      }
      m.owned[size_t(v)][p] = own;
    }
    // Values the forward is done with and no backward reads.
    for (const PortRef& in : node.inputs) {
      if (--uses[size_t(in.node)][size_t(in.port)] == 0 &&
          !m.kept[size_t(in.node)][size_t(in.port)])
        m.drop(m.values[size_t(in.node)][size_t(in.port)], m.owns(in.node, in.port));
    }
  }
  m.have_forward = true;
  std::vector<Tensor> outputs;
  for (const PortRef& o : g.outputs) outputs.push_back(m.values[size_t(o.node)][size_t(o.port)]);
  return outputs;
}

void Trainer::backward(std::span<const Tensor> grad_outputs) {
  Impl& m = *impl_;
  const Graph& g = m.graph();
  NNX_CHECK(m.have_forward, ErrorKind::usage, "Trainer::backward needs a forward first");
  NNX_CHECK(int(grad_outputs.size()) == g.num_outputs(), ErrorKind::shape, g.source, ": expected ",
            g.num_outputs(), " output gradient(s), found ", grad_outputs.size());
  for (size_t v = 0; v < m.grads.size(); ++v) m.grads[v].assign(m.values[v].size(), Tensor());
  m.caller_grads.clear();

  // Gradient into value (node, port): the first contribution is kept as it is, later ones add
  // (into a tensor of this trainer: the caller's gradients are only read).
  auto accumulate = [&](const PortRef& at, Tensor grad) {
    Tensor& slot = m.grads[size_t(at.node)][size_t(at.port)];
    if (!slot.defined()) {
      slot = std::move(grad);
    } else if (m.is_caller(slot)) {
      if (m.is_caller(grad)) {
        grad = grad.clone();
        m.grow(bytes_of(grad));
      }
      add_into(m.pool.get(), grad, slot, m.stream);
      slot = std::move(grad);
    } else {
      add_into(m.pool.get(), slot, grad, m.stream);
      m.drop(grad, !m.is_caller(grad));
    }
  };
  for (size_t k = 0; k < grad_outputs.size(); ++k) {
    const PortRef& o = g.outputs[k];
    if (!grad_outputs[k].defined() || !m.requires_grad[size_t(o.node)]) continue;
    const TensorSpec& spec = m.plan.specs[size_t(o.node)][size_t(o.port)];
    NNX_CHECK(grad_outputs[k].shape() == spec.shape, ErrorKind::shape, g.source,
              ": output gradient ", k, ": expected shape ", spec.shape.str(), ", found ",
              grad_outputs[k].shape().str());
    // Used in place when it is already contiguous float32 (backward only reads it), else a
    // converted copy.
    Tensor grad = m.on_device(grad_outputs[k]);
    if (grad.storage() == grad_outputs[k].storage())
      m.caller_grads.push_back(grad.storage().get());
    else
      m.grow(bytes_of(grad));
    accumulate(o, std::move(grad));
  }

  // Backward readers still to run, per value: a value is freed after its last one.
  std::vector<std::vector<int>> readers(g.nodes.size());
  for (size_t v = 0; v < m.values.size(); ++v) readers[v].assign(m.values[v].size(), 0);
  for (int v : m.plan.steps) {
    if (!m.requires_grad[size_t(v)]) continue;
    const Node& node = g.nodes[size_t(v)];
    if (m.needs[size_t(v)].inputs)
      for (const PortRef& in : node.inputs) ++readers[size_t(in.node)][size_t(in.port)];
    if (m.needs[size_t(v)].outputs)
      for (size_t p = 0; p < m.values[size_t(v)].size(); ++p) ++readers[size_t(v)][p];
  }
  auto done_reading = [&](int node, int port) {
    if (--readers[size_t(node)][size_t(port)] == 0)
      m.drop(m.values[size_t(node)][size_t(port)], m.owns(node, port));
  };

  ExecContext ctx;
  ctx.device = m.device;
  ctx.pool = m.pool.get();
  ctx.training = m.training;
  ctx.rng = &m.rng;
  ctx.reducer = m.training ? m.reducer : nullptr;
  ctx.stream = m.stream;
  std::vector<Tensor> ins, outs, gouts, gins, gparams;
  std::vector<bool> direct_params;
  for (auto it = m.plan.steps.rbegin(); it != m.plan.steps.rend(); ++it) {
    int v = *it;
    if (!m.requires_grad[size_t(v)]) continue;
    const Node& node = g.nodes[size_t(v)];
    const Layer& layer = g.layer_of(v);
    const Op& op = *layer.op;
    const BackwardNeeds need = m.needs[size_t(v)];
    ins.assign(node.inputs.size(), Tensor());
    gins.assign(node.inputs.size(), Tensor());
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const PortRef& in = node.inputs[i];
      if (need.inputs) ins[i] = m.values[size_t(in.node)][size_t(in.port)];
      if (m.requires_grad[size_t(in.node)]) {
        const TensorSpec& spec = m.plan.specs[size_t(in.node)][size_t(in.port)];
        gins[i] = Tensor::empty(spec.shape, DType::f32, m.device);
        m.grow(bytes_of(gins[i]));
      }
    }
    outs.assign(m.values[size_t(v)].size(), Tensor());
    gouts.assign(m.values[size_t(v)].size(), Tensor());
    for (size_t p = 0; p < outs.size(); ++p) {
      if (need.outputs) outs[p] = m.values[size_t(v)][p];
      gouts[p] = m.grads[size_t(v)][p];
      if (!gouts[p].defined()) {
        // From the pooled allocator (large Tensor::zeros are fresh pages, faulted in every step).
        gouts[p] = Tensor::empty(m.plan.specs[size_t(v)][p].shape, DType::f32, m.device);
        zero_into(m.pool.get(), gouts[p], m.stream);
        m.grow(bytes_of(gouts[p]));
        m.grads[size_t(v)][p] = gouts[p];
      }
    }
    const auto& index = m.param_index[size_t(node.layer)];
    gparams.assign(index.size(), Tensor());
    bool any_param = false;
    // Gradients a backward writes: straight into Parameter::grad where zero_grad() left it zero,
    // else a temporary added into it.
    direct_params.assign(index.size(), false);
    for (size_t k = 0; k < index.size(); ++k) {
      if (index[k] < 0) continue;
      const size_t at = size_t(index[k]);
      Parameter& p = m.params[at];
      if (at < m.zeroed.size() && m.zeroed[at] && p.grad.storage().get() == m.zeroed_storage[at] &&
          p.grad.is_contiguous() && p.grad.shape() == p.value.shape()) {
        gparams[k] = p.grad;
        direct_params[k] = true;
        m.zeroed[at] = false;
      } else {
        gparams[k] = Tensor::empty(p.value.shape(), DType::f32, m.device);
      }
      any_param = true;
    }
    if (!any_param) gparams.clear();
    ctx.saved = &m.saved[size_t(v)];
    m.settle();
    const auto start = std::chrono::steady_clock::now();
    try {
      op.backward(ctx, ins, outs, gouts, gins, gparams);
    } catch (const Error& e) {
      throw Error(e.kind(), g.source + ": " + g.describe_node(v) + ": backward: " + e.message());
    }
    m.settle();
    if (m.profiling)
      m.backward_ms[size_t(v)] +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
    for (size_t k = 0; k < gparams.size(); ++k)
      if (index[k] >= 0 && !direct_params[k])
        add_into(m.pool.get(), m.params[size_t(index[k])].grad, gparams[k], m.stream);
    if (m.grad_ready && m.final_node[size_t(node.layer)] == v)
      for (int k : index)
        if (k >= 0) m.grad_ready(k);
    // This node's outputs, gradients and saved state are no longer needed.
    for (auto& t : m.grads[size_t(v)]) m.drop(t, !m.is_caller(t));
    for (auto& t : m.saved[size_t(v)]) m.drop(t, true);
    m.saved[size_t(v)].clear();
    ins.assign(ins.size(), Tensor());
    outs.assign(outs.size(), Tensor());
    gouts.assign(gouts.size(), Tensor());
    if (need.outputs)
      for (size_t p = 0; p < m.values[size_t(v)].size(); ++p) done_reading(v, int(p));
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const PortRef& in = node.inputs[i];
      if (gins[i].defined()) accumulate(in, std::move(gins[i]));
      if (need.inputs) done_reading(in.node, in.port);
    }
  }
  m.release_all();
  // What backward_replacing() left for this backward and it did not write: zeros now.
  for (size_t k = 0; k < m.stale.size(); ++k)
    if (m.stale[k] && m.zeroed[k] && m.params[k].grad.storage().get() == m.zeroed_storage[k])
      zero_into(m.pool.get(), m.params[k].grad, m.stream);
  m.stale.assign(m.stale.size(), false);
  // What backward did not reach stays zero, but later changes are the caller's: a next backward
  // adds.
  m.zeroed.assign(m.zeroed.size(), false);
}

}  // namespace nnx
