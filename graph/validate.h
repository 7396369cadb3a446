// Load-time validation of a wired graph: channel inference through every node in schedule
// order, declared against real channel counts, and the network outputs' channels.
#pragma once

#include <string>
#include <vector>

#include "graph/graph.h"

namespace nnx {

// Appends one message per fault (without the file prefix), layer faults in node order.
void infer_and_check_channels(Graph& graph, std::vector<std::pair<int, std::string>>& faults);

}  // namespace nnx
