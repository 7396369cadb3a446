// The Executor: plans once per input shapes, keeps one arena for all activations, runs nodes in
// schedule order (fused chains as one node, graph/fusion.h) and hands out the outputs as
// tensors of their own.
#include "nnx/executor.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "graph/planner.h"
#include "nnx/cuda.h"
#include "nnx/error.h"
#include "nnx/thread_pool.h"
#include "runtime/host_fallback.h"
#include "runtime/model_impl.h"
#ifdef NNX_WITH_CUDA
#include "runtime/cuda/cuda_graph.h"
#include "runtime/cuda/host_task.h"
#endif

namespace nnx {

bool fuse_by_default() {
  static const bool enabled = [] {
    const char* v = std::getenv("NNX_FUSE");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return enabled;
}

namespace {

// Whether the network runs as parts of `part` samples of its batch (run_split): the plans at the
// whole batch and at a part's give every input and every value the batch as its first dimension
// (all else the same), and every op they run says it is separable for its inputs
// (Op::batch_separable).
bool batch_separable(const Graph& graph, std::span<const TensorSpec> inputs, int64_t part) {
  const int64_t batch = inputs[0].shape[0];
  std::vector<TensorSpec> piece(inputs.begin(), inputs.end());
  for (TensorSpec& in : piece) {
    if (in.shape.size() < 1 || in.shape[0] != batch) return false;
    in.shape[0] = part;
  }
  Plan whole, parted;
  try {
    whole = make_plan(graph, inputs);
    parted = make_plan(graph, piece);
  } catch (const Error&) {
    return false;  // shapes an op refuses: the whole run reports it
  }
  std::vector<TensorSpec> in_specs;
  for (int v : whole.steps) {
    const Node& node = graph.nodes[size_t(v)];
    in_specs.clear();
    for (const PortRef& in : node.inputs)
      in_specs.push_back(whole.specs[size_t(in.node)][size_t(in.port)]);
    if (!graph.layer_of(v).op->batch_separable(in_specs)) return false;
    for (size_t p = 0; p < whole.specs[size_t(v)].size(); ++p) {
      TensorSpec expected = whole.specs[size_t(v)][p];
      if (expected.shape.size() < 1 || expected.shape[0] != batch) return false;
      expected.shape[0] = part;
      const TensorSpec& found = parted.specs[size_t(v)][p];
      if (!(expected.shape == found.shape && expected.dtype == found.dtype)) return false;
    }
  }
  return true;
}

// Whether a run writes an output of this shape and dtype into the caller's tensor `out` (a
// contiguous CPU tensor of that shape and dtype), rather than handing back a new one.
bool writes_into(const Tensor& out, const Shape& shape, DType dtype) {
  return out.defined() && out.device().is_cpu() && out.shape() == shape && out.dtype() == dtype &&
         out.is_contiguous();
}

}  // namespace

struct Executor::Impl {
  ~Impl() {
    try {
      drop_graphs();
      if (stream != nullptr) cuda::destroy_stream(stream);
    } catch (...) {  // a device error while tearing down: nothing better to do
    }
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
  // A run's inputs as the kernels take them and their specs, kept so that a run allocates no
  // list of its own (emptied of the caller's tensors after each run).
  std::vector<Tensor> given;
  std::vector<TensorSpec> given_specs;
  bool profile = false;
  bool batch_split = true;
  std::vector<NodeTiming> timings;
  bool fuse = false;
  std::shared_ptr<const Fusion> fusion;  // null: every node runs on its own

  // Batch split (CPU): parts of the batch run whole on one thread each (see run_split).
  std::vector<std::unique_ptr<Executor>> parts;                // one per thread, single-threaded
  std::vector<std::vector<Tensor>> part_inputs, part_outputs;  // per task
  std::vector<TensorSpec> split_checked;  // the input specs split_parts last looked at
  int64_t split_choice = 0;               // and what it found
  int64_t split_last = 0;                 // parts of the last run (0: not split)

  // CUDA graphs: the second run of a plan captures its steps, and later runs with the same
  // input shapes replay them. Steps that ran on the host in the first run (an op without a CUDA
  // body: Op::forward_on_host) split the run into segments; those run as before, between the
  // graphs.
  bool cuda_graph = false;
  int eager_runs = 0;           // runs of the current plan without graphs
  std::vector<char> host_step;  // per step: ran on the host in the last eager run
  struct Segment {
    size_t begin = 0, end = 0;  // steps [begin, end)
    void* graph = nullptr;      // its executable graph; null: runs step by step (host)
  };
  std::vector<Segment> segments;     // empty until captured
  std::vector<Tensor> graph_inputs;  // where the graphs read the network's inputs
  std::string graph_state = "not captured yet";
  bool graph_refused = false;  // a capture failed: this plan runs without graphs
#ifdef NNX_WITH_CUDA
  cuda::GraphPoolPtr graph_pool;  // the graphs' temporaries
#endif

  void drop_graphs() {
#ifdef NNX_WITH_CUDA
    if (segments.empty() && !graph_pool) return;
    cuda::synchronize_stream(stream);
    for (Segment& segment : segments) cuda::destroy_graph(segment.graph);
    segments.clear();
    if (graph_pool) cuda::release_graph_pool(*graph_pool, ctx.device.index);
#endif
  }

  void replan(const std::vector<TensorSpec>& specs) {
    const Graph& graph = model.graph();
    drop_graphs();
    graph_inputs.clear();
    eager_runs = 0;
    graph_refused = false;
    if (cuda_graph) graph_state = "not captured yet";
    if (fuse && !fusion) {
      // Found (and BatchNorm folded) by the model's first plan, shared by all its Executors.
      const Model::Impl& shared = *model.impl();
      fusion = model.device().is_cuda()
                   ? shared.fusion.get_cuda(shared.graph, !shared.weights_may_change)
                   : shared.fusion.get(shared.graph, !shared.weights_may_change, pool.get());
    }
    // Ops over inputs that die at them (Op::in_place_inputs): the CPU's kernels.
    plan = make_plan(graph, specs, fusion.get(), !model.device().is_cuda());
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
    host_step.assign(plan.steps.size(), 0);
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

  // How many parts run_split takes for these inputs (0: none, the batch runs whole): the fewest
  // equal parts, at least two per thread (a thread that comes free takes the next), or one
  // sample each where the batch has fewer; none for a batch smaller than the threads, or a
  // network that mixes samples (batch_separable). Found once per input shapes.
  int64_t split_parts(const std::vector<TensorSpec>& specs) {
    const int64_t threads = pool->size();
    if (!batch_split || threads < 2 || profile || model.device().is_cuda()) return 0;
    if (specs == split_checked) return split_choice;
    split_checked = specs;
    split_choice = 0;
    const int64_t batch = specs[0].shape[0];
    if (batch < threads) return 0;
    for (int64_t tasks = std::min(batch, 2 * threads); tasks <= batch; ++tasks)
      if (batch % tasks == 0) {
        if (batch_separable(model.graph(), specs, batch / tasks)) split_choice = tasks;
        break;
      }
    return split_choice;
  }

  // The batch in `tasks` equal parts, each run whole by one single-threaded Executor on one of
  // this pool's threads, the parts taken in turn as threads come free.
  void run_split(const std::vector<Tensor>& given, int64_t tasks, std::span<Tensor> outputs) {
    const int64_t threads = pool->size(), batch = given[0].shape()[0], part = batch / tasks;
    while (int64_t(parts.size()) < threads) {
      ExecutorOptions options;
      options.threads = 1;
      options.fuse = fuse;
      parts.push_back(std::make_unique<Executor>(model, options));
    }
    part_inputs.resize(size_t(tasks));
    part_outputs.resize(size_t(tasks));
    for (int64_t t = 0; t < tasks; ++t) {
      part_inputs[size_t(t)].resize(given.size());
      for (size_t k = 0; k < given.size(); ++k)
        part_inputs[size_t(t)][k] = given[k].slice(0, t * part, (t + 1) * part);
      part_outputs[size_t(t)].resize(outputs.size());
    }
    // However the run ends, the parts hold none of the caller's inputs afterwards.
    struct Release {
      std::vector<std::vector<Tensor>>& lists;
      ~Release() {
        for (auto& list : lists)
          for (auto& t : list) t = Tensor();
      }
    } release{part_inputs};
    split_last = tasks;
    std::atomic<int64_t> next{0};
    pool->parallel_for(threads, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t slot = s0; slot < s1; ++slot)
        for (int64_t t = next++; t < tasks; t = next++)
          parts[size_t(slot)]->run(part_inputs[size_t(t)], part_outputs[size_t(t)]);
    });
    for (size_t k = 0; k < outputs.size(); ++k) {
      const Tensor& first = part_outputs[0][k];
      Shape shape = first.shape();
      shape[0] = batch;
      Tensor& out = outputs[k];
      if (!writes_into(out, shape, first.dtype())) out = Tensor::empty(shape, first.dtype());
      for (int64_t t = 0; t < tasks; ++t)
        out.slice(0, t * part, (t + 1) * part).copy_from(part_outputs[size_t(t)][k]);
    }
  }

  // Runs plan.steps[begin, end) (queues their kernels on CUDA); notes which ran on the host.
  void run_steps(size_t begin, size_t end) {
    using Clock = std::chrono::steady_clock;
    const Graph& graph = model.graph();
    for (size_t step = begin; step < end; ++step) {
      int v = plan.steps[step];
      const Node& node = graph.nodes[size_t(v)];
      auto& args = node_inputs[size_t(v)];
      for (size_t i = 0; i < node.inputs.size(); ++i)
        args[i] = values[size_t(node.inputs[i].node)][size_t(node.inputs[i].port)];
      if (fusion && fusion->is_head(v)) {  // a fused Add's other operand
        const auto& extra = fusion->chains[size_t(fusion->chain_of[size_t(v)])].extra_inputs;
        for (size_t e = 0; e < extra.size(); ++e)
          args[node.inputs.size() + e] = values[size_t(extra[e].node)][size_t(extra[e].port)];
      }
      Clock::time_point start;
      if (profile) start = Clock::now();
      const uint64_t fallbacks = detail::host_fallbacks();
      try {
        if (fusion && fusion->is_head(v))
          fusion->chains[size_t(fusion->chain_of[size_t(v)])].run(ctx, args, values[size_t(v)][0]);
        else
          graph.layer_of(v).op->forward(ctx, args, values[size_t(v)]);
      } catch (const Error& e) {
        throw Error(e.kind(), graph.source + ": " + graph.describe_node(v) + ": " + e.message());
      }
      host_step[step] = detail::host_fallbacks() != fallbacks;
      if (profile) {
        // On CUDA the node's kernels are only queued: wait for them so that the time is theirs.
        if (stream != nullptr) cuda::synchronize_stream(stream);
        timings[step].ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      }
    }
  }

  // The network's inputs copied to where the graphs read them (queued on the stream).
  void bind_graph_inputs(std::span<const Tensor> inputs) {
    for (size_t k = 0; k < inputs.size(); ++k)
      cuda::copy_async(graph_inputs[k].raw_data(), ctx.device, inputs[k].raw_data(),
                       inputs[k].device(), inputs[k].nbytes(), stream);
    values[0] = graph_inputs;
  }

  // The run from the graphs: inputs bound, graphs launched, host steps run between them.
  void replay(std::span<const Tensor> inputs) {
#ifdef NNX_WITH_CUDA
    bind_graph_inputs(inputs);
    for (const Segment& segment : segments) {
      if (segment.graph != nullptr)
        cuda::launch_graph(segment.graph, stream);
      else
        run_steps(segment.begin, segment.end);
    }
#else
    (void)inputs;
#endif
  }

  // The second run of a plan: its steps captured (and launched: this run's results). Steps that
  // ran on the host in the first run go into the graph as host tasks (runtime/op.cpp:
  // copies to page-locked memory, the CPU body as a cudaLaunchHostFunc node, copies back), so
  // that the run is one graph; where an op's host body cannot be a node (it has parameters, or
  // its tensors are not contiguous on the device), the capture fails and the run is split into
  // graphs around the host steps, which run between them as before. Returns false, with the
  // reason in graph_state, when a capture failed; nothing of this run is then done, and the
  // plan runs without graphs from now on.
  bool capture(std::span<const Tensor> inputs) {
#ifdef NNX_WITH_CUDA
    graph_inputs.clear();
    for (const Tensor& t : inputs)
      graph_inputs.push_back(Tensor::empty(t.shape(), t.dtype(), ctx.device));
    if (!graph_pool) graph_pool = cuda::new_graph_pool();
    segments.clear();
    int host_nodes = 0;
    std::string host_names;
    for (size_t step = 0; step < plan.steps.size(); ++step)
      if (host_step[step])
        host_names +=
            (host_nodes++ > 0 ? ", " : "") + model.graph().describe_node(plan.steps[step]);
    try {
      bind_graph_inputs(inputs);
      if (host_nodes > 0) {
        // The whole run as one graph, its host steps as host tasks inside it.
        void* whole = nullptr;
        try {
          whole = cuda::capture_graph(stream, ctx.device.index, *graph_pool,
                                      [&] { run_steps(0, plan.steps.size()); });
        } catch (const Error&) {
          whole = nullptr;  // a host body that cannot be a node: graphs around it
        }
        if (whole != nullptr) {
          segments.push_back({0, plan.steps.size(), whole});
          cuda::launch_graph(whole, stream);
          graph_state = "captured: 1 graph of " + std::to_string(plan.steps.size()) + " nodes, " +
                        std::to_string(host_nodes) +
                        " of them on the host as host tasks inside it (" + host_names + ")";
          return true;
        }
      }
      for (size_t step = 0; step < plan.steps.size();) {
        size_t end = step + 1;
        while (end < plan.steps.size() && host_step[end] == host_step[step]) ++end;
        segments.push_back({step, end, nullptr});
        step = end;
      }
      int graphs = 0;
      for (Segment& segment : segments) {
        if (host_step[segment.begin]) {
          run_steps(segment.begin, segment.end);
          continue;
        }
        segment.graph = cuda::capture_graph(stream, ctx.device.index, *graph_pool,
                                            [&] { run_steps(segment.begin, segment.end); });
        cuda::launch_graph(segment.graph, stream);
        ++graphs;
      }
      graph_state = "captured: " + std::to_string(graphs) + " graph" + (graphs == 1 ? "" : "s") +
                    " of " + std::to_string(plan.steps.size() - size_t(host_nodes)) + " nodes";
      if (host_nodes > 0)
        graph_state +=
            ", " + std::to_string(host_nodes) + " on the host between them (" + host_names + ")";
      return true;
    } catch (const Error& e) {
      graph_state = "refused: " + e.message();
      graph_refused = true;
      drop_graphs();
      graph_inputs.clear();
      return false;
    }
#else
    (void)inputs;
    return false;
#endif
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
  impl_->ctx.allow_tf32 = options.precision == Precision::tf32;
  if (options.precision == Precision::fp16) impl_->ctx.conv_dtype = DType::f16;
  if (options.precision == Precision::bf16) impl_->ctx.conv_dtype = DType::bf16;
  if (impl_->ctx.device.is_cuda()) {
    // Its own stream: Executors of one model on several threads run concurrently.
    impl_->stream = cuda::create_stream(impl_->ctx.device.index);
    impl_->ctx.stream = impl_->stream;
  }
  impl_->ctx.pool = impl_->pool.get();
  impl_->profile = options.profile;
  impl_->batch_split = options.batch_split;
  // Not when profiling: the profile times each node on its own.
  // Nor for a model whose weights may change (Model::clone, the Trainer's and the pruner's
  // copies): a graph would go on reading the device copies of the weights it was captured with.
  const bool weights_fixed = !impl_->model.impl()->weights_may_change;
  impl_->cuda_graph =
      options.cuda_graph && impl_->stream != nullptr && !options.profile && weights_fixed;
  impl_->graph_state = impl_->cuda_graph ? "not captured yet"
                       : options.cuda_graph && impl_->stream != nullptr && !weights_fixed
                           ? "off: the model's weights may change (a copy made by Model::clone)"
                           : "off";
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

int64_t Executor::batch_parts() const {
  return impl_->split_last;
}

const std::string& Executor::cuda_graph_state() const {
  return impl_->graph_state;
}

PlanStats Executor::plan_stats() const {
  if (impl_->split_last > 0) {
    // The parts' plans: an arena per thread, the flops of every part.
    PlanStats stats;
    for (const auto& part : impl_->parts) {
      const PlanStats p = part->plan_stats();
      stats.arena_bytes += p.arena_bytes;
      stats.unplanned_bytes = std::max(stats.unplanned_bytes, p.unplanned_bytes);
      stats.flops = std::max(stats.flops, p.flops);
    }
    stats.unplanned_bytes *= size_t(impl_->split_last);
    stats.flops *= impl_->split_last;
    return stats;
  }
  if (!impl_->planned) return {};
  return {impl_->plan.arena_bytes, impl_->plan.unplanned_bytes, impl_->plan.flops};
}

std::vector<Tensor> Executor::run(std::span<const Tensor> inputs) {
  std::vector<Tensor> outputs = run_async(inputs);
  synchronize();  // run() returns finished results
  return outputs;
}

void Executor::run(std::span<const Tensor> inputs, std::span<Tensor> outputs) {
  const Graph& graph = impl_->model.graph();
  NNX_CHECK(outputs.size() == graph.outputs.size(), ErrorKind::usage, graph.source, ": expected ",
            graph.outputs.size(), " output tensor(s) to run into, found ", outputs.size());
  run_into(inputs, outputs);
  synchronize();
}

void Executor::synchronize() {
  if (impl_->stream == nullptr) return;
  cuda::synchronize_stream(impl_->stream);
#ifdef NNX_WITH_CUDA
  // A host task of the replayed graph (an op's CPU body) that threw: its outputs are not there.
  if (std::string e = cuda::take_host_task_error(impl_->stream); !e.empty())
    fail(ErrorKind::unsupported, impl_->model.graph().source,
         ": a host step of the replayed CUDA graph (an op's CPU body): ", e);
#endif
}

std::vector<Tensor> Executor::run_async(std::span<const Tensor> inputs) {
  std::vector<Tensor> outputs(impl_->model.graph().outputs.size());
  run_into(inputs, outputs);
  return outputs;
}

void Executor::run_into(std::span<const Tensor> inputs, std::span<Tensor> outputs) {
  Impl& m = *impl_;
  const Graph& graph = m.model.graph();
  NNX_CHECK(int(inputs.size()) == graph.num_inputs(), ErrorKind::shape, graph.source, ": expected ",
            graph.num_inputs(), " input tensor(s), found ", inputs.size());
  // On CUDA the arena, the temporaries and the copies are ordered on this Executor's stream.
  std::optional<cuda::StreamGuard> stream_guard;
  if (m.stream != nullptr) stream_guard.emplace(m.stream, m.ctx.device.index);
  std::vector<Tensor>& given = m.given;  // float32 and contiguous, where the caller has it
  std::vector<TensorSpec>& specs = m.given_specs;
  // However the run ends, it holds none of the caller's tensors afterwards.
  struct Release {
    Impl& m;
    ~Release() {
      for (auto& t : m.given) t = Tensor();
      if (!m.values.empty())
        for (auto& t : m.values[0]) t = Tensor();
    }
  } release{m};
  given.resize(inputs.size());
  specs.resize(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    NNX_CHECK(inputs[k].defined(), ErrorKind::usage, "input ", k, " is an undefined tensor");
    Tensor t = inputs[k];
    if (t.dim() == 3) t = t.unsqueeze(0);  // CHW: a batch of one
    NNX_CHECK(t.dim() == 4, ErrorKind::shape, graph.source, ": input ", k,
              ": expected an NCHW (or CHW) tensor, found shape ", inputs[k].shape().str());
    t = t.to(DType::f32).contiguous();
    specs[k] = {t.shape(), t.dtype()};
#ifdef NNX_WITH_CUDA
    // A caller's device tensor is read by kernels still queued when run_async returns: its
    // memory is not reused until this stream is past them.
    if (m.stream != nullptr && t.device().is_cuda() && t.storage() != nullptr)
      cuda::keep_for_stream(t.storage()->data(), m.stream, t.device().index);
#endif
    given[k] = std::move(t);
  }
  if (const int64_t tasks = m.split_parts(specs); tasks > 0) {
    m.run_split(given, tasks, outputs);
    return;
  }
  m.split_last = 0;
  if (!m.planned || specs != m.planned_inputs) m.replan(specs);

  const bool graphs = m.cuda_graph && !m.graph_refused;
  if (graphs && !m.segments.empty()) {
    m.replay(given);
  } else if (!(graphs && m.eager_runs > 0 && m.capture(given))) {
    std::vector<Tensor>& bound = m.values[0];
    bound.resize(given.size());
    for (size_t k = 0; k < given.size(); ++k) bound[k] = given[k].to(m.ctx.device);
    m.run_steps(0, m.plan.steps.size());
    ++m.eager_runs;
  }
  // Each output into the caller's tensor where that is a contiguous float32 tensor of its shape
  // on the CPU (a device tensor's copy would not be ordered on this stream), else a new one.
  for (size_t k = 0; k < graph.outputs.size(); ++k) {
    const Tensor& value = m.values[size_t(graph.outputs[k].node)][size_t(graph.outputs[k].port)];
    Tensor& out = outputs[k];
    if (value.device().is_cpu() && writes_into(out, value.shape(), value.dtype()))
      out.copy_from(value);
    else
      out = value.clone();
  }
  // Drop references to the caller's inputs (with `release`) and to the run's values in the
  // argument lists, so their memory is not held between runs.
  for (int v : m.plan.steps)
    for (auto& t : m.node_inputs[size_t(v)]) t = Tensor();
}

}  // namespace nnx
