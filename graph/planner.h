// Planning one run for given input shapes: output shapes of every node, the nodes the outputs
// need, buffer lifetimes, and one arena in which activations whose lifetimes do not overlap
// share memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "graph/fusion.h"
#include "graph/graph.h"

namespace nnx {

struct PlannedBuffer {
  size_t offset = 0, bytes = 0;
  int first_step = 0, last_step = 0;  // steps during which the buffer must hold its value
  // A Cat's piece computed in its place (Op::concat_dim): buffer `parent` holds this one at
  // byte `within` of it (offset is then parent's offset + within); -1: placed on its own.
  int parent = -1;
  size_t within = 0;
};

struct Plan {
  std::vector<int> steps;  // nodes to run, in order (only those the outputs need)
  std::vector<std::vector<TensorSpec>> specs;  // specs[node][port]; node 0: network inputs
  std::vector<std::vector<int>> buffer;        // buffer[node][port], -1 for views and inputs
  std::vector<PlannedBuffer> buffers;
  std::vector<int64_t> node_flops;  // by node index
  size_t arena_bytes = 0;
  size_t unplanned_bytes = 0;
  int64_t flops = 0;
};

// Throws Error(shape) naming the layer whose op refuses its input shapes, or the input whose
// count or channels differ from the description's inputs_channels. With `fusion`, the nodes a
// chain absorbs are not steps and get no buffer: their values are their chain head's (shapes
// are still inferred, and flops counted, for every node). An input that only a Cat reads, where
// the Cat's pieces are contiguous blocks of its output (Op::concat_dim), lives in its block of the
// Cat's buffer (PlannedBuffer::parent), so the Cat copies nothing for it. With `in_place`
// (inference on the CPU), an op that names an input it may overwrite (Op::in_place_inputs) has
// its output placed in that input's buffer where nothing reads the input afterwards.
Plan make_plan(const Graph& graph, std::span<const TensorSpec> inputs,
               const Fusion* fusion = nullptr, bool in_place = false);

}  // namespace nnx
