// The op interface: one class per operation declares its arguments (parsed from a constructor
// string with PyTorch's defaults), channel and shape inference, parameters, and forward and
// backward bodies per device. Built-in ops live in ops/, their kernels in kernels/cpu and
// kernels/cuda; applications add their own through nnx::register_op (registry.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "nnx/tensor.h"
#include "nnx/value.h"

namespace nnx {

class ThreadPool;

// What an op runs with: the device, and for the CPU a pool to split loops over.
using RandomEngine = std::mt19937_64;

// Sums values over the processes of a data-parallel run (nnx/comm.h implements it), so that ops
// need no communication library: BatchNorm with --sync-bn sums its per-channel statistics.
class StatReducer {
 public:
  virtual ~StatReducer() = default;
  // Replaces every value with its sum over all processes; every process calls it in the same
  // order with the same count.
  virtual void sum(std::span<double> values) = 0;
};

struct ExecContext {
  Device device = Device::cpu();
  ThreadPool* pool = nullptr;  // may be null: run single-threaded
  void* stream = nullptr;      // cudaStream_t on CUDA
  // Training (set by nnx::Trainer only). In a training forward BatchNorm normalises with the
  // batch's statistics and updates its running statistics in place, Dropout and
  // StochasticDepth drop with `rng`. `saved` is the node's slot for what its forward keeps for
  // its backward (a mask, batch statistics): the training forward appends, the backward of the
  // same node reads it in the same order. Null outside training.
  bool training = false;
  RandomEngine* rng = nullptr;
  std::vector<Tensor>* saved = nullptr;
  // Data-parallel training with synchronised BatchNorm: batch statistics (and their backward
  // sums) are summed over all processes. Null: this process's batch alone.
  StatReducer* reducer = nullptr;
  // CUDA: convolutions and matrix products may use TF32 tensor cores (ExecutorOptions::precision).
  bool allow_tf32 = false;
  // CUDA, precision fp16 or bf16: convolutions read and write this format (DType::f16 or
  // DType::bf16) with fp32 accumulation; activations between ops stay fp32. f32: full precision.
  DType conv_dtype = DType::f32;
};

// Which forward tensors an op's backward reads; the Trainer frees the others as soon as the
// forward no longer needs them. Undefined tensors are passed for what is not needed.
struct BackwardNeeds {
  bool inputs = true;
  bool outputs = true;
};

struct TensorSpec {
  Shape shape;
  DType dtype = DType::f32;
  bool operator==(const TensorSpec&) const = default;
};

// A named tensor of an op's state dict, in PyTorch's order and naming ("weight", "bias",
// "running_mean", "num_batches_tracked", "pruner_weight", "t").
struct Param {
  std::string name;
  Tensor value;
  bool trainable = true;  // false for buffers (running stats, counters)
};

// Channel counts at load time: -1 means "not known without spatial sizes" (e.g. after Flatten).
inline constexpr int64_t kUnknownChannels = -1;

class NNX_API Op {
 public:
  virtual ~Op() = default;

  // Canonical class name ("Conv2d") and the Python module the original package records for it
  // ("torch.nn.modules.conv", "nn_executor.models"). User ops return their qualified name.
  virtual std::string type() const = 0;
  virtual std::string python_module() const = 0;
  // PyTorch's repr of the module: "Conv2d(3, 5, kernel_size=(3, 3), stride=(1, 1))".
  virtual std::string repr() const = 0;

  // Throws Error(shape) if the op cannot have this many inputs and outputs.
  virtual void check_arity(int num_inputs, int num_outputs) const;
  // Load-time channel check: given the channel counts arriving at each input (or
  // kUnknownChannels), returns each output's channel count; throws Error(shape) saying what was
  // expected and what was found when an input cannot be taken.
  virtual std::vector<int64_t> infer_channels(std::span<const int64_t> in_channels,
                                              int num_outputs) const;
  // Full output shapes for given input shapes; throws Error(shape) on a mismatch.
  virtual std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> inputs,
                                               int num_outputs) const = 0;

  // If output `out` is a view of input k (Identity, Flatten, Dropout in eval), returns k: the
  // executor does not allocate that output and forward sets it to a view.
  virtual std::optional<int> output_view_of(int /*out*/) const { return std::nullopt; }

  // If output 0 is the inputs laid one after another along a dimension (Cat), returns that
  // dimension for inputs of `rank` (0 <= dim < rank). Where nothing precedes it but sizes of 1
  // (Cat along the channels at batch 1), each piece is a contiguous block of the output: the
  // planner may have an input that only this op reads computed straight into its block, and
  // forward then leaves a piece it finds already in place.
  virtual std::optional<int> concat_dim(int /*rank*/) const { return std::nullopt; }

  // Inputs over whose memory the CPU forward may write output 0, for these input and output
  // specs, in order of preference: it reads each element of such an input only to write the
  // output's element at the same index (same shape and dtype). An Executor's plan on the CPU
  // puts the output there when nothing reads that input afterwards (one buffer fewer, and the
  // stores go to lines the reads just brought into cache); forward then finds the two tensors on
  // the same memory. None by default.
  virtual std::vector<int> in_place_inputs(std::span<const TensorSpec> /*inputs*/,
                                           const TensorSpec& /*output*/) const {
    return {};
  }

