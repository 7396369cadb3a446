// Shape inference in schedule order, liveness of every activation, and greedy placement of the
// buffers in one arena, largest first, each at the lowest offset free during its lifetime.
#include "graph/planner.h"

#include <algorithm>
#include <climits>
#include <optional>

#include "nnx/allocator.h"
#include "nnx/error.h"

namespace nnx {
namespace {

size_t aligned(size_t bytes) {
  constexpr size_t a = Allocator::kAlignment;
  return (bytes + a - 1) / a * a;
}

void place_buffers(Plan& plan) {
  std::vector<size_t> order(plan.buffers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return plan.buffers[a].bytes > plan.buffers[b].bytes;
  });
  std::vector<size_t> placed;
  for (size_t i : order) {
    PlannedBuffer& buf = plan.buffers[i];
    if (buf.parent >= 0) continue;                // in its parent's memory
    std::vector<std::pair<size_t, size_t>> busy;  // [offset, end) of overlapping lifetimes
    for (size_t j : placed) {
      const PlannedBuffer& other = plan.buffers[j];
      if (other.first_step <= buf.last_step && buf.first_step <= other.last_step)
        busy.emplace_back(other.offset, other.offset + other.bytes);
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (auto& [start, end] : busy) {
      if (offset + buf.bytes <= start) break;
      offset = std::max(offset, end);
    }
    buf.offset = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + buf.bytes);
    placed.push_back(i);
  }
  // Pieces of Cats, at their place in the parent (itself perhaps a piece of a later Cat).
  for (PlannedBuffer& buf : plan.buffers) {
    if (buf.parent < 0) continue;
    size_t at = buf.within;
    int p = buf.parent;
    for (; plan.buffers[size_t(p)].parent >= 0; p = plan.buffers[size_t(p)].parent)
      at += plan.buffers[size_t(p)].within;
    buf.offset = plan.buffers[size_t(p)].offset + at;
  }
}

// A Cat whose pieces are contiguous blocks of its output (nothing before the cat dimension but
// sizes of 1: the channels at batch 1, SqueezeNet's fire modules) has each input that it alone
// reads computed straight into its block: that input's buffer becomes part of the Cat's, which
// lives from the first such input's step on, and the Cat finds the piece in place. Inputs that
// are views, network inputs or outputs, read by another node too (a view of them included),
// held in a buffer that two values share (share_buffers), or whose block would start
// off the allocator's alignment keep buffers of their own and are copied as before.
void place_cat_inputs(const Graph& graph, const Fusion* fusion, const std::vector<int>& order,
                      const std::vector<std::vector<int>>& root, Plan& plan) {
  const size_t count = plan.buffers.size();
  std::vector<int> readers(count, 0), owners(count, 0);
  auto head_of = [&](int v) { return fusion != nullptr ? fusion->alias_of[size_t(v)] : -1; };
  for (int v : order)
    for (const PortRef& in : graph.nodes[size_t(v)].inputs) {
      // Within a chain, a node's input from the chain is not a read: the chain never stores it.
      const int h = head_of(v);
      if (h >= 0 && (in.node == h || head_of(in.node) == h)) continue;
      const int b = root[size_t(in.node)][size_t(in.port)];
      if (b >= 0) ++readers[size_t(b)];
    }
  for (const PortRef& o : graph.outputs) {
    const int b = root[size_t(o.node)][size_t(o.port)];
    if (b >= 0) readers[size_t(b)] += 2;  // read after the run: never a piece
  }
  for (const std::vector<int>& ports : plan.buffer)
    for (int b : ports)
      if (b >= 0) ++owners[size_t(b)];
  for (int v : plan.steps) {
    const Node& node = graph.nodes[size_t(v)];
    if (fusion != nullptr && fusion->is_head(v)) continue;  // a chain runs its own kernel
    const TensorSpec& out = plan.specs[size_t(v)][0];
    const int rank = out.shape.size();
    const std::optional<int> dim = graph.layer_of(v).op->concat_dim(rank);
    const int cat = plan.buffer[size_t(v)].empty() ? -1 : plan.buffer[size_t(v)][0];
    if (!dim || cat < 0 || plan.buffers[size_t(cat)].bytes == 0) continue;
    int64_t outer = 1;
    for (int k = 0; k < *dim; ++k) outer *= out.shape[k];
    if (outer != 1) continue;
    size_t at = 0;  // the piece's byte offset in the output
    for (const PortRef& in : node.inputs) {
      const TensorSpec& spec = plan.specs[size_t(in.node)][size_t(in.port)];
      const size_t bytes = size_t(spec.shape.numel()) * dtype_size(spec.dtype);
      const size_t here = at;
      at += bytes;
      const int b = root[size_t(in.node)][size_t(in.port)];
      if (b < 0 || readers[size_t(b)] != 1 || owners[size_t(b)] != 1 ||
          plan.buffers[size_t(b)].parent >= 0 || bytes == 0 || here % Allocator::kAlignment != 0 ||
          aligned(bytes) != plan.buffers[size_t(b)].bytes)
        continue;
      // The buffer must hold this value whole: its own, or a chain's last (not a view of it).
      const int head = head_of(in.node);
      const int producer = head >= 0 ? head : in.node;
      if (plan.buffer[size_t(producer)].size() <= size_t(in.port) ||
          plan.buffer[size_t(producer)][size_t(in.port)] != b)
        continue;
      if (fusion != nullptr && fusion->is_head(producer)) {
        const FusedChain& chain = fusion->chains[size_t(fusion->chain_of[size_t(producer)])];
        if (in.node != (chain.absorbed.empty() ? producer : chain.absorbed.back())) continue;
      }
      PlannedBuffer& piece = plan.buffers[size_t(b)];
      PlannedBuffer& whole = plan.buffers[size_t(cat)];
      piece.parent = cat;
      piece.within = here;
      whole.first_step = std::min(whole.first_step, piece.first_step);
    }
  }
}

// A step writes its value over one of its inputs where nothing reads that input after the step
// (one buffer fewer in the arena, and the stores go to lines the step's reads just brought into
// cache, where a buffer of its own had them fetched for the stores alone):
//  - a fused chain that may write over its residual operand (FusedChain::output_over_extra);
//  - with `in_place`, a lone op over an input it names (Op::in_place_inputs: a squeeze-
//    excitation's Mul, an Add not fused into a convolution).
// `root`: the buffer each value is stored in. Lifetimes are final (the merged buffer lives as
// long as the step's value).
void share_buffers(const Graph& graph, const Fusion* fusion,
                   const std::vector<std::vector<int>>& root, bool in_place, Plan& plan) {
  std::vector<int> into(plan.buffers.size());  // a buffer merged into another: that one
  for (size_t b = 0; b < into.size(); ++b) into[b] = int(b);
  auto find = [&](int b) {
    while (into[size_t(b)] != b) b = into[size_t(b)];
    return b;
  };
  auto spec_of = [&](const PortRef& r) -> const TensorSpec& {
    return plan.specs[size_t(r.node)][size_t(r.port)];
  };
  for (size_t step = 0; step < plan.steps.size(); ++step) {
    const int v = plan.steps[step];
    const Node& node = graph.nodes[size_t(v)];
    const int out = plan.buffer[size_t(v)].empty() ? -1 : plan.buffer[size_t(v)][0];
    if (out < 0) continue;
    // Candidates: the input to write over, with its index among the node's inputs (-1: a chain's
    // extra input, which the head does not read).
    std::vector<std::pair<PortRef, int>> candidates;
    TensorSpec value = plan.specs[size_t(v)][0];
    const FusedChain* chain = nullptr;
    if (fusion != nullptr && fusion->is_head(v)) {
      chain = &fusion->chains[size_t(fusion->chain_of[size_t(v)])];
      value = plan.specs[size_t(chain->absorbed.empty() ? v : chain->absorbed.back())][0];
    }
    if (chain != nullptr && chain->output_over_extra) {
      if (chain->extra_inputs.size() != 1) continue;
      candidates.push_back({chain->extra_inputs[0], -1});
    } else if (in_place && node.num_outputs == 1) {
      // A lone op, or a chain whose head's kernel writes over that input (an Add + activation).
      std::vector<TensorSpec> specs;
      for (const PortRef& in : node.inputs) specs.push_back(spec_of(in));
      for (int k : graph.layer_of(v).op->in_place_inputs(specs, value))
        if (k >= 0 && size_t(k) < node.inputs.size())
          candidates.push_back({node.inputs[size_t(k)], k});
    }
    for (const auto& [r, index] : candidates) {
      // A view (no buffer of its own, not a chain's value) may not be all of its buffer.
      const bool view = plan.buffer[size_t(r.node)][size_t(r.port)] < 0 &&
                        (fusion == nullptr || fusion->alias_of[size_t(r.node)] < 0);
      if (view || root[size_t(r.node)][size_t(r.port)] < 0) continue;
      const int target = find(root[size_t(r.node)][size_t(r.port)]);
      const PlannedBuffer& from = plan.buffers[size_t(out)];
      PlannedBuffer& to = plan.buffers[size_t(target)];
      if (to.last_step != int(step) || to.bytes != from.bytes || !(spec_of(r) == value)) continue;
      // No other input of the step may be in it: the kernel reads them all along.
      std::vector<TensorSpec> specs;
      bool read_otherwise = false;
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const PortRef& in = node.inputs[i];
        const int b = root[size_t(in.node)][size_t(in.port)];
        read_otherwise = read_otherwise || (int(i) != index && b >= 0 && find(b) == target);
        specs.push_back(spec_of(in));
      }
      if (read_otherwise) continue;
      if (index < 0) {
        specs.push_back(spec_of(r));
        if (!chain->output_over_extra(specs)) continue;
      }
      to.last_step = from.last_step;
      plan.unplanned_bytes -= from.bytes;
      plan.buffers[size_t(out)].bytes = 0;
      into[size_t(out)] = target;
      plan.buffer[size_t(v)][0] = target;
      break;
    }
  }
}

}  // namespace

