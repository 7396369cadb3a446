// Optimizers with PyTorch 1.13's update rules (torch.optim.SGD, Adam, AdamW, single-tensor
// path), gradient-norm clipping, learning-rate schedules, and their state in a .pth file laid
// out as optimizer.state_dict() (torch.load reads it; Optimizer.load_state_dict accepts it).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nnx/export.h"
#include "nnx/tensor.h"
#include "nnx/thread_pool.h"
#include "nnx/train.h"

namespace nnx {

class LrSchedule;

enum class OptimizerKind { sgd, adam, adamw };

// "sgd", "adam", "adamw"; Error(usage) otherwise.
NNX_API OptimizerKind parse_optimizer_name(std::string_view name);
NNX_API const char* optimizer_name(OptimizerKind kind);

struct OptimizerOptions {
  double lr = 1e-3;
  std::optional<double> weight_decay{};  // unset: 0, or 0.01 for AdamW (PyTorch's defaults)
  bool maximize = false;
  // SGD
  double momentum = 0;
  double dampening = 0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0
  // Adam, AdamW
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool amsgrad = false;
};

// Updates parameters in place from their gradients. The state of params[i] belongs to index i:
// pass the same parameters in the same order to every step(). Parameters whose grad is
// undefined are skipped and keep no state, as in PyTorch. Values and grads: contiguous f32 on
// the CPU or, both, on one CUDA device (a Trainer on a GPU), where the state lives too.
class NNX_API Optimizer {
 public:
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update. `pool` splits each parameter's elements among threads.
  void step(std::span<Parameter> params, ThreadPool* pool = nullptr);

  double lr() const { return options_.lr; }
  void set_lr(double lr);
  double weight_decay() const { return *options_.weight_decay; }
  OptimizerKind kind() const { return kind_; }
  const char* name() const { return optimizer_name(kind_); }
  const OptimizerOptions& options() const { return options_; }
  int64_t steps() const { return steps_; }  // step() calls so far
  // Forgets the per-parameter state (momentum buffers, moments, step counts).
  void reset_state();

  // Writes {"state", "param_groups"} as PyTorch's optimizer.state_dict() has them, plus an
  // "nnx" entry (optimizer name, step() count, parameter names and shapes, the schedule's
  // state) that PyTorch ignores; atomically (temporary file, then rename). `params` are the
  // parameters step() updates.
  void save_state(const std::string& path, std::span<const Parameter> params,
                  const LrSchedule* schedule = nullptr) const;
  // Reads such a file (or one torch.save(optimizer.state_dict()) wrote for a single parameter
  // group): hyper-parameters, per-parameter state and, when given and saved, the schedule's
  // state. Error(format) when the file holds another optimizer's state, Error(shape) naming
  // the parameter when counts or shapes differ; nothing changes on error.
  void load_state(const std::string& path, std::span<const Parameter> params,
                  LrSchedule* schedule = nullptr);

  // Per-parameter state, as PyTorch names it.
  struct ParamState {
    bool present = false;         // created by the first step with a gradient
    int64_t step = 0;             // Adam's "step": updates of this parameter
    std::vector<Tensor> buffers;  // named by buffer_names(); undefined: None
    bool fresh = false;           // SGD: the momentum buffer starts from this step
  };
  const std::vector<ParamState>& state() const { return state_; }
  // The names of ParamState::buffers: momentum_buffer (SGD); exp_avg, exp_avg_sq and, with
  // amsgrad, max_exp_avg_sq (Adam, AdamW).
  std::vector<std::string> buffer_names() const;

 protected:
  Optimizer(OptimizerKind kind, OptimizerOptions options);
  // Updates elements [begin, end) of one parameter (contiguous floats); called per thread
  // chunk after prepare() and after state.step was incremented.
  virtual void update(float* value, const float* grad, ParamState& state, int64_t begin,
                      int64_t end) const = 0;
  // Called once per parameter before update(): creates the buffers on the first step (on the
  // parameter's device).
  virtual void prepare(ParamState& state, const Tensor& value) const = 0;
  // update() for a parameter on a CUDA device, after prepare() and the step increment, queued
  // on `stream`; Adam reads the step from device_step when it is not null.
  void update_on_device(Parameter& param, ParamState& state, void* stream,
                        const int64_t* device_step) const;

