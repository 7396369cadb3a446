// Conv2d through cuDNN's graph API (see conv_graph.h).
#include <cudnn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/cuda/conv_graph.h"
#include "nnx/error.h"
#include "runtime/cuda/conv_algo_cache.h"
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/library_handles.h"
#include "runtime/cuda/workspace.h"

namespace nnx::cuda {
namespace {

// The operands' unique ids in every pass's graph.
constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3;
// Candidates a timed search runs, at most, and the workspace a plan may ask for (one that asks
// for more is passed over, searched or not).
constexpr size_t kMaxSearched = 16;
constexpr int64_t kMaxWorkspace = int64_t(1) << 30;

// One backend descriptor, destroyed with its owner.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptorType_t type) {
    NNX_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Descriptor() {
    if (d_ != nullptr) (void)cudnnBackendDestroyDescriptor(d_);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }
  cudnnBackendDescriptor_t* address() { return &d_; }
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* values) {
    NNX_CUDNN_CHECK(cudnnBackendSetAttribute(d_, name, type, count, values));
  }
  void set_int64s(cudnnBackendAttributeName_t name, std::initializer_list<int64_t> values) {
    set(name, CUDNN_TYPE_INT64, int64_t(values.size()), values.begin());
  }
  void set_descriptor(cudnnBackendAttributeName_t name, const Descriptor& other) {
    const cudnnBackendDescriptor_t d = other.get();
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
  }
  void finalize() { NNX_CUDNN_CHECK(cudnnBackendFinalize(d_)); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// The largest power of two up to 16 that divides every address (2 at least: fp16 elements).
int64_t alignment_of(std::initializer_list<const void*> pointers) {
  int64_t align = 16;
  for (const void* p : pointers)
    while (align > 2 && reinterpret_cast<uintptr_t>(p) % uintptr_t(align) != 0) align /= 2;
  return align;
}

cudnnDataType_t data_type(std::optional<ConvIo> io) {
  if (!io) return CUDNN_DATA_FLOAT;
  return *io == ConvIo::f16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
}

std::unique_ptr<Descriptor> tensor(int64_t uid, int64_t n, int64_t c, int64_t h, int64_t w,
                                   int64_t align, cudnnDataType_t type) {
  auto t = std::make_unique<Descriptor>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
  t->set_int64s(CUDNN_ATTR_TENSOR_DIMENSIONS, {n, c, h, w});
  t->set_int64s(CUDNN_ATTR_TENSOR_STRIDES, {c * h * w, h * w, w, 1});
  t->set_int64s(CUDNN_ATTR_TENSOR_UNIQUE_ID, {uid});
  t->set_int64s(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, {align});
  t->finalize();
  return t;
}

// A pass's operation graph: its tensors, convolution and operation kept alive beside it.
struct OperationGraph {
  std::unique_ptr<Descriptor> x, w, y, conv, op, graph;
};

OperationGraph operation_graph(ConvPass pass, const Conv2dParams& p, std::optional<ConvIo> io,
                               int64_t align, cudnnHandle_t handle) {
  OperationGraph g;
  const cudnnDataType_t type = data_type(io);
  g.x = tensor(kUidX, p.batch, p.in_channels, p.in_h, p.in_w, align, type);
  // Groups are implied by the filter's channels (in_channels / groups).
  g.w =
      tensor(kUidW, p.out_channels, p.in_channels / p.groups, p.kernel_h, p.kernel_w, align, type);
  g.y = tensor(kUidY, p.batch, p.out_channels, p.out_h, p.out_w, align, type);

  g.conv = std::make_unique<Descriptor>(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  g.conv->set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  g.conv->set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  g.conv->set_int64s(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, {2});
  g.conv->set_int64s(CUDNN_ATTR_CONVOLUTION_DILATIONS, {p.dilation_h, p.dilation_w});
  g.conv->set_int64s(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, {p.stride_h, p.stride_w});
  g.conv->set_int64s(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, {p.pad_h, p.pad_w});
  g.conv->set_int64s(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, {p.pad_h, p.pad_w});
  g.conv->finalize();

  // The pass's operation and the attributes naming its x, w, y, convolution, alpha and beta.
  struct Names {
    cudnnBackendDescriptorType_t op;
    cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
  };
  static constexpr Names kNames[] = {
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA},
  };
  static_assert(int(ConvPass::forward) == 0 && int(ConvPass::backward_data) == 1 &&
                int(ConvPass::backward_filter) == 2);
  const Names& names = kNames[int(pass)];
  const float alpha = 1.0f, beta = 0.0f;
  g.op = std::make_unique<Descriptor>(names.op);
  g.op->set_descriptor(names.x, *g.x);
  g.op->set_descriptor(names.w, *g.w);
  g.op->set_descriptor(names.y, *g.y);
  g.op->set_descriptor(names.conv, *g.conv);
  g.op->set(names.alpha, CUDNN_TYPE_FLOAT, 1, &alpha);
  g.op->set(names.beta, CUDNN_TYPE_FLOAT, 1, &beta);
  g.op->finalize();

  g.graph = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  g.graph->set_descriptor(CUDNN_ATTR_OPERATIONGRAPH_OPS, *g.op);
  g.graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  g.graph->finalize();
  return g;
}

// Whether the engine of `cfg` computes as the precision asks: inputs never down-converted, sums
// never in reduced precision, and tensor cores (TF32 on fp32 data) only when allowed.
bool allowed(const Descriptor& cfg, bool allow_tf32) {
  Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  int64_t count = 0;
  if (cudnnBackendGetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count,
                               engine.address()) != CUDNN_STATUS_SUCCESS ||
      count != 1)
    return false;
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  int64_t noted = 0;
  if (cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                               CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &noted,
                               notes) != CUDNN_STATUS_SUCCESS)
    return false;
  for (int64_t i = 0; i < noted && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; ++i) {
    if (notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS ||
        notes[i] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION)
      return false;
    if (notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE && !allow_tf32) return false;
  }
  return true;
}

