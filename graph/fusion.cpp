// Finding fusable chains (see fusion.h) and precomputing what their kernels need.
#include "graph/fusion.h"

#include <cstdlib>
#include <string_view>

#include "kernels/cpu/inverted_residual.h"
#include "kernels/cpu/prepared.h"
#include "ops/activation.h"
#include "ops/batchnorm2d.h"
#include "ops/conv2d.h"
#include "ops/elementwise.h"
#include "ops/pooling.h"
#include "ops/structure.h"
#include "runtime/mapped_file.h"

#ifdef NNX_WITH_CUDA
#include "runtime/cuda/op_support.h"
#endif

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

// Whether `node` is the identity at inference (the Dropout family, StochasticDepth, a one-input
// Identity): its output is its input's value, unchanged in shape.
bool passes_through(const Graph& graph, int node) {
  const Op* op = graph.layer_of(node).op.get();
  if (dynamic_cast<const DropoutOp*>(op) != nullptr ||
      dynamic_cast<const StochasticDepthOp*>(op) != nullptr)
    return true;
  return dynamic_cast<const IdentityOp*>(op) != nullptr &&
         graph.nodes[size_t(node)].inputs.size() == 1;
}

// `node`, or the last of the nodes that pass its value on unchanged (passes_through), each the
// sole reader of the one before; those are appended to `absorbed` (a chain that absorbs them
// goes on past them: EfficientNet's StochasticDepth between a block's projection and its Add).
int through_identities(const Graph& graph, const Readers& readers, int node,
                       std::vector<int>& absorbed) {
  for (int next; (next = next_in_chain(graph, readers, node)) >= 0 && passes_through(graph, next);)
    absorbed.push_back(node = next);
  return node;
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
  // Host copies: a model loaded onto a CUDA device holds its parameters there.
  const Tensor w = conv.params()[0].value.to(Device::cpu()).to(DType::f32).contiguous();
  weight = Tensor::empty(w.shape());
  bias = Tensor::empty(Shape{conv.out_channels()});
  const int64_t per_channel = w.numel() / conv.out_channels();
  const float* conv_bias = nullptr;
  Tensor b;
  if (conv.has_bias()) {
    b = conv.params()[1].value.to(Device::cpu()).to(DType::f32).contiguous();
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

// What follows a Conv2d in a chain: [BatchNorm2d (with `fold_batchnorm`)] [a residual Add, its
// other operand ready before the head runs] [an activation].
struct ConvChainNodes {
  std::shared_ptr<const Conv2d> conv;
  std::shared_ptr<const BatchNorm2d> bn;
  std::shared_ptr<const BroadcastFoldOp> add;
  bool conv_first = true;  // the convolution is the Add's first operand
  const ActivationOp* act = nullptr;
  int next = -1;  // the node after the chain's last, if it could be absorbed

  // Whether the convolution takes anything in (the identities it passes do not count).
  bool takes_any() const { return bn || add || act != nullptr; }
};

// Fills chain.head, absorbed and extra_inputs from `head`; false when it is no Conv2d.
bool conv_chain_nodes(const Graph& graph, const Readers& readers, const std::vector<int>& position,
                      int head, bool fold_batchnorm, FusedChain& chain, ConvChainNodes& found) {
  found.conv = std::dynamic_pointer_cast<const Conv2d>(graph.layer_of(head).op);
  if (!found.conv) return false;
  chain.head = head;
  // The node whose output holds the chain's value so far, past identities at inference.
  int value = through_identities(graph, readers, head, chain.absorbed);
  int next = next_in_chain(graph, readers, value);
  auto take = [&](int node) {
    chain.absorbed.push_back(node);
    value = through_identities(graph, readers, node, chain.absorbed);
    next = next_in_chain(graph, readers, value);
  };
  if (fold_batchnorm && next >= 0) {
    auto bn = std::dynamic_pointer_cast<const BatchNorm2d>(graph.layer_of(next).op);
    if (bn && bn->inference_is_affine() && bn->num_features() == found.conv->out_channels()) {
      found.bn = bn;
      take(next);
    }
  }
  if (next < 0) {
    PortRef other;
    const int a = residual_add(graph, readers, value, head, position, other, found.conv_first);
    if (a >= 0) {
      found.add = std::dynamic_pointer_cast<const BroadcastFoldOp>(graph.layer_of(a).op);
      chain.extra_inputs.push_back(other);
      take(a);
    }
  }
  found.act = fusable_activation(graph, next);
  if (found.act != nullptr) take(next);
  found.next = next;
  return true;
}

// Conv2d [+ BatchNorm2d] [+ residual Add, added in the epilogue] [+ activation] [+ MaxPool2d]
// from `head`; false when nothing follows it.
bool conv_chain(const Graph& graph, const Readers& readers, const std::vector<int>& position,
                int head, bool fold_batchnorm, ThreadPool* pool, FusedChain& chain) {
  ConvChainNodes found;
  if (!conv_chain_nodes(graph, readers, position, head, fold_batchnorm, chain, found)) return false;
  // A MaxPool2d after that pools the convolution's output band by band, in cache.
  std::shared_ptr<const MaxPool2d> max_pool;
  if (found.next >= 0 && !found.add)
    max_pool = std::dynamic_pointer_cast<const MaxPool2d>(graph.layer_of(found.next).op);
  if (max_pool) chain.absorbed.push_back(found.next);
  const PoolWindow* window = max_pool ? &max_pool->window() : nullptr;
  // With weights that no longer change, a lone convolution is a chain of its own too: the
  // chain keeps its transformed weights between runs.
  if (!found.takes_any() && !max_pool && !fold_batchnorm) return false;
  const cpu::Epilogue epilogue = epilogue_of(found.act);
  auto prepared = fold_batchnorm ? std::make_shared<cpu::ConvPrepared>() : nullptr;
  Tensor weight, bias;  // folded; undefined: the layer's own
  if (found.bn) {
    fold(*found.conv, *found.bn, weight, bias);
    // Where the kernels read only the prepared form, it is made now and the folded copy dropped:
    // one copy of the weights besides the model's own, not two.
    const cpu::Conv2dShape shape = found.conv->weight_geometry();
    if (cpu::conv2d_reads_prepared_only(shape)) {
      prepared->prepare(shape, weight.data<float>(), pool);
      weight = Tensor();
    }
    // Nor does this chain read the layer's own weight again: where it lies in a mapped weights
    // file, its pages go back to the kernel (read again from the file if anything asks), so
    // that the model's copy stops counting toward the process's memory (ResNet-50's peak RSS
    // 320 -> 230 MB).
    const Tensor& own = found.conv->params()[0].value;
    if (own.is_contiguous()) release_mapped_pages(own.raw_data(), own.nbytes());
  }
  const bool folded = bool(found.bn);
  if (found.add)
    chain.output_over_extra = [conv = found.conv, epilogue,
                               prepared = bool(prepared)](std::span<const TensorSpec> inputs) {
      return cpu::conv2d_residual_in_place(conv->geometry(inputs[0].shape), prepared, epilogue);
    };
  chain.run = [found, folded, weight, bias, epilogue, prepared, window](
                  const ExecContext& ctx, std::span<const Tensor> inputs, Tensor& output) {
    Tensor own_weight, own_bias;
    const float* w = weight.defined() ? weight.data<float>() : nullptr;
    const float* b = folded ? bias.data<float>() : nullptr;
    if (!folded) {
      own_weight = found.conv->params()[0].value.contiguous();
      w = own_weight.data<float>();
      if (found.conv->has_bias()) {
        own_bias = found.conv->params()[1].value.contiguous();
        b = own_bias.data<float>();
      }
    }
    if (!found.add)
      return found.conv->forward_fused(ctx, inputs[0], w, b, epilogue, output, prepared.get(),
                                       window);
    const Tensor& skip = inputs[1];
    const Shape conv_shape = found.conv->output_shape(inputs[0].shape());
    if (conv_shape == output.shape() && skip.shape() == output.shape() && skip.is_contiguous() &&
        skip.dtype() == DType::f32) {
      cpu::Epilogue with_skip = epilogue;
      with_skip.residual = skip.data<float>();
      with_skip.output = output.data<float>();
      return found.conv->forward_fused(ctx, inputs[0], w, b, with_skip, output, prepared.get());
    }
    // A broadcasting Add: the convolution into a buffer of its own, then the Add.
    Tensor value = Tensor::empty(conv_shape);
    found.conv->forward_fused(ctx, inputs[0], w, b, {}, value, prepared.get());
    const std::vector<Tensor> operands =
        found.conv_first ? std::vector<Tensor>{value, skip} : std::vector<Tensor>{skip, value};
    found.add->forward_fused(ctx, operands, epilogue, output);
  };
  return true;
}

// NNX_FUSE_BLOCKS=0 leaves inverted-residual blocks to the per-convolution chains (to compare).
bool blocks_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("NNX_FUSE_BLOCKS");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return enabled;
}

// One convolution of an inverted-residual block with its BatchNorm2d folded in and the clamp of
// a ReLU or ReLU6 after it (when `clamped` and there is one).
struct BlockStage {
  std::shared_ptr<const Conv2d> conv;
  std::shared_ptr<const BatchNorm2d> bn;
  Tensor weight, bias;  // folded, once the whole block is found
  float lo = -INFINITY, hi = INFINITY;
  int last = -1;  // the stage's last node
};

enum class StageKind { pointwise, depthwise };

bool block_stage(const Graph& graph, const Readers& readers, int node, StageKind kind, bool clamped,
                 BlockStage& stage, std::vector<int>& absorbed) {
  stage.conv = std::dynamic_pointer_cast<const Conv2d>(graph.layer_of(node).op);
  if (!stage.conv || stage.conv->padding_mode() != cpu::PadMode::zeros) return false;
  const cpu::Conv2dShape g = stage.conv->weight_geometry();
  if (kind == StageKind::pointwise &&
      (g.groups != 1 || g.kernel_h != 1 || g.kernel_w != 1 || g.stride_h != 1 || g.stride_w != 1 ||
       g.pad_top != 0 || g.pad_left != 0 || g.out_h != g.in_h || g.out_w != g.in_w))
    return false;
  if (kind == StageKind::depthwise &&
      (g.groups != g.in_channels || g.out_channels != g.in_channels))
    return false;
  const int next = next_in_chain(graph, readers, node);
  if (next < 0) return false;
  auto bn = std::dynamic_pointer_cast<const BatchNorm2d>(graph.layer_of(next).op);
  if (!bn || !bn->inference_is_affine() || bn->num_features() != stage.conv->out_channels())
    return false;
  stage.bn = bn;
  absorbed.push_back(next);
  stage.last = next;
  if (!clamped) return true;
  const ActivationOp* act = fusable_activation(graph, next_in_chain(graph, readers, next));
  if (act == nullptr) return true;
  const cpu::ClampEpilogue clamp = cpu::clamp_of(epilogue_of(act));
  if (!clamp.exact) return true;
  stage.lo = clamp.lo;
  stage.hi = clamp.hi;
  stage.last = readers.sole[size_t(next)];
  absorbed.push_back(stage.last);
  return true;
}

// An inverted-residual block from `head`: [1x1 Conv2d + BatchNorm2d + ReLU/ReLU6] -> depthwise
// Conv2d + BatchNorm2d [+ ReLU/ReLU6] -> 1x1 Conv2d + BatchNorm2d [+ residual Add]
// [+ activation], computed by cpu::inverted_residual in bands of rows. Inference only (the
// weights are folded and prepared once).
bool inverted_residual_chain(const Graph& graph, const Readers& readers,
                             const std::vector<int>& position, int head, ThreadPool* pool,
                             FusedChain& chain) {
  BlockStage expand, depthwise, project;
  std::vector<int>& absorbed = chain.absorbed;
  int node = head;
  auto conv = std::dynamic_pointer_cast<const Conv2d>(graph.layer_of(head).op);
  if (!conv) return false;
  const cpu::Conv2dShape g = conv->weight_geometry();
  const bool expands = !(g.groups == g.in_channels && g.out_channels == g.in_channels);
  if (expands) {
    if (!block_stage(graph, readers, node, StageKind::pointwise, true, expand, absorbed))
      return false;
    // The expansion's activation is what makes it a block (a linear 1x1 before a depthwise
    // convolution is not one).
    if (expand.last == absorbed.front()) return false;
    node = next_in_chain(graph, readers, expand.last);
    if (node < 0) return false;
    absorbed.push_back(node);
  }
  if (!block_stage(graph, readers, node, StageKind::depthwise, true, depthwise, absorbed))
    return false;
  node = next_in_chain(graph, readers, depthwise.last);
  if (node < 0) return false;
  absorbed.push_back(node);
  if (!block_stage(graph, readers, node, StageKind::pointwise, false, project, absorbed))
    return false;
  if (expands && expand.conv->out_channels() != depthwise.conv->out_channels()) return false;
  // A residual Add after the projection, then an activation.
  PortRef other;
  bool block_first = true;
  int next = next_in_chain(graph, readers, project.last);
  std::shared_ptr<const BroadcastFoldOp> add;
  if (next < 0) {
    const int a = residual_add(graph, readers, project.last, head, position, other, block_first);
    if (a >= 0) {
      add = std::dynamic_pointer_cast<const BroadcastFoldOp>(graph.layer_of(a).op);
      absorbed.push_back(a);
      chain.extra_inputs.push_back(other);
      next = next_in_chain(graph, readers, a);
    }
  }
  const ActivationOp* act = fusable_activation(graph, next);
  if (act != nullptr) absorbed.push_back(next);
  chain.head = head;
  for (BlockStage* stage : {&expand, &depthwise, &project})
    if (stage->conv) fold(*stage->conv, *stage->bn, stage->weight, stage->bias);

  // The weights as the kernel reads them, made now: the 1x1 ones as 12-row panels, and all of
  // them channels-last for small planes.
  auto channels_last = std::make_shared<cpu::ChannelsLastWeights>();
  const bool use_channels_last = expands && cpu::channels_last_available();
  if (use_channels_last) {
    const cpu::Conv2dShape dg = depthwise.conv->weight_geometry();
    cpu::prepare_channels_last(
        expand.conv->weight_geometry().in_channels, dg.in_channels, project.conv->out_channels(),
        dg.kernel_h * dg.kernel_w, expand.weight.data<float>(), expand.bias.data<float>(),
        depthwise.weight.data<float>(), depthwise.bias.data<float>(), project.weight.data<float>(),
        project.bias.data<float>(), *channels_last);
  }
  auto panels = [&](const BlockStage& stage) {
    auto prepared = std::make_shared<cpu::ConvPrepared>();
    prepared->panels(stage.conv->weight_geometry(), stage.weight.data<float>(), pool);
    return prepared;
  };
  // The 12-row panels only where the channels-last form is not used.
  auto expand_panels = expands && !use_channels_last ? panels(expand) : nullptr;
  auto project_panels = !use_channels_last ? panels(project) : nullptr;
  cpu::InvertedResidual base;
  base.expands = expands;
  if (expand_panels)
    base.expand_panels = expand_panels->panels(expand.conv->weight_geometry(), nullptr);
  if (expands) {
    base.expand_bias = expand.bias.data<float>();
    base.expand_lo = expand.lo;
    base.expand_hi = expand.hi;
  }
  base.depthwise_weight = depthwise.weight.data<float>();
  base.depthwise_bias = depthwise.bias.data<float>();
  base.depthwise_lo = depthwise.lo;
  base.depthwise_hi = depthwise.hi;
  base.out_channels = project.conv->out_channels();
  if (project_panels)
    base.project_panels = project_panels->panels(project.conv->weight_geometry(), nullptr);
  base.project_bias = project.bias.data<float>();
  if (use_channels_last) base.channels_last = channels_last.get();
  const cpu::Epilogue epilogue = epilogue_of(act);
  // What the lambda keeps alive: the folded biases and depthwise weights, the panels.
  const Tensor kept[] = {expand.bias, depthwise.weight, depthwise.bias, project.bias};
  chain.run = [expand = expand.conv, dw = depthwise.conv, project = project.conv, base,
               kept = std::vector<Tensor>(std::begin(kept), std::end(kept)), expand_panels,
               project_panels, channels_last, epilogue, add, block_first](
                  const ExecContext& ctx, std::span<const Tensor> inputs, Tensor& output) {
    const Tensor x = inputs[0].contiguous();
    cpu::InvertedResidual b = base;
    const Shape hidden = base.expands ? expand->output_shape(x.shape()) : x.shape();
    b.batch = x.size(0);
    b.in_channels = x.size(1);
    b.in_h = x.size(2);
    b.in_w = x.size(3);
    b.depthwise = dw->geometry(hidden);
    const Shape value_shape = project->output_shape(dw->output_shape(hidden));
    if (!add || (value_shape == output.shape() && inputs[1].shape() == output.shape() &&
                 inputs[1].is_contiguous() && inputs[1].dtype() == DType::f32)) {
      b.project_epilogue = epilogue;
      if (add) {
        b.project_epilogue.residual = inputs[1].data<float>();
        b.project_epilogue.output = output.data<float>();
      }
      return cpu::inverted_residual(b, x.data<float>(), output.data<float>(), ctx.pool);
    }
    // A broadcasting Add: the block into a buffer of its own, then the Add.
    Tensor value = Tensor::empty(value_shape);
    cpu::inverted_residual(b, x.data<float>(), value.data<float>(), ctx.pool);
    const std::vector<Tensor> operands =
        block_first ? std::vector<Tensor>{value, inputs[1]} : std::vector<Tensor>{inputs[1], value};
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

#ifdef NNX_WITH_CUDA
// CUDA: Conv2d [+ BatchNorm2d] [+ residual Add] [+ activation] from `head`.
bool cuda_conv_chain(const Graph& graph, const Readers& readers, const std::vector<int>& position,
                     int head, bool fold_batchnorm, FusedChain& chain) {
  ConvChainNodes found;
  if (!conv_chain_nodes(graph, readers, position, head, fold_batchnorm, chain, found)) return false;
  if (!found.takes_any()) return false;  // a lone convolution (or views)
  Tensor weight, bias;                   // on the host: folded, else the layer's own bias or zeros
  if (found.bn) {
    fold(*found.conv, *found.bn, weight, bias);
  } else if (!found.conv->has_bias()) {
    bias = Tensor::zeros(Shape{found.conv->out_channels()});  // the fused cuDNN call needs one
  }
  chain.run = [found, weight, bias](const ExecContext& ctx, std::span<const Tensor> inputs,
                                    Tensor& output) {
    const Device device = ctx.device;
    const Tensor w =
        cuda::device_param(weight.defined() ? weight : found.conv->params()[0].value, device);
    const Tensor b =
        cuda::device_param(bias.defined() ? bias : found.conv->params()[1].value, device);
    if (!found.add)
      return found.conv->forward_cuda_chain(ctx, inputs[0], w, b, nullptr, found.act, output);
    const Tensor& skip = inputs[1];
    const Shape conv_shape = found.conv->output_shape(inputs[0].shape());
    if (conv_shape == output.shape() && skip.shape() == output.shape())
      return found.conv->forward_cuda_chain(ctx, inputs[0], w, b, &skip, found.act, output);
    // A broadcasting Add: the convolution into a buffer of its own, then the Add [+ act].
    Tensor value = Tensor::empty(conv_shape, DType::f32, device);
    found.conv->forward_cuda_chain(ctx, inputs[0], w, b, nullptr, nullptr, value);
    const std::vector<Tensor> operands =
        found.conv_first ? std::vector<Tensor>{value, skip} : std::vector<Tensor>{skip, value};
    if (found.act != nullptr)
      return found.add->forward_cuda_chain(ctx, operands, *found.act, output);
    found.add->forward(ctx, operands, std::span(&output, 1));
  };
  return true;
}

// CUDA: Add (Sub, Mul) + activation from `head`.
bool cuda_fold_op_chain(const Graph& graph, const Readers& readers, int head, FusedChain& chain) {
  auto op = std::dynamic_pointer_cast<const BroadcastFoldOp>(graph.layer_of(head).op);
  if (!op) return false;
  const ActivationOp* act = fusable_activation(graph, next_in_chain(graph, readers, head));
  if (act == nullptr) return false;
  chain.head = head;
  chain.absorbed.push_back(readers.sole[size_t(head)]);
  chain.run = [op, act](const ExecContext& ctx, std::span<const Tensor> inputs, Tensor& output) {
    op->forward_cuda_chain(ctx, inputs, *act, output);
  };
  return true;
}
#endif

}  // namespace

std::shared_ptr<const Fusion> find_cuda_fusion(const Graph& graph, bool fold_batchnorm) {
  auto fusion = std::make_shared<Fusion>();
  const size_t n = graph.nodes.size();
  fusion->chain_of.assign(n, -1);
  fusion->alias_of.assign(n, -1);
#ifdef NNX_WITH_CUDA
  const Readers readers = readers_of(graph);
  std::vector<int> position(n, -1);
  for (size_t i = 0; i < graph.schedule.size(); ++i) position[size_t(graph.schedule[i])] = int(i);
  for (int v : graph.schedule) {
    if (fusion->alias_of[size_t(v)] >= 0) continue;
    FusedChain chain;
    if (!cuda_conv_chain(graph, readers, position, v, fold_batchnorm, chain) &&
        !(chain = FusedChain(), cuda_fold_op_chain(graph, readers, v, chain)))
      continue;
    fusion->chain_of[size_t(v)] = int(fusion->chains.size());
    for (int a : chain.absorbed) fusion->alias_of[size_t(a)] = v;
    fusion->chains.push_back(std::move(chain));
  }
#else
  (void)fold_batchnorm;  // no CUDA backend: no chains
#endif
  return fusion;
}

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
    if (fold_batchnorm && blocks_enabled() &&
        inverted_residual_chain(graph, readers, position, v, pool, chain)) {
      // taken
    } else if (chain = FusedChain();
               !conv_chain(graph, readers, position, v, fold_batchnorm, pool, chain) &&
               !(chain = FusedChain(), fold_op_chain(graph, readers, v, chain))) {
      continue;
    }
    fusion->chain_of[size_t(v)] = int(fusion->chains.size());
    for (int a : chain.absorbed) fusion->alias_of[size_t(a)] = v;
    fusion->chains.push_back(std::move(chain));
  }
  return fusion;
}

}  // namespace nnx
