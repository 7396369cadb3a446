// Channel inference and checks: what really arrives at each port, what each op makes of it, and
// whether the description's declared counts agree.
//
// A port's channels are dim 1 of its tensor. Past this project's layout ops (nnx.Permute,
// nnx.Reshape, ...), a tensor may be channels-last or of another rank, so a count the op cannot
// give is not "the channels" in the NCHW sense: such ports are marked, and the ops they feed see
// kUnknownChannels (a Linear or LayerNorm fed a channels-last tensor sees its H as dim 1; its
// real check is infer_shapes at plan time). The mark follows unknown counts downstream and ends
// at the first op that knows its output's channels again (a Conv2d, a Split along dim 1, an Add
// with a residual of known channels).
#include "graph/validate.h"

#include "nnx/error.h"

namespace nnx {

void infer_and_check_channels(Graph& graph, std::vector<std::pair<int, std::string>>& faults) {
  // Per node and output: is dim 1 of uncertain meaning (see above)?
  std::vector<std::vector<bool>> layout_unknown(graph.nodes.size());
  auto unknown_layout = [&](PortRef src) {
    if (!src.valid() || src.node == 0) return false;
    const std::vector<bool>& marks = layout_unknown[size_t(src.node)];
    return size_t(src.port) < marks.size() && marks[size_t(src.port)];
  };
  auto channels_at = [&](PortRef src) -> int64_t {
    if (!src.valid()) return kUnknownChannels;
    if (src.node == 0) return graph.inputs_channels[size_t(src.port)];
    if (unknown_layout(src)) return kUnknownChannels;
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
    bool input_unknown_layout = false;
    for (const PortRef& in : node.inputs) {
      arriving.push_back(channels_at(in));
      input_unknown_layout = input_unknown_layout || unknown_layout(in);
    }
    std::vector<bool>& marks = layout_unknown[size_t(index)];
    marks.assign(size_t(node.num_outputs), input_unknown_layout);
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
    const bool layout_op = layer.op->python_module() == "nnx";
    for (size_t k = 0; k < produced.size(); ++k) {
      int64_t declared = layer.declared_out[k];
      if (produced[k] != kUnknownChannels && declared != produced[k]) {
        faults.emplace_back(index, graph.describe_node(index) + ": declared " +
                                       std::to_string(declared) + " channels at output " +
                                       std::to_string(k) + ", but the op gives " +
                                       std::to_string(produced[k]));
      }
      marks[k] = produced[k] == kUnknownChannels && (layout_op || input_unknown_layout);
      // What counts downstream is what really arrives; unknown falls back to the declaration.
      if (produced[k] == kUnknownChannels) produced[k] = declared;
    }
    node.out_channels = produced;
  }
}

}  // namespace nnx