// The engine configurations heuristics `mode` ranks for the graph, best first, those allowed.
void add_configs(const OperationGraph& g, cudnnBackendHeurMode_t mode, bool allow_tf32,
                 std::vector<std::unique_ptr<Descriptor>>& out) {
  Descriptor heuristics(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  heuristics.set_descriptor(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *g.graph);
  heuristics.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
  if (cudnnBackendFinalize(heuristics.get()) != CUDNN_STATUS_SUCCESS) return;
  int64_t available = 0;
  if (cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &available,
                               nullptr) != CUDNN_STATUS_SUCCESS ||
      available <= 0)
    return;
  std::vector<std::unique_ptr<Descriptor>> configs;
  std::vector<cudnnBackendDescriptor_t> handles;
  for (int64_t i = 0; i < available; ++i) {
    configs.push_back(std::make_unique<Descriptor>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    handles.push_back(configs.back()->get());
  }
  int64_t returned = 0;
  if (cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, available, &returned,
                               handles.data()) != CUDNN_STATUS_SUCCESS)
    return;
  for (int64_t i = 0; i < returned && i < available; ++i)
    if (allowed(*configs[size_t(i)], allow_tf32)) out.push_back(std::move(configs[size_t(i)]));
}

// A finalized execution plan and the workspace it needs; `ran` once it has executed without
// error (until then a failure passes the problem to the legacy API instead of throwing).
struct Plan {
  std::unique_ptr<Descriptor> plan;
  int64_t workspace = 0;
  bool ran = false;
};

std::unique_ptr<Plan> make_plan(const Descriptor& cfg, cudnnHandle_t handle) {
  auto plan = std::make_unique<Plan>();
  plan->plan = std::make_unique<Descriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  plan->plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  plan->plan->set_descriptor(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfg);
  if (cudnnBackendFinalize(plan->plan->get()) != CUDNN_STATUS_SUCCESS) return nullptr;
  int64_t count = 0;
  if (cudnnBackendGetAttribute(plan->plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                               CUDNN_TYPE_INT64, 1, &count,
                               &plan->workspace) != CUDNN_STATUS_SUCCESS ||
      plan->workspace < 0)
    return nullptr;
  return plan;
}

void execute(const Plan& plan, cudnnHandle_t handle, void* x, void* w, void* y, int device,
             cudaStream_t stream) {
  const Workspace workspace(device, size_t(plan.workspace), stream);
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  const int64_t uids[3] = {kUidX, kUidW, kUidY};
  void* pointers[3] = {x, w, y};
  void* scratch = workspace.get();
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, pointers);
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &scratch);
  pack.finalize();
  NNX_CUDNN_CHECK(cudnnBackendExecute(handle, plan.plan->get(), pack.get()));
}

