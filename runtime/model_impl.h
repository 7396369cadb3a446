// What a loaded Model holds (shared, immutable once loaded).
#pragma once

#include "graph/graph.h"
#include "nnx/model.h"

namespace nnx {

struct Model::Impl {
  Graph graph;
  LoadReport report;
  std::string source;
  Device device = Device::cpu();
};

}  // namespace nnx