  // Whether, for these input specs, at inference every output's sample n (index n of dimension
  // 0, the batch) comes from the inputs' samples n alone, and the op computes it the same way
  // whatever the batch's size (no statistics over the batch, no mixing across dimension 0). An
  // Executor on the CPU may then run parts of a batch on threads of their own, each through the
  // whole network (it also checks that every value's first dimension is the batch at two batch
  // sizes). False by default: a user op that is separable says so.
  virtual bool batch_separable(std::span<const TensorSpec> /*inputs*/) const { return false; }

  // Forward with outputs already allocated (contiguous, shapes from infer_shapes), except
  // view outputs, which forward assigns.
  void forward(const ExecContext& ctx, std::span<const Tensor> inputs,
               std::span<Tensor> outputs) const;
  // Backward: given the forward's inputs and outputs (those backward_needs() names; the others
  // are undefined tensors) and the gradient of every output (always defined: zeros where
  // nothing flows back), writes
  //  - grad_inputs[i]: the gradient of input i, preallocated contiguous f32 with the input's
  //    shape, to be overwritten; undefined when input i needs no gradient;
  //  - grad_params[k]: the gradient of params()[k], preallocated with its shape, overwritten;
  //    undefined for buffers and frozen parameters (and grad_params may be empty when the op
  //    has no trainable parameter).
  // The Trainer sums what several consumers (or several nodes of one layer) contribute. With
  // ctx.training the forward ran in training mode and ctx.saved holds what it kept.
  void backward(const ExecContext& ctx, std::span<const Tensor> inputs,
                std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const;

  // What backward reads of the forward (default: inputs and outputs).
  virtual BackwardNeeds backward_needs() const { return {}; }

  // Multiply-adds x2 for one forward, for `nnx info`.
  virtual int64_t flops(std::span<const TensorSpec> /*inputs*/,
                        std::span<const TensorSpec> /*outputs*/) const {
    return 0;
  }

  // Parameters and buffers, as in PyTorch's state_dict().
  const std::vector<Param>& params() const { return params_; }
  const Param* find_param(std::string_view name) const;
  // Replaces a parameter's value; throws Error(shape) naming it if shape or dtype differ.
  // Ops whose behaviour depends on which key a file used (the legacy Pruner) override it.
  virtual void set_param(std::string_view name, const Tensor& value);
  // Moves every parameter and buffer to `device` (a Trainer on a GPU keeps them there, where its
  // optimizer updates them). The op then runs on that device only; an op body without a CUDA
  // form runs on host copies (see forward_cuda). set_param keeps a parameter on its device.
  void place_params(Device device);
  // Initialises parameters as PyTorch's reset_parameters() does (same distributions).
  virtual void init_params(RandomEngine& /*rng*/) {}
  // State dict keys this op also accepts on load, mapped to its own (legacy spellings).
  virtual std::string canonical_param_name(std::string_view key) const { return std::string(key); }

 protected:
  virtual void forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<Tensor> outputs) const = 0;
  virtual void forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const;
  virtual void backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                            std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const;
  virtual void backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                             std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                             std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const;

  // The CPU bodies run for a CUDA call, for ops (or arguments, or training) without a CUDA form:
  // inputs, saved state and output gradients copied to the host, parameters held on a device
  // swapped for host copies for the call (buffers a training forward changes, such as running
  // statistics, copied back), results copied to the device. Ordered on the current stream.
  // Not to be called concurrently on one op whose parameters are on a device.
  void forward_on_host(const ExecContext& ctx, std::span<const Tensor> inputs,
                       std::span<Tensor> outputs) const;
  void backward_on_host(const ExecContext& ctx, std::span<const Tensor> inputs,
                        std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                        std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const;

  // Declares a parameter, zero-filled, with its expected shape.
  void add_param(std::string name, const Shape& shape, bool trainable = true,
                 DType dtype = DType::f32);
  Tensor& mutable_param(std::string_view name);
  void rename_param(std::string_view from, std::string to);

 private:
  std::vector<Param> params_;
};

// Helpers shared by op implementations.
namespace op_util {
// Throws Error(shape) "expected N inputs, found M" unless num_inputs is in [lo, hi].
NNX_API void expect_inputs(int num_inputs, int lo, int hi);
NNX_API void expect_outputs(int num_outputs, int lo, int hi);
// "expected 64 input channels, found 128" unless found is unknown or equal.
NNX_API void expect_channels(int64_t expected, int64_t found,
                             std::string_view what = "input channels");
// Spatial (NCHW) input: rank 4; a rank-3 CHW input is accepted by the executor, not by ops.
NNX_API void expect_rank(const TensorSpec& spec, int rank, std::string_view what = "input");
// Python-like tuple repr of ints: "(3, 3)".
NNX_API std::string tuple_repr(std::span<const int64_t> values);
// PyTorch's float repr inside module reprs: 1e-05, 0.1, 0.01, 1.0
NNX_API std::string float_repr(double value);
}  // namespace op_util

}  // namespace nnx
