// The training loop of `nnx train`, shared with `nnx prune --finetune`: its configuration
// from the command line, and one run over epochs with checkpoints and history.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "nnx/comm.h"
#include "nnx/data.h"
#include "nnx/loss.h"
#include "nnx/optim.h"
#include "nnx/train.h"
#include "tools/nnx/cli.h"

namespace nnx::cli {

struct TrainConfig {
  std::string train_x, train_y, val_x, val_y;  // val_*: empty without --val
  LossOptions loss;
  bool classification = false;  // cross_entropy: accuracy is reported and picks best.*
  std::string optimizer;
  OptimizerOptions opt;
  ScheduleOptions schedule;
  int epochs = 0;
  int64_t batch = 0;
  int64_t accumulate = 1;
  double clip = 0;  // --clip-grad-norm; 0: none
  uint64_t seed = 0;
  bool shuffle = true;
  bool progress = false;
  int threads = 0;
  std::string out_dir;
  std::optional<std::string> resume;
  // Data-parallel runs (mpirun): --batch is per rank; BatchNorm statistics over all ranks with
  // --sync-bn; gradient buckets of NNX_BUCKET_MB (default 25) MiB; collectives fail after
  // NNX_COMM_TIMEOUT (default 300) seconds.
  bool sync_bn = false;
  size_t bucket_bytes = size_t(25) << 20;
  double comm_timeout = 300;
};

// Reads the training flags (--train, --val, --loss, --optimizer, --lr, ... --out) of `args`;
// throws UsageError for a missing or bad one.
TrainConfig parse_train_config(const Args& args);

// Data sets of the configuration, checked against the loss (class labels for cross_entropy).
Dataset load_training_data(const TrainConfig& config, Dataset* val);

struct TrainHooks {
  // After every optimizer step (e.g. pruning masks put back to zero).
  std::function<void(Trainer&)> after_step;
};

// Trains from the config's epoch (after --resume's, else 0) to config.epochs, writing
// checkpoints, history.csv and history.png into config.out_dir after every epoch. Returns the
// best score (accuracy for classification, else minus the loss).
// With a communicator of N > 1 ranks (every rank calls this with the same data and config):
// weights and buffers start from rank 0's; step t's global batch is the N*B samples a
// one-process run with batch N*B takes at step t, rank r taking positions r, r+N, ...;
// gradients and the loss are sums over ranks divided by the global sample count; validation
// is sharded; only rank 0 prints and writes files.
double run_training(Trainer& trainer, const Dataset& train, const Dataset& val,
                    const TrainConfig& config, const TrainHooks& hooks = {},
                    Communicator* comm = nullptr);

}  // namespace nnx::cli
