// What a loaded Model holds (shared, immutable once loaded).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "graph/graph.h"
#include "importer/json.h"
#include "importer/pyobject.h"
#include "importer/weights.h"
#include "nnx/model.h"

namespace nnx {

struct Model::Impl {
  Graph graph;
  LoadReport report;
  std::string source;
  Device device = Device::cpu();
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
