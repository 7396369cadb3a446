// The graph IR: node 0 is the network input, nodes 1..N are layers; a layer description (one
// op, one set of weights) may stand at several nodes. Knows nothing about devices.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nnx/op.h"
#include "nnx/value.h"

namespace nnx {

struct PortRef {
  int node = -1;
  int port = -1;
  bool valid() const { return node >= 0 && port >= 0; }
  bool operator==(const PortRef&) const = default;
};

// One entry of the description's layer list.
struct Layer {
  int description_index = 0;         // 0-based position in the layer list
  std::string call_text;             // the constructor string as written (with its module prefix)
  std::shared_ptr<Op> op;            // shared by all nodes of this layer
  std::shared_ptr<const Call> call;  // what op was made from (Model::clone makes it again)
  std::vector<int> nodes;            // node indices where the layer stands
  std::vector<int64_t> declared_in, declared_out;  // CH
};

struct Node {
  int index = 0;
  int layer = -1;               // index into Graph::layers; -1 for node 0
  std::vector<PortRef> inputs;  // one per input port
  int num_outputs = 0;
  std::vector<int64_t> out_channels;  // as the op computes them (kUnknownChannels if unknown)
};

struct Graph {
  std::string source;  // file the description came from, for messages
  std::vector<int64_t> inputs_channels, outputs_channels;
  std::vector<Layer> layers;
  std::vector<Node> nodes;       // nodes[i].index == i; nodes[0] is the network input
  std::vector<PortRef> outputs;  // network output k comes from outputs[k]
  std::vector<int> schedule;     // topological order of nodes 1..N (deterministic)

  int num_inputs() const { return int(inputs_channels.size()); }
  int num_outputs() const { return int(outputs.size()); }
  const Layer& layer_of(int node) const { return layers[size_t(nodes[size_t(node)].layer)]; }
  // "layer 12 'Conv2d(128,256,3)'", for messages.
  std::string describe_node(int node) const;
};

// Orders nodes 1..N so that each comes after its sources, smallest index first among the ready
// ones. Throws Error(format) naming the nodes on a cycle.
std::vector<int> topological_schedule(const Graph& graph);

}  // namespace nnx
