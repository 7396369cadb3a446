// What a loaded Model holds (shared, immutable once loaded).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "graph/fusion.h"
#include "graph/graph.h"
#include "importer/json.h"
#include "importer/pyobject.h"
#include "importer/weights.h"
#include "nnx/model.h"

namespace nnx {

// The model's fusion chains with their folded weights (graph/fusion.h), found by the first
// Executor that plans with fusion and shared by all. A copy starts empty: Model::clone's ops
// are new objects.
class FusionCache {
 public:
  FusionCache() = default;
  FusionCache(const FusionCache&) {}
  FusionCache& operator=(const FusionCache&) { return *this; }

  std::shared_ptr<const Fusion> get(const Graph& graph, bool fold_batchnorm,
                                    ThreadPool* pool = nullptr) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!fusion_) fusion_ = find_fusion(graph, fold_batchnorm, pool);
    return fusion_;
  }
  // The CUDA chains (find_cuda_fusion), kept apart.
  std::shared_ptr<const Fusion> get_cuda(const Graph& graph, bool fold_batchnorm) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!cuda_fusion_) cuda_fusion_ = find_cuda_fusion(graph, fold_batchnorm);
    return cuda_fusion_;
  }

 private:
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const Fusion> fusion_, cuda_fusion_;
};

struct Model::Impl {
  Graph graph;
  LoadReport report;
  std::string source;
  Device device = Device::cpu();
  // Set by Model::clone: the copy's weights may change in place (training), so BatchNorm is
  // never folded into weights computed once.
  bool weights_may_change = false;
  FusionCache fusion;
};

// The state dicts of a weights file, one per layer of a graph with `num_layers` layers.
using WeightsReader = std::function<std::vector<StateDict>(size_t num_layers)>;

// What nnx::load and nnx::load_memory share once the description is parsed: the graph (its
// faults reported), the weights (from `read_weights`, else from the one-file archive, else
// PyTorch's initialisation, seeded), binding, and the device check. `source` names the
// description in messages, `weights_source` the weights.
Model assemble_model(const json::Value& description, const std::string& source,
                     const py::Object* onefile, const WeightsReader& read_weights,
                     const std::string& weights_source, const LoadOptions& options);

}  // namespace nnx