// Milliseconds one run of `plan` takes on the stream: the fastest of three after one warm-up.
float time_plan(const Plan& plan, cudnnHandle_t handle, void* x, void* w, void* y, int device,
                cudaStream_t stream) {
  cudaEvent_t start = nullptr, stop = nullptr;
  NNX_CUDA_CHECK(cudaEventCreate(&start));
  NNX_CUDA_CHECK(cudaEventCreate(&stop));
  float best = -1;
  try {
    execute(plan, handle, x, w, y, device, stream);
    for (int run = 0; run < 3; ++run) {
      NNX_CUDA_CHECK(cudaEventRecord(start, stream));
      execute(plan, handle, x, w, y, device, stream);
      NNX_CUDA_CHECK(cudaEventRecord(stop, stream));
      NNX_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      NNX_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (best < 0 || ms < best) best = ms;
    }
  } catch (const Error&) {
    best = -1;  // this engine failed to run: not a candidate
    (void)cudaGetLastError();
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  return best;
}

const char* pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::forward:
      return "forward";
    case ConvPass::backward_data:
      return "backward_data";
    case ConvPass::backward_filter:
      return "backward_filter";
  }
  return "?";
}

// This thread's plans per device, problem and pass (a handle belongs to one thread and device:
// so does a plan finalized with it; the problem key names the device's model, not its index).
// Constructed after the thread's cuDNN handle, so destroyed before it. A null plan: no engine
// takes the problem.
struct PlanCache {
  std::map<std::pair<int, std::string>, std::unique_ptr<Plan>> plans;
};

}  // namespace

bool conv_graph_api_enabled() {
  const char* v = std::getenv("NNX_CUDNN_API");
  return v != nullptr && std::string_view(v) == "graph";
}

bool conv_graph_run(ConvPass pass, const Conv2dParams& p, void* x, void* w, void* y, int device,
                    cudaStream_t stream, std::optional<ConvIo> io) {
  const cudnnHandle_t handle = cudnn_handle(stream);
  thread_local PlanCache cache;
  const bool search = conv_search_enabled();
  const int64_t align = alignment_of({x, w, y});
  const bool tensor_cores = p.allow_tf32 || io.has_value();
  const std::string key = conv_problem_key(p, device, search) + ";graph;" + pass_name(pass) +
                          (!io                  ? ""
                           : *io == ConvIo::f16 ? ";f16"
                                                : ";bf16") +
                          ";align=" + std::to_string(align);
  auto found = cache.plans.find({device, key});
  if (found == cache.plans.end()) {
    // A graph cuDNN does not accept (a status from a descriptor's finalize) leaves the problem to
    // the legacy API.
    std::optional<OperationGraph> graph;
    try {
      graph.emplace(operation_graph(pass, p, io, align, handle));
    } catch (const Error&) {
      cache.plans.emplace(std::pair{device, key}, nullptr);
      return false;
    }
    std::vector<std::unique_ptr<Descriptor>> configs;
    add_configs(*graph, CUDNN_HEUR_MODE_A, tensor_cores, configs);
    add_configs(*graph, CUDNN_HEUR_MODE_FALLBACK, tensor_cores, configs);
    auto first_that_finalizes = [&]() -> std::unique_ptr<Plan> {
      for (const auto& config : configs) {
        auto plan = make_plan(*config, handle);
        if (plan && plan->workspace <= kMaxWorkspace) return plan;
      }
      return nullptr;
    };
    std::unique_ptr<Plan> chosen;
    if (!search) {
      chosen = first_that_finalizes();
    } else {
      // A rank into `configs`: the same list for the same problem, device and cuDNN version.
      const int rank = ConvAlgoCache::instance().get(key, true, conv_cache_path(), [&] {
        int best_rank = -1;
        float best_ms = -1;
        size_t tried = 0;
        for (size_t i = 0; i < configs.size() && tried < kMaxSearched; ++i) {
          std::unique_ptr<Plan> plan = make_plan(*configs[i], handle);
          if (!plan || plan->workspace > kMaxWorkspace) continue;
          ++tried;
          const float ms = time_plan(*plan, handle, x, w, y, device, stream);
          if (ms >= 0 && (best_ms < 0 || ms < best_ms)) {
            best_ms = ms;
            best_rank = int(i);
          }
        }
        return best_rank;
      });
      if (rank >= 0 && size_t(rank) < configs.size())
        chosen = make_plan(*configs[size_t(rank)], handle);
      if (!chosen) chosen = first_that_finalizes();
    }
    found = cache.plans.emplace(std::pair{device, key}, std::move(chosen)).first;
  }
  Plan* plan = found->second.get();
  if (plan == nullptr) return false;
  if (plan->ran) {
    execute(*plan, handle, x, w, y, device, stream);
    return true;
  }
  try {  // the first run: a plan that does not execute (its workspace, a rejected pack) is dropped
    execute(*plan, handle, x, w, y, device, stream);
  } catch (const Error&) {
    (void)cudaGetLastError();
    found->second.reset();
    return false;
  }
  plan->ran = true;
  return true;
}

}  // namespace nnx::cuda
