// Model descriptions (ARCH_FORMAT.md sections 3-9) into a validated Graph with its ops built.
#pragma once

#include <string>

#include "graph/graph.h"
#include "importer/json.h"
#include "importer/pyobject.h"

namespace nnx {

// Builds and validates the graph of a description. Every fault found is reported: the thrown
// Error(format or shape) has one line per fault, each starting with `source`.
Graph build_graph(const json::Value& description, const std::string& source);

// The architecture part of a one-file .pth (tuples become lists) as a JSON-like value.
json::Value description_from_pickle(const py::Object& top, const std::string& source);

}  // namespace nnx
