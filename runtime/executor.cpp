// The Executor: plans once per input shapes, keeps one arena for all activations, runs nodes in
// schedule order (fused chains as one node, graph/fusion.h) and hands out the outputs as
// tensors of their own.
#include "nnx/executor.h"

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "graph/planner.h"
#include "nnx/cuda.h"
#include "nnx/error.h"
#include "nnx/thread_pool.h"
#include "runtime/model_impl.h"

namespace nnx {

bool fuse_by_default() {
  static const bool enabled = [] {
    const char* v = std::getenv("NNX_FUSE");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return enabled;
}

struct Executor::Impl {
  ~Impl() {
    if (stream != nullptr) cuda::destroy_stream(stream);
  }
  Model model;
  void* stream = nullptr;  // CUDA: this Executor's own stream
  std::unique_ptr<ThreadPool> pool;
  ExecContext ctx;
  bool planned = false;
  std::vector<TensorSpec> planned_inputs;
  Plan plan;
  std::shared_ptr<Storage> arena;
  std::vector<std::vector<Tensor>> values;       // values[node][port] for the current run
  std::vector<std::vector<Tensor>> node_inputs;  // reused argument lists
  bool profile = false;
  std::vector<NodeTiming> timings;
  bool fuse = false;
  std::shared_ptr<const Fusion> fusion;  // null: every node runs on its own

  void replan(const std::vector<TensorSpec>& specs) {
    const Graph& graph = model.graph();
    if (fuse && !fusion) {
      // Found (and BatchNorm folded) by the model's first plan, shared by all its Executors.
      const Model::Impl& shared = *model.impl();
      fusion = model.device().is_cuda()
                   ? shared.fusion.get_cuda(shared.graph, !shared.weights_may_change)
                   : shared.fusion.get(shared.graph, !shared.weights_may_change, pool.get());
    }
    plan = make_plan(graph, specs, fusion.get());
    arena = Storage::allocate(std::max<size_t>(plan.arena_bytes, 1), allocator_for(model.device()));
    values.assign(graph.nodes.size(), {});
    node_inputs.assign(graph.nodes.size(), {});
    for (int v : plan.steps) {
      auto& out = values[size_t(v)];
      out.resize(plan.specs[size_t(v)].size());
      for (size_t p = 0; p < out.size(); ++p) {
        int b = plan.buffer[size_t(v)][p];
        if (b < 0) continue;  // a view: the op sets it
        // A chain's head writes the chain's last value (of another shape after a pooling).
        const int last =
            fusion && fusion->is_head(v) &&
                    !fusion->chains[size_t(fusion->chain_of[size_t(v)])].absorbed.empty()
                ? fusion->chains[size_t(fusion->chain_of[size_t(v)])].absorbed.back()
                : v;
        const TensorSpec& spec = plan.specs[size_t(last)][p];
        size_t offset = plan.buffers[size_t(b)].offset;
        out[p] = Tensor::from_storage(arena, spec.shape, spec.dtype,
                                      int64_t(offset / dtype_size(spec.dtype)));
      }
      node_inputs[size_t(v)].resize(
          graph.nodes[size_t(v)].inputs.size() +
          (fusion && fusion->is_head(v)
               ? fusion->chains[size_t(fusion->chain_of[size_t(v)])].extra_inputs.size()
               : 0));
      if (fusion && fusion->is_head(v))
        for (int a : fusion->chains[size_t(fusion->chain_of[size_t(v)])].absorbed)
          values[size_t(a)] = out;  // the chain's value is in the head's buffer
    }
    planned_inputs = specs;
    planned = true;
    timings.clear();
    if (profile)
      for (int v : plan.steps) {
        timings.push_back({v, 0.0, {}});
        if (fusion && fusion->is_head(v))
          timings.back().fused = fusion->chains[size_t(fusion->chain_of[size_t(v)])].absorbed;
      }
  }
};

Executor::Executor(Model model, ExecutorOptions options) : impl_(std::make_unique<Impl>()) {
  NNX_CHECK(model.defined(), ErrorKind::usage, "Executor needs a loaded model");
  impl_->model = std::move(model);
  int threads = options.threads > 0 ? options.threads : ThreadPool::hardware_threads();
  impl_->pool = std::make_unique<ThreadPool>(threads);
  impl_->ctx.device = impl_->model.device();
  NNX_CHECK(options.precision == Precision::fp32 || impl_->ctx.device.is_cuda(),
            ErrorKind::unsupported, "precision ", precision_name(options.precision),
            " is for CUDA; the CPU runs fp32");
  NNX_CHECK(options.precision == Precision::fp32 || options.precision == Precision::tf32,
            ErrorKind::unsupported, "precision ", precision_name(options.precision),
            " is not implemented yet: the CUDA path runs fp32 or tf32");
  impl_->ctx.allow_tf32 = options.precision == Precision::tf32;
  if (impl_->ctx.device.is_cuda()) {
    // Its own stream: Executors of one model on several threads run concurrently.
    impl_->stream = cuda::create_stream(impl_->ctx.device.index);
    impl_->ctx.stream = impl_->stream;
  }
  impl_->ctx.pool = impl_->pool.get();
  impl_->profile = options.profile;
  // Inference fusion: the CPU's chains, or CUDA's (graph/fusion.h).
  impl_->fuse = options.fuse;
}

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::fp32:
      return "fp32";
    case Precision::tf32:
      return "tf32";
    case Precision::fp16:
      return "fp16";
    case Precision::bf16:
      return "bf16";
  }
  return "?";
}

