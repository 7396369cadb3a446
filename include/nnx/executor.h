// Running a model: an Executor owns its plan, its activation arena and its threads; it is
// not thread-safe itself, but any number of Executors can run one Model concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nnx/model.h"
#include "nnx/tensor.h"

namespace nnx {

// Whether Executors fuse by default: true unless the environment has NNX_FUSE=0 (read once).
NNX_API bool fuse_by_default();

// Arithmetic of a CUDA model's convolutions and matrix products: fp32 (no tensor cores, as
// PyTorch with TF32 disabled), tf32 (tensor cores with TF32 inputs and fp32 accumulation, as
// PyTorch's default for cuDNN convolutions), fp16 or bf16 (convolutions on tensor cores with
// fp16/bf16 operands and fp32 accumulation, their inputs and weights rounded, as under
// torch.autocast; every other op, Linear included, and the values between ops stay fp32). The
// CPU computes fp32.
enum class Precision { fp32, tf32, fp16, bf16 };
// "fp32", ...; parse_precision throws Error(usage) for other names.
NNX_API const char* precision_name(Precision precision);
NNX_API Precision parse_precision(std::string_view name);

struct ExecutorOptions {
  int threads = 0;       // 0: all hardware threads
  bool profile = false;  // time every node of every run (see last_profile())
  // On the CPU, run Conv2d+BatchNorm2d+activation and Add+activation chains as one node each
  // (BatchNorm folded into the convolution's weights once per model, activations applied to
  // each output block in cache). Outputs match unfused runs to float rounding (~1e-7). On CUDA
  // the same chains with a residual Add: one cuDNN convolution + bias + residual + ReLU call,
  // or the convolution and one elementwise kernel.
  bool fuse = fuse_by_default();
  // On the CPU with two or more threads, a batch of at least one sample per thread whose network
  // is separable (Op::batch_separable: no op mixes samples) runs as equal parts, each whole on
  // one thread (the parts taken in turn as threads come free), instead of every op split over
  // the threads: each part's values stay in its core's caches, no op waits for the slowest
  // thread, and the arenas are the parts'. Parts of at least two per thread where the batch
  // divides so (batch 8 on 2 threads: 4 parts of 2), else of one sample. Outputs match the
  // unsplit run to float rounding (a part's kernels may pick another algorithm for its smaller
  // batch). Not while profiling (the profile times whole-batch nodes).
  bool batch_split = true;
  // Error(unsupported) from the constructor for anything but fp32 on the CPU.
  Precision precision = Precision::fp32;
  // CUDA: the second run with given input shapes captures the run's kernels as CUDA graphs,
  // and later runs with those shapes replay them (one launch instead of one per kernel; new
  // shapes plan and capture anew). Nodes that run on the host (ops without a CUDA body, such
  // as user ops) are host tasks inside the graph when they have no parameters (their tensors
  // copied through page-locked memory by the graph), else stay outside, between graphs. Not
  // while profiling, nor for a model whose
  // weights may change (a Model::clone copy: the graphs would keep reading the weights they
  // were captured with). See cuda_graph_state().
  bool cuda_graph = true;
};

// Time spent in one node during the last run, when profiling.
struct NodeTiming {
  int node = 0;
  double ms = 0;
  std::vector<int> fused;  // nodes computed inside this one (fusion), in order; none ran itself
};

// Memory of one plan, for `nnx info` and benchmarks.
struct PlanStats {
  size_t arena_bytes = 0;      // the planned arena all activations share
  size_t unplanned_bytes = 0;  // the sum of all activations, as if none shared memory
  int64_t flops = 0;
};

class NNX_API Executor {
 public:
  explicit Executor(Model model, ExecutorOptions options = {});
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;

  // Runs the network. Inputs bind to network inputs in order (NCHW; a CHW input gets a batch
  // dimension of 1, and the outputs keep it). Outputs are new tensors owned by the caller.
  std::vector<Tensor> run(std::span<const Tensor> inputs);
  std::vector<Tensor> operator()(std::span<const Tensor> inputs) { return run(inputs); }
  std::vector<Tensor> operator()(const Tensor& input) { return run(std::span(&input, 1)); }
  std::vector<Tensor> operator()(std::initializer_list<Tensor> inputs) {
    return run(std::span(inputs.begin(), inputs.size()));
  }

  // The same into `outputs`, one per network output in order: an output that is a contiguous
  // tensor on the CPU with the output's shape and dtype (float32) is written in place, any other
  // is replaced by a new tensor. Passed the tensors of its previous call again, a CPU run makes
  // no heap allocation (tests/alloc). An output must not share memory with an input.
  void run(std::span<const Tensor> inputs, std::span<Tensor> outputs);

  // CUDA: queues the run on this Executor's stream and returns at once; the outputs are device
  // tensors whose values are there after synchronize() (or the next run()). The inputs may be
  // changed or freed right away (host inputs are copied before this returns; device inputs are
  // kept from reuse until the run has read them). On the CPU the same as run().
  std::vector<Tensor> run_async(std::span<const Tensor> inputs);
  // Waits for the runs queued by run_async. Throws Error(unsupported) when a host task of a
  // replayed graph (an op's CPU body) threw: those runs' outputs are not valid.
  void synchronize();

  const Model& model() const;
  // The plan for the last run's shapes (empty before the first run).
  PlanStats plan_stats() const;
  // Per-node times of the last run, in the order the nodes ran (empty unless profiling).
  const std::vector<NodeTiming>& last_profile() const;
  // "off", "not captured yet", "captured: 1 graph of 24 nodes", "captured: 1 graph of 17
  // nodes, 1 of them on the host as host tasks inside it (node 16 ...)", "captured: 2 graphs of
  // 80 nodes, 1 on the host between them (node 81 ...)", or "refused: <why>" (a capture failed;
  // this plan runs kernel by kernel).
  const std::string& cuda_graph_state() const;
  // How many parts the last run's batch ran as (ExecutorOptions::batch_split); 0: whole.
  int64_t batch_parts() const;

 private:
  void run_into(std::span<const Tensor> inputs, std::span<Tensor> outputs);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nnx