  OptimizerKind kind_;
  OptimizerOptions options_;
  std::vector<ParamState> state_;
  int64_t steps_ = 0;
  // Changed by set_lr, reset_state and load_state: a captured step (TrainStep) is stale then.
  uint64_t version_ = 0;

 private:
  friend class TrainStep;
  // step() with the CUDA updates queued on `stream`, Adam's step of parameter k read from
  // device_steps[k] (null: known on the host).
  void step_impl(std::span<Parameter> params, ThreadPool* pool, void* stream,
                 const int64_t* device_steps);
};

class NNX_API SGD : public Optimizer {
 public:
  explicit SGD(OptimizerOptions options);

 protected:
  void update(float* value, const float* grad, ParamState& state, int64_t begin,
              int64_t end) const override;
  void prepare(ParamState& state, const Tensor& value) const override;
};

class NNX_API Adam : public Optimizer {
 public:
  explicit Adam(OptimizerOptions options);

 protected:
  Adam(OptimizerKind kind, OptimizerOptions options);
  void update(float* value, const float* grad, ParamState& state, int64_t begin,
              int64_t end) const override;
  void prepare(ParamState& state, const Tensor& value) const override;
};

// Adam with decoupled weight decay: value *= 1 - lr * weight_decay before the Adam update.
class NNX_API AdamW : public Adam {
 public:
  explicit AdamW(OptimizerOptions options);
};

NNX_API std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, OptimizerOptions options);
NNX_API std::unique_ptr<Optimizer> make_optimizer(std::string_view name, OptimizerOptions options);

// torch.nn.utils.clip_grad_norm_: the norm of all defined grads taken together (norm_type p,
// or INFINITY for the largest magnitude); when it exceeds max_norm every grad is scaled by
// max_norm / (norm + 1e-6). Returns the norm before clipping.
NNX_API double clip_grad_norm(std::span<Parameter> params, double max_norm, double norm_type = 2.0,
                              ThreadPool* pool = nullptr);

// ---- learning-rate schedules, applied once per epoch ----

enum class ScheduleKind { constant, step, cosine, loss };

// "constant" (or "none"), "step", "cosine", "loss"; Error(usage) otherwise.
NNX_API ScheduleKind parse_schedule_name(std::string_view name);
NNX_API const char* schedule_name(ScheduleKind kind);

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::constant;
  double lr = 1e-3;          // the first epoch's lr; cosine's lr_max
  double lr_min = 0;         // cosine's floor; the loss rule's lower clamp
  double lr_max = INFINITY;  // the loss rule's upper clamp
  int step_size = 30;        // step: lr * gamma^floor(epoch / step_size)
  double gamma = 0.1;
  int total_epochs = 0;  // cosine's T: lr_min + 0.5 (lr - lr_min)(1 + cos(pi t / T))
};

// step and cosine depend on the epoch only; the loss rule, after each epoch, multiplies the lr
// by 2 when the epoch's loss is below the previous epoch's and divides it by 4 otherwise (NaN
// included), clamped to [lr_min, lr_max]; the first epoch only records its loss.
class NNX_API LrSchedule {
 public:
  explicit LrSchedule(ScheduleOptions options);

  // The lr of 0-based `epoch`: closed form for constant, step and cosine; the loss rule
  // depends on history and gives the current lr().
  double lr_for_epoch(int epoch) const;
  // Ends the current epoch with its loss (training or validation: the caller's choice) and
  // returns the next epoch's lr.
  double on_epoch_end(double loss);
  double lr() const { return lr_; }                // the current epoch's lr
  int epoch() const { return epoch_; }             // epochs ended so far
  double last_loss() const { return last_loss_; }  // NaN before the first epoch ends
  const ScheduleOptions& options() const { return options_; }
  // Sets the optimizer's lr to lr().
  void apply(Optimizer& optimizer) const { optimizer.set_lr(lr_); }

  // Restores what save_state wrote (used by Optimizer::load_state).
  void restore(int epoch, double lr, double last_loss);

 private:
  ScheduleOptions options_;
  int epoch_ = 0;
  double lr_;
  double last_loss_ = NAN;
};

}  // namespace nnx
