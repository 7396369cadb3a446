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

#include "nnx/loss.h"
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

class Optimizer;
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
  // zero_grad() then backward(), without writing the zeros first: each Parameter::grad becomes
  // this backward's gradient (zeros where none reaches it); the grads a backward writes whole
  // (all on the CPU) are never cleared (47 MB of memory writes a step for ResNet-18).
  void backward_replacing(std::span<const Tensor> grad_outputs);
  void backward_replacing(const Tensor& grad_output) {
    backward_replacing(std::span(&grad_output, 1));
  }

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
  friend class TrainStep;
  // The CUDA stream the trainer queues its work on (null: the legacy one); returns the previous.
  void* exchange_stream(void* stream);
  // Why a step of this trainer cannot be captured as a CUDA graph as it stands (profiling, a
  // stat reducer or a grad-ready hook set), or empty.
  std::string capture_obstacle() const;
  RandomEngine& generator();
  ThreadPool* thread_pool();

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct TrainStepOptions {
  LossOptions loss{};  // the loss of every output against its target
  // On a CUDA device: capture the whole step (zero_grad, forward, loss, backward, optimizer
  // update) as CUDA graphs (up to backward, then the update) after two op-by-op runs with the same
  // shapes and optimizer state (the first creates that state), then replay it, while the shapes,
  // the training mode, the optimizer's settings and the parameters' and optimizer state's memory
  // stay the same (anything else: captured again). A step that cannot be captured (a node without a
  // CUDA body, random draws such as Dropout's, a hook set on the trainer) runs op by op, as with
  // false; cuda_graph_state() says why. Ignored on the CPU.
  bool cuda_graph = true;
};

// One training step as a unit, for loops that do nothing between forward and update: on a CUDA
// device on a stream of its own, so that it can be captured and replayed as CUDA graphs, which
// takes the host out of the step. The numbers are those of the same calls made one by one
// (Trainer::zero_grad, forward, compute_loss, backward, Optimizer::step); Adam's bias correction
// is computed on the device in a replayed step.
class NNX_API TrainStep {
 public:
  // Steps `trainer` with `optimizer`, which must outlive this and be given the trainer's
  // parameters() at every step (they are here).
  TrainStep(Trainer& trainer, Optimizer& optimizer, TrainStepOptions options = {});
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // One step: zero_grad(), forward(inputs), the loss of output k against targets[k] (as
  // compute_loss takes them, on the host or the trainer's device; undefined: no loss for that
  // output), backward(), optimizer.step(). Returns each output's loss (0 without a target). Class
  // indices out of range are an Error(usage) before anything changes. Waits for the device.
  std::vector<double> run(std::span<const Tensor> inputs, std::span<const Tensor> targets);
  double run(const Tensor& input, const Tensor& target) {
    return run(std::span(&input, 1), std::span(&target, 1))[0];
  }
  // The last step's outputs, on the trainer's device: valid until the next run.
  const std::vector<Tensor>& outputs() const;
  // Whether the steps are replayed from a CUDA graph now, or why not, with the steps replayed
  // and the captures made so far: "captured: the whole step as CUDA graphs; 37 step(s)
  // replayed, 2 capture(s)", "op by op: <why>; ...", "off (op by op)", "CPU: no CUDA graphs".
  std::string cuda_graph_state() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nnx
