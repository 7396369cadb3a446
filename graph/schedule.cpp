// Deterministic topological order (Kahn's algorithm, smallest ready index first).
#include <queue>
#include <set>

#include "graph/graph.h"
#include "nnx/error.h"

namespace nnx {

std::string Graph::describe_node(int node) const {
  if (node == 0) return "the network input (node 0)";
  const Layer& layer = layer_of(node);
  return "layer " + std::to_string(node) + " '" + layer.call_text + "'";
}

std::vector<int> topological_schedule(const Graph& graph) {
  size_t n = graph.nodes.size();
  std::vector<int> pending(n, 0);
  std::vector<std::vector<int>> consumers(n);
  for (size_t i = 1; i < n; ++i) {
    std::set<int> sources;
    for (const PortRef& in : graph.nodes[i].inputs)
      if (in.valid() && in.node != 0) sources.insert(in.node);
    pending[i] = int(sources.size());
    for (int s : sources) consumers[size_t(s)].push_back(int(i));
  }
  std::priority_queue<int, std::vector<int>, std::greater<int>> ready;
  for (size_t i = 1; i < n; ++i)
    if (pending[i] == 0) ready.push(int(i));
  std::vector<int> order;
  order.reserve(n);
  while (!ready.empty()) {
    int node = ready.top();
    ready.pop();
    order.push_back(node);
    for (int c : consumers[size_t(node)])
      if (--pending[size_t(c)] == 0) ready.push(c);
  }
  if (order.size() + 1 != n) {
    std::string cycle;
    for (size_t i = 1; i < n; ++i)
      if (pending[i] > 0) cycle += (cycle.empty() ? "" : ", ") + std::to_string(i);
    fail(ErrorKind::format, "the connections form a cycle through nodes ", cycle);
  }
  return order;
}

}  // namespace nnx
