// Channel inference and checks: what really arrives at each port, what each op makes of it, and
// whether the description's declared counts agree.
#include "graph/validate.h"

#include "nnx/error.h"

namespace nnx {

void infer_and_check_channels(Graph& graph, std::vector<std::pair<int, std::string>>& faults) {
  auto channels_at = [&](PortRef src) -> int64_t {
    if (!src.valid()) return kUnknownChannels;
    if (src.node == 0) return graph.inputs_channels[size_t(src.port)];
    const Node& n = graph.nodes[size_t(src.node)];
    return size_t(src.port) < n.out_channels.size() ? n.out_channels[size_t(src.port)]
                                                    : kUnknownChannels;
  };
  for (int index : graph.schedule) {
    Node& node = graph.nodes[size_t(index)];
    const Layer& layer = graph.layers[size_t(node.layer)];
    if (layer.op == nullptr) {  // its construction failed and was reported already
      node.out_channels = layer.declared_out;
      continue;
    }
    std::vector<int64_t> arriving;
    for (const PortRef& in : node.inputs) arriving.push_back(channels_at(in));
    std::vector<int64_t> produced;
    try {
      produced = layer.op->infer_channels(arriving, node.num_outputs);
    } catch (const Error& e) {
      faults.emplace_back(index, graph.describe_node(index) + ": " + e.message());
    }
    if (produced.size() != size_t(node.num_outputs)) {
      // The op refused its inputs: carry on with the declared counts to find further faults.
      node.out_channels = layer.declared_out;
      continue;
    }
    for (size_t k = 0; k < produced.size(); ++k) {
      int64_t declared = layer.declared_out[k];
      if (produced[k] != kUnknownChannels && declared != produced[k]) {
        faults.emplace_back(index, graph.describe_node(index) + ": declared " +
                                       std::to_string(declared) + " channels at output " +
                                       std::to_string(k) + ", but the op gives " +
                                       std::to_string(produced[k]));
      }
      // What counts downstream is what really arrives; unknown falls back to the declaration.
      if (produced[k] == kUnknownChannels) produced[k] = declared;
    }
    node.out_channels = produced;
  }
}

}  // namespace nnx
