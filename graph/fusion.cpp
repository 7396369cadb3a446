// Finding fusable chains (see fusion.h) and precomputing what their kernels need.
#include "graph/fusion.h"

#include "kernels/cpu/prepared.h"
#include "ops/activation.h"
#include "ops/batchnorm2d.h"
#include "ops/conv2d.h"
#include "ops/elementwise.h"
#include "ops/pooling.h"

namespace nnx {
namespace {

// How many input ports read each node's first output, and which node reads it when only one.
struct Readers {
  std::vector<int> count, sole;
};

Readers readers_of(const Graph& graph) {
  Readers r{std::vector<int>(graph.nodes.size(), 0), std::vector<int>(graph.nodes.size(), -1)};
  for (const Node& node : graph.nodes)
    for (const PortRef& in : node.inputs) {
      if (in.port != 0) continue;
      ++r.count[size_t(in.node)];
      r.sole[size_t(in.node)] = node.index;
    }
  for (const PortRef& out : graph.outputs) r.count[size_t(out.node)] += 2;  // never absorbed past
  return r;
}

// The node that can be absorbed after `node`: its first output's only reader, when `node` has
// one output and that output is no network output; else -1.
int next_in_chain(const Graph& graph, const Readers& readers, int node) {
  if (graph.nodes[size_t(node)].num_outputs != 1 || readers.count[size_t(node)] != 1) return -1;
  const int next = readers.sole[size_t(node)];
  return graph.nodes[size_t(next)].inputs.size() == 1 ? next : -1;
}

// The two-input Add that is the sole reader of `node`'s output, when its other operand comes
// from a node earlier in the schedule than `head` (so it is ready when the chain runs); its
// index, or -1. `other` gets that operand, `first` whether `node` is the Add's first input.
int residual_add(const Graph& graph, const Readers& readers, int node, int head,
                 const std::vector<int>& position, PortRef& other, bool& first) {
  if (graph.nodes[size_t(node)].num_outputs != 1 || readers.count[size_t(node)] != 1) return -1;
  const int add = readers.sole[size_t(node)];
  const Node& n = graph.nodes[size_t(add)];
  auto op = std::dynamic_pointer_cast<const BroadcastFoldOp>(graph.layer_of(add).op);
  if (!op || op->type() != "Add" || n.inputs.size() != 2 || n.num_outputs != 1) return -1;
  const bool is_first = n.inputs[0].node == node && n.inputs[0].port == 0;
  const PortRef mine = n.inputs[is_first ? 0 : 1], theirs = n.inputs[is_first ? 1 : 0];
  if (mine.node != node || mine.port != 0 || theirs.node == node) return -1;
  if (theirs.node != 0 && position[size_t(theirs.node)] >= position[size_t(head)]) return -1;
  other = theirs;
  first = is_first;
  return add;
}

const ActivationOp* fusable_activation(const Graph& graph, int node) {
  if (node < 0) return nullptr;
  const auto* act = dynamic_cast<const ActivationOp*>(graph.layer_of(node).op.get());
  return act != nullptr && cpu::epilogue_supports(act->kind()) ? act : nullptr;
}

cpu::Epilogue epilogue_of(const ActivationOp* act) {
  cpu::Epilogue e;
  if (act != nullptr) {
    e.active = true;
    e.kind = act->kind();
    e.args = act->args();
  }
  return e;
}

// w' = w * scale[oc], b' = (b - mean) * scale + beta = b * scale + shift, in double.
void fold(const Conv2d& conv, const BatchNorm2d& bn, Tensor& weight, Tensor& bias) {
  std::vector<double> scale, shift;
  bn.inference_affine(scale, shift);
  const Tensor w = conv.params()[0].value.to(DType::f32).contiguous();
  weight = Tensor::empty(w.shape());
  bias = Tensor::empty(Shape{conv.out_channels()});
  const int64_t per_channel = w.numel() / conv.out_channels();
  const float* conv_bias = nullptr;
  Tensor b;
  if (conv.has_bias()) {
    b = conv.params()[1].value.to(DType::f32).contiguous();
    conv_bias = b.data<float>();
  }
  // Pointers taken once: data<T>() checks the dtype on every call (per element, that was a
  // third of ResNet-50's first run).
  const float* from = w.data<float>();
  float* to = weight.data<float>();
  float* folded_bias = bias.data<float>();
  for (int64_t oc = 0; oc < conv.out_channels(); ++oc) {
    const double s = scale[size_t(oc)];
    for (int64_t i = oc * per_channel; i < (oc + 1) * per_channel; ++i)
      to[i] = float(double(from[i]) * s);
    const double b0 = conv_bias != nullptr ? conv_bias[oc] : 0.0;
    folded_bias[oc] = float(b0 * s + shift[size_t(oc)]);
  }
}

// Conv2d [+ BatchNorm2d] [+ activation] from `head`; false when nothing follows it.
bool conv_chain(const Graph& graph, const Readers& readers, const std::vector<int>& position,
                int head, bool fold_batchnorm, ThreadPool* pool, FusedChain& chain) {
  auto conv = std::dynamic_pointer_cast<const Conv2d>(graph.layer_of(head).op);
  if (!conv) return false;
  chain.head = head;
  int next = next_in_chain(graph, readers, head);
  std::shared_ptr<const BatchNorm2d> bn;
  if (fold_batchnorm && next >= 0) {
    bn = std::dynamic_pointer_cast<const BatchNorm2d>(graph.layer_of(next).op);
    if (bn && bn->inference_is_affine() && bn->num_features() == conv->out_channels()) {
      chain.absorbed.push_back(next);
      next = next_in_chain(graph, readers, next);
    } else {
      bn.reset();
    }
  }
  // A residual Add next (its other operand ready before the head runs), added in the epilogue.
  std::shared_ptr<const BroadcastFoldOp> add;
  bool conv_first = true;
  if (next < 0) {
    PortRef other;
    const int value = chain.absorbed.empty() ? head : chain.absorbed.back();
    const int a = residual_add(graph, readers, value, head, position, other, conv_first);
    if (a >= 0) {
      add = std::dynamic_pointer_cast<const BroadcastFoldOp>(graph.layer_of(a).op);
      chain.absorbed.push_back(a);
      chain.extra_inputs.push_back(other);
      next = next_in_chain(graph, readers, a);
    }
  }
  const ActivationOp* act = fusable_activation(graph, next);
  if (act != nullptr) {
    chain.absorbed.push_back(next);
    next = next_in_chain(graph, readers, next);
  }
  // A MaxPool2d after that pools the convolution's output band by band, in cache.
  std::shared_ptr<const MaxPool2d> max_pool;
  if (next >= 0 && !add)
    max_pool = std::dynamic_pointer_cast<const MaxPool2d>(graph.layer_of(next).op);
  if (max_pool) chain.absorbed.push_back(next);
  const PoolWindow* window = max_pool ? &max_pool->window() : nullptr;
  // With weights that no longer change, a lone convolution is a chain of its own too: the
  // chain keeps its transformed weights between runs.
  if (chain.absorbed.empty() && !fold_batchnorm) return false;
  const cpu::Epilogue epilogue = epilogue_of(act);
  auto prepared = fold_batchnorm ? std::make_shared<cpu::ConvPrepared>() : nullptr;
  Tensor weight, bias;  // folded; undefined: the layer's own
  if (bn) {
    fold(*conv, *bn, weight, bias);
    // Where the kernels read only the prepared form, it is made now and the folded copy dropped:
    // one copy of the weights besides the model's own, not two.
    const cpu::Conv2dShape shape = conv->weight_geometry();
    if (cpu::conv2d_reads_prepared_only(shape)) {
      prepared->prepare(shape, weight.data<float>(), pool);
      weight = Tensor();
    }
  }
  const bool folded = bool(bn);
  chain.run = [conv, folded, weight, bias, epilogue, prepared, window, add, conv_first](
                  const ExecContext& ctx, std::span<const Tensor> inputs, Tensor& output) {
    Tensor own_weight, own_bias;
    const float* w = weight.defined() ? weight.data<float>() : nullptr;
    const float* b = folded ? bias.data<float>() : nullptr;
    if (!folded) {
      own_weight = conv->params()[0].value.contiguous();
      w = own_weight.data<float>();
      if (conv->has_bias()) {
        own_bias = conv->params()[1].value.contiguous();
        b = own_bias.data<float>();
      }
    }
    if (!add)
      return conv->forward_fused(ctx, inputs[0], w, b, epilogue, output, prepared.get(), window);
    const Tensor& skip = inputs[1];
    const Shape conv_shape = conv->output_shape(inputs[0].shape());
    if (conv_shape == output.shape() && skip.shape() == output.shape() && skip.is_contiguous() &&
        skip.dtype() == DType::f32) {
      cpu::Epilogue with_skip = epilogue;
      with_skip.residual = skip.data<float>();
      with_skip.output = output.data<float>();
      return conv->forward_fused(ctx, inputs[0], w, b, with_skip, output, prepared.get());
    }
    // A broadcasting Add: the convolution into a buffer of its own, then the Add.
    Tensor value = Tensor::empty(conv_shape);
    conv->forward_fused(ctx, inputs[0], w, b, {}, value, prepared.get());
    const std::vector<Tensor> operands =
        conv_first ? std::vector<Tensor>{value, skip} : std::vector<Tensor>{skip, value};
    add->forward_fused(ctx, operands, epilogue, output);
  };
  return true;
}

// Add (Sub, Mul) + activation from `head`.
bool fold_op_chain(const Graph& graph, const Readers& readers, int head, FusedChain& chain) {
  auto op = std::dynamic_pointer_cast<const BroadcastFoldOp>(graph.layer_of(head).op);
  if (!op) return false;
  const int next = next_in_chain(graph, readers, head);
  const ActivationOp* act = fusable_activation(graph, next);
  if (act == nullptr) return false;
  chain.head = head;
  chain.absorbed.push_back(next);
  chain.run = [op, epilogue = epilogue_of(act)](const ExecContext& ctx,
                                                std::span<const Tensor> inputs, Tensor& output) {
    op->forward_fused(ctx, inputs, epilogue, output);
  };
  return true;
}

}  // namespace

std::shared_ptr<const Fusion> find_fusion(const Graph& graph, bool fold_batchnorm,
                                          ThreadPool* pool) {
  auto fusion = std::make_shared<Fusion>();
  const size_t n = graph.nodes.size();
  fusion->chain_of.assign(n, -1);
  fusion->alias_of.assign(n, -1);
  const Readers readers = readers_of(graph);
  std::vector<int> position(n, -1);  // in the schedule
  for (size_t i = 0; i < graph.schedule.size(); ++i) position[size_t(graph.schedule[i])] = int(i);
  for (int v : graph.schedule) {
    if (fusion->alias_of[size_t(v)] >= 0) continue;
    FusedChain chain;
    if (!conv_chain(graph, readers, position, v, fold_batchnorm, pool, chain) &&
        !fold_op_chain(graph, readers, v, chain))
      continue;
    fusion->chain_of[size_t(v)] = int(fusion->chains.size());
    for (int a : chain.absorbed) fusion->alias_of[size_t(a)] = v;
    fusion->chains.push_back(std::move(chain));
  }
  return fusion;
}

}  // namespace nnx
