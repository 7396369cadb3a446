// Inference-time fusion for the CPU: chains of nodes that one kernel computes in one pass over
// memory. A Conv2d takes the eval-mode BatchNorm2d after it into its weights (folded once per
// model) and the activation after that into its output blocks; an Add (Sub, Mul) takes the
// activation after it into its loop. Found once per model (runtime/model_impl.h caches it).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "graph/graph.h"

namespace nnx {

// One chain: its head runs in place of all of it, from the head's inputs straight into the
// head's output buffer, which then holds the last node's value.
struct FusedChain {
  int head = -1;
  std::vector<int> absorbed;  // the nodes after the head, in order; none of them runs
  // Values the chain reads besides its head's inputs (a fused Add's other operand, computed
  // before the head runs), passed to `run` after them.
  std::vector<PortRef> extra_inputs;
  std::function<void(const ExecContext&, std::span<const Tensor> inputs, Tensor& output)> run;
  // Set where `run` may be given, for these input specs (the head's inputs, then the extra
  // ones), an output that lies in the memory of its one extra input (a residual it reads at each
  // element just before writing there): the planner then lets a residual that nothing reads
  // later hold the chain's value (graph/planner.h).
  std::function<bool(std::span<const TensorSpec> inputs)> output_over_extra;
  // Without output_over_extra, a plan in place (make_plan) may put the output over an input
  // that the head's op names (Op::in_place_inputs): `run` must then allow it, as Add (Sub, Mul)
  // + activation does (BroadcastFoldOp::forward_fused).
};

struct Fusion {
  std::vector<FusedChain> chains;
  std::vector<int> chain_of;  // by node: index into chains for a head, else -1
  std::vector<int> alias_of;  // by node: for an absorbed node the chain's head, else -1

  bool is_head(int node) const { return chain_of[size_t(node)] >= 0; }
};

// The chains of `graph`, a model of built-in ops run on the CPU in inference. A node is absorbed
// only when it is the sole consumer of its predecessor's output and that output is no network
// output. A Conv2d[+BatchNorm2d] also takes a two-input Add after it (a residual connection)
// when the Add's other operand is computed earlier in the schedule: it is added in the
// convolution's epilogue, before the activation that may follow. With `fold_batchnorm` false
// (weights that may still change, as in a model being trained) BatchNorm2d stays a node of its own;
// activations fuse either way. Folded weights are computed here, in double, and rounded once to
// float. Weights prepared for the kernels up front (kernels/cpu/prepared.h) are made on `pool`'s
// threads when given.
std::shared_ptr<const Fusion> find_fusion(const Graph& graph, bool fold_batchnorm,
                                          ThreadPool* pool = nullptr);

// The chains of `graph` for CUDA inference (Conv2d::forward_cuda_chain,
// BroadcastFoldOp::forward_cuda_chain): Conv2d [+ BatchNorm2d folded, as above] [+ a residual
// Add] [+ activation], and Add (Sub, Mul) + activation. A lone convolution is no chain. Folded
// weights stay on the host; the ops' device copies of them are made on first use.
std::shared_ptr<const Fusion> find_cuda_fusion(const Graph& graph, bool fold_batchnorm);

}  // namespace nnx
