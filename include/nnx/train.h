// Training a model: forward in training mode, handwritten backward passes run in reverse
// schedule order, gradients summed over consumers and over the nodes of a shared layer.
// Losses, optimizers and learning-rate schedules are in nnx/loss.h and nnx/optim.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nnx/model.h"
#include "nnx/op.h"
#include "nnx/tensor.h"

namespace nnx {

// One trainable tensor of the model being trained.
struct Parameter {
  std::string name;  // the flat state-dict key: "<layer index>.<param>", e.g. "3.weight"
  int layer = 0;     // 0-based index in the description's layer list
  Tensor value;      // the trained model's own tensor: the optimizer updates it in place
  Tensor grad;       // gradient accumulated by backward() since the last zero_grad()
};

struct TrainerOptions {
  int threads = 0;    // 0: all hardware threads
  uint64_t seed = 0;  // Dropout and StochasticDepth draw from a generator seeded with it
  // Where the trained copy's parameters, gradients and activations live. On a CUDA device the
  // ops run their CUDA bodies (on the legacy default stream), the parameters stay on the device
  // (Parameter::value and grad are device tensors; an optimizer updates them there), and ops
  // without a CUDA training body run their CPU one on host copies. Error(device) if there is no
  // such device.
  Device device = Device::cpu();
};

// Memory of training, for reports and benchmarks.
struct TrainMemory {
  size_t parameter_bytes = 0;        // weights and buffers
  size_t gradient_bytes = 0;         // Parameter::grad
  size_t peak_activation_bytes = 0;  // forward values, saved state and gradients in flight, at
                                     // their peak since reset_peak()
};

// Time spent in one node of the graph since profiling was turned on (Trainer::set_profiling).
struct NodeProfile {
  std::string node;  // the graph's description of it: index, layer, constructor
  double forward_ms = 0, backward_ms = 0;
  int64_t calls = 0;  // forwards timed
};

class NNX_API Trainer {
 public:
  // Trains a copy of `model` (Model::clone): the model passed in, and Executors running it, are
  // never changed. Starts in training mode.
  explicit Trainer(const Model& model, TrainerOptions options = {});
  ~Trainer();
  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;

  // Training mode (BatchNorm batch statistics, Dropout) or evaluation mode.
  void set_training(bool on);
  bool training() const;
  // Restarts the generator Dropout and StochasticDepth draw from (nnx train reseeds it every
  // epoch, so a resumed run draws what an uninterrupted one would).
  void set_seed(uint64_t seed);

  // Runs the network (inputs as Executor::run takes them, on the host or on the trainer's
  // device) and keeps what backward needs. The outputs are the trainer's own tensors, on its
  // device: read them, do not write them; they stay valid until the next forward.
  std::vector<Tensor> forward(std::span<const Tensor> inputs);
  std::vector<Tensor> forward(const Tensor& input) { return forward(std::span(&input, 1)); }
  // Back-propagates the gradients of the last forward's outputs (one per output, same shapes;
  // an undefined tensor counts as zeros; host or device) and adds the result into every
  // Parameter::grad. Frees
  // what the forward kept as soon as nothing left needs it. Needs a forward since the last
  // backward.
  void backward(std::span<const Tensor> grad_outputs);
  void backward(const Tensor& grad_output) { backward(std::span(&grad_output, 1)); }
  void zero_grad();

  // The trainable parameters, in layer order, then each layer's parameter order.
  std::vector<Parameter>& parameters();
  // The model being trained: its weights are the parameters' current values. Save it with
  // Model::save; run it with an Executor only while no training step runs.
  const Model& model() const;
  Device device() const;

  TrainMemory memory() const;
  void reset_peak();

  // Per-node timing of forward and backward (a clock read around each node; off by default).
  // Turning it on clears what was gathered; profile() lists the nodes in execution order.
  void set_profiling(bool on);
  std::vector<NodeProfile> profile() const;

  // Data-parallel training (nnx/comm.h). `reducer` (null: none) is handed to the ops in
  // training forwards and backwards (BatchNorm sums its statistics with it). `on_grad_ready`
  // (empty: none) is called during backward with the index into parameters() of each parameter
  // whose gradient is final for this backward (after the last node of its layer), so that its
  // all-reduce can start while the rest of backward runs. Parameters of layers that backward
  // does not reach are not reported.
  void set_stat_reducer(StatReducer* reducer);
  void set_grad_ready_hook(std::function<void(int)> on_grad_ready);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nnx