Precision parse_precision(std::string_view name) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::fp16, Precision::bf16})
    if (name == precision_name(p)) return p;
  fail(ErrorKind::usage, "precision must be fp32, tf32, fp16 or bf16, found '", std::string(name),
       "'");
}

Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

const Model& Executor::model() const {
  return impl_->model;
}

const std::vector<NodeTiming>& Executor::last_profile() const {
  return impl_->timings;
}

PlanStats Executor::plan_stats() const {
  if (!impl_->planned) return {};
  return {impl_->plan.arena_bytes, impl_->plan.unplanned_bytes, impl_->plan.flops};
}

std::vector<Tensor> Executor::run(std::span<const Tensor> inputs) {
  Impl& m = *impl_;
  const Graph& graph = m.model.graph();
  NNX_CHECK(int(inputs.size()) == graph.num_inputs(), ErrorKind::shape, graph.source, ": expected ",
            graph.num_inputs(), " input tensor(s), found ", inputs.size());
  std::vector<Tensor> bound(inputs.size());
  std::vector<TensorSpec> specs(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    NNX_CHECK(inputs[k].defined(), ErrorKind::usage, "input ", k, " is an undefined tensor");
    Tensor t = inputs[k];
    if (t.dim() == 3) t = t.unsqueeze(0);  // CHW: a batch of one
    NNX_CHECK(t.dim() == 4, ErrorKind::shape, graph.source, ": input ", k,
              ": expected an NCHW (or CHW) tensor, found shape ", inputs[k].shape().str());
    t = t.to(m.ctx.device).to(DType::f32).contiguous();
    specs[k] = {t.shape(), t.dtype()};
    bound[k] = std::move(t);
  }
  // On CUDA the arena, the temporaries and the copies are ordered on this Executor's stream.
  std::optional<cuda::StreamGuard> stream_guard;
  if (m.stream != nullptr) stream_guard.emplace(m.stream, m.ctx.device.index);
  if (!m.planned || specs != m.planned_inputs) m.replan(specs);
  m.values[0] = std::move(bound);

  using Clock = std::chrono::steady_clock;
  for (size_t step = 0; step < m.plan.steps.size(); ++step) {
    int v = m.plan.steps[step];
    const Node& node = graph.nodes[size_t(v)];
    auto& args = m.node_inputs[size_t(v)];
    for (size_t i = 0; i < node.inputs.size(); ++i)
      args[i] = m.values[size_t(node.inputs[i].node)][size_t(node.inputs[i].port)];
    if (m.fusion && m.fusion->is_head(v)) {  // a fused Add's other operand
      const auto& extra = m.fusion->chains[size_t(m.fusion->chain_of[size_t(v)])].extra_inputs;
      for (size_t e = 0; e < extra.size(); ++e)
        args[node.inputs.size() + e] = m.values[size_t(extra[e].node)][size_t(extra[e].port)];
    }
    Clock::time_point start;
    if (m.profile) start = Clock::now();
    try {
      if (m.fusion && m.fusion->is_head(v))
        m.fusion->chains[size_t(m.fusion->chain_of[size_t(v)])].run(m.ctx, args,
                                                                    m.values[size_t(v)][0]);
      else
        graph.layer_of(v).op->forward(m.ctx, args, m.values[size_t(v)]);
    } catch (const Error& e) {
      throw Error(e.kind(), graph.source + ": " + graph.describe_node(v) + ": " + e.message());
    }
    if (m.profile) {
      // On CUDA the node's kernels are only queued: wait for them so that the time is theirs.
      if (m.stream != nullptr) cuda::synchronize_stream(m.stream);
      m.timings[step].ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    }
  }
  std::vector<Tensor> outputs;
  outputs.reserve(graph.outputs.size());
  for (const PortRef& o : graph.outputs)
    outputs.push_back(m.values[size_t(o.node)][size_t(o.port)].clone());
  // Drop references to the caller's inputs so their memory is not held between runs.
  for (auto& t : m.values[0]) t = Tensor();
  for (int v : m.plan.steps)
    for (auto& t : m.node_inputs[size_t(v)]) t = Tensor();
  if (m.stream != nullptr) cuda::synchronize_stream(m.stream);  // run() returns finished results
  return outputs;
}

}  // namespace nnx