Plan make_plan(const Graph& graph, std::span<const TensorSpec> inputs, const Fusion* fusion,
               bool in_place) {
  NNX_CHECK(int(inputs.size()) == graph.num_inputs(), ErrorKind::shape, graph.source, ": expected ",
            graph.num_inputs(), " input tensor(s) (inputs_channels has ", graph.num_inputs(),
            " entries), found ", inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Shape& s = inputs[k].shape;
    NNX_CHECK(s.size() >= 2, ErrorKind::shape, graph.source, ": input ", k,
              ": expected an NCHW tensor, found shape ", s.str());
    NNX_CHECK(s[1] == graph.inputs_channels[k], ErrorKind::shape, graph.source, ": input ", k,
              ": expected ", graph.inputs_channels[k], " channels, found ", s[1], " (shape ",
              s.str(), ")");
  }
  size_t n = graph.nodes.size();
  Plan plan;
  plan.specs.resize(n);
  plan.buffer.resize(n);
  plan.node_flops.assign(n, 0);
  plan.specs[0].assign(inputs.begin(), inputs.end());
  plan.buffer[0].assign(inputs.size(), -1);

  // Only the nodes the outputs depend on run.
  std::vector<bool> needed(n, false);
  std::vector<int> stack;
  for (const PortRef& o : graph.outputs) stack.push_back(o.node);
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    if (v == 0 || needed[size_t(v)]) continue;
    needed[size_t(v)] = true;
    for (const PortRef& in : graph.nodes[size_t(v)].inputs) stack.push_back(in.node);
  }
  auto absorbed_by = [&](int v) { return fusion != nullptr ? fusion->alias_of[size_t(v)] : -1; };
  std::vector<int> order;  // the needed nodes, absorbed ones included
  for (int v : graph.schedule)
    if (needed[size_t(v)]) order.push_back(v);

  // Shapes, and which buffer each port's value lives in (a view lives in its source's).
  std::vector<std::vector<int>> root(n);  // buffer the value is stored in, -1: a network input
  root[0].assign(inputs.size(), -1);
  std::vector<int> step_of(n, -1);
  for (int v : order) {
    const int head = absorbed_by(v);
    const size_t s = head >= 0 ? size_t(step_of[size_t(head)]) : plan.steps.size();
    if (head < 0) plan.steps.push_back(v);
    step_of[size_t(v)] = int(s);
    const Node& node = graph.nodes[size_t(v)];
    const Op& op = *graph.layer_of(v).op;
    std::vector<TensorSpec> in_specs;
    for (const PortRef& in : node.inputs)
      in_specs.push_back(plan.specs[size_t(in.node)][size_t(in.port)]);
    std::vector<TensorSpec> out_specs;
    try {
      out_specs = op.infer_shapes(in_specs, node.num_outputs);
      NNX_CHECK(int(out_specs.size()) == node.num_outputs, ErrorKind::shape, "the op gave ",
                out_specs.size(), " output shapes for ", node.num_outputs, " outputs");
    } catch (const Error& e) {
      std::string shapes;
      for (auto& sp : in_specs) shapes += (shapes.empty() ? "" : ", ") + sp.shape.str();
      throw Error(e.kind(), graph.source + ": " + graph.describe_node(v) + ": " + e.message() +
                                " (input shapes " + shapes + ")");
    }
    plan.specs[size_t(v)] = out_specs;
    plan.buffer[size_t(v)].assign(out_specs.size(), -1);
    root[size_t(v)].assign(out_specs.size(), -1);
    for (size_t p = 0; p < out_specs.size(); ++p) {
      if (head >= 0) {  // computed by the chain's head, into its buffer
        root[size_t(v)][p] = root[size_t(head)][p];
        // The buffer holds the chain's last value, which may be smaller (a fused pooling).
        const int b = root[size_t(v)][p];
        if (b >= 0) {
          const size_t bytes =
              aligned(size_t(out_specs[p].shape.numel()) * dtype_size(out_specs[p].dtype));
          plan.unplanned_bytes = plan.unplanned_bytes - plan.buffers[size_t(b)].bytes + bytes;
          plan.buffers[size_t(b)].bytes = bytes;
        }
        continue;
      }
      if (auto src = op.output_view_of(int(p))) {
        const PortRef& in = node.inputs[size_t(*src)];
        root[size_t(v)][p] = root[size_t(in.node)][size_t(in.port)];
        continue;
      }
      size_t bytes = size_t(out_specs[p].shape.numel()) * dtype_size(out_specs[p].dtype);
      plan.buffer[size_t(v)][p] = int(plan.buffers.size());
      root[size_t(v)][p] = int(plan.buffers.size());
      plan.buffers.push_back({0, aligned(bytes), int(s), int(s)});
      plan.unplanned_bytes += aligned(bytes);
    }
    plan.node_flops[size_t(v)] = op.flops(in_specs, out_specs);
    plan.flops += plan.node_flops[size_t(v)];
  }
  // Lifetimes: a buffer lives until its last reader (an absorbed node reads at its chain's step:
  // a fused Add's other operand); network outputs until the end of the run.
  for (int v : order)
    for (const PortRef& in : graph.nodes[size_t(v)].inputs) {
      int b = root[size_t(in.node)][size_t(in.port)];
      if (b >= 0)
        plan.buffers[size_t(b)].last_step =
            std::max(plan.buffers[size_t(b)].last_step, step_of[size_t(v)]);
    }
  for (const PortRef& o : graph.outputs) {
    int b = root[size_t(o.node)][size_t(o.port)];
    if (b >= 0) plan.buffers[size_t(b)].last_step = INT_MAX;
  }
  share_buffers(graph, fusion, root, in_place, plan);
  place_cat_inputs(graph, fusion, order, root, plan);
  place_buffers(plan);
  return plan;
}

}  // namespace nnx
