// nnx train: mini-batch training of a description on .npy / IDX arrays, with validation,
// checkpoints (two-file form + optimizer state), resumption, history.csv and history.png.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>

#include "graph/graph.h"
#include "importer/json.h"
#include "nnx/cuda.h"
#include "nnx/data.h"
#include "nnx/loss.h"
#include "nnx/optim.h"
#include "nnx/train.h"
#include "tools/nnx/cli.h"
#include "tools/nnx/plot.h"
#include "tools/nnx/train_loop.h"
#ifdef NNX_WITH_MPI
#include "train/dist/comm_mpi.h"
#endif

namespace nnx::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct EpochRow {
  int epoch = 0;  // 1-based
  double lr = 0;
  double train_loss = NAN, train_acc = NAN, val_loss = NAN, val_acc = NAN;
  double seconds = 0;
};

std::string fmt(double v, int precision = 6) {
  if (std::isnan(v)) return "";
  std::ostringstream out;
  out.precision(precision);
  out << v;
  return out.str();
}

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  auto s = int64_t(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

// Writes `text` to `path` through a temporary file renamed into place.
void write_file_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      fail(ErrorKind::io, path, ": cannot write");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail(ErrorKind::io, path, ": cannot write (", ec.message(), ")");
  }
}

std::string history_csv(const std::vector<EpochRow>& rows) {
  std::string out = "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n";
  for (const EpochRow& r : rows)
    out += std::to_string(r.epoch) + "," + fmt(r.lr, 8) + "," + fmt(r.train_loss, 8) + "," +
           fmt(r.train_acc, 6) + "," + fmt(r.val_loss, 8) + "," + fmt(r.val_acc, 6) + "," +
           fmt(r.seconds, 4) + "\n";
  return out;
}

std::vector<EpochRow> parse_history(const std::string& path) {
  std::vector<EpochRow> rows;
  std::ifstream in(path);
  NNX_CHECK(in, ErrorKind::io, path, ": cannot open (needed to resume)");
  std::string line;
  std::getline(in, line);  // header
  auto num = [](const std::string& s) { return s.empty() ? NAN : std::stod(s); };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) f.push_back(cell);
    while (f.size() < 7) f.emplace_back();
    try {
      rows.push_back(
          {std::stoi(f[0]), num(f[1]), num(f[2]), num(f[3]), num(f[4]), num(f[5]), num(f[6])});
    } catch (const std::exception&) {
      fail(ErrorKind::format, path, ": bad row '", line, "'");
    }
  }
  return rows;
}

void write_plot(const std::string& path, const std::vector<EpochRow>& rows, bool classification) {
  auto column = [&](double EpochRow::*field) {
    std::vector<double> v;
    for (const EpochRow& r : rows) v.push_back(r.*field);
    return v;
  };
  auto has = [](const std::vector<double>& v) {
    return std::any_of(v.begin(), v.end(), [](double x) { return !std::isnan(x); });
  };
  std::vector<Panel> panels;
  Panel loss{"loss", {{"train", column(&EpochRow::train_loss), 0x1f77b4}}};
  if (auto v = column(&EpochRow::val_loss); has(v)) loss.series.push_back({"val", v, 0xff7f0e});
  panels.push_back(loss);
  if (classification) {
    Panel acc{"accuracy", {{"train", column(&EpochRow::train_acc), 0x1f77b4}}};
    if (auto v = column(&EpochRow::val_acc); has(v)) acc.series.push_back({"val", v, 0xff7f0e});
    panels.push_back(acc);
  }
  write_chart_png(path, panels);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

// Targets for a loss: class labels stay int64 for cross_entropy; other losses take floats.
Tensor targets_for(LossKind kind, const Tensor& y) {
  if (kind == LossKind::cross_entropy) return y;
  return y.to(DType::f32).contiguous();
}

struct Metrics {
  double loss_sum = 0;  // loss x samples
  int64_t samples = 0, correct = 0, counted = 0;
  double loss() const { return samples ? loss_sum / double(samples) : NAN; }
  double acc() const { return counted ? double(correct) / double(counted) : NAN; }
};

class Progress {
 public:
  Progress(bool on, int epoch, int epochs, int64_t batches)
      : on_(on), epoch_(epoch), epochs_(epochs), batches_(batches), start_(Clock::now()) {}
  void update(int64_t batch, int64_t samples, double loss) {
    if (!on_) return;
    auto now = Clock::now();
    if (batch < batches_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? double(samples) / secs : 0;
    double eta = batch > 0 ? secs / double(batch) * double(batches_ - batch) : 0;
    const int width = 24;
    int filled = int(double(width) * double(batch) / double(std::max<int64_t>(batches_, 1)));
    std::string bar(size_t(filled), '#');
    bar.resize(width, '.');
    char line[256];
    std::snprintf(line, sizeof line,
                  "\repoch %d/%d [%s] %lld/%lld loss %.4f %.0f samples/s ETA %s   ", epoch_,
                  epochs_, bar.c_str(), (long long)batch, (long long)batches_, loss, rate,
                  clock_text(eta).c_str());
    std::cerr << line << std::flush;
  }
  void finish() {
    if (on_) std::cerr << "\r" << std::string(100, ' ') << "\r" << std::flush;
  }

 private:
  bool on_;
  int epoch_, epochs_;
  int64_t batches_;
  Clock::time_point start_, last_{};
};

// Sums the figures of every rank.
void reduce_metrics(Communicator& comm, Metrics& m) {
  if (comm.size() == 1) return;
  double sums[4] = {m.loss_sum, double(m.samples), double(m.correct), double(m.counted)};
  comm.all_reduce(sums, 4);
  m.loss_sum = sums[0];
  m.samples = int64_t(sums[1]);
  m.correct = int64_t(sums[2]);
  m.counted = int64_t(sums[3]);
}

// Rank `rank` of `ranks` evaluates samples rank, rank + ranks, ...; the figures are summed.
Metrics evaluate(Trainer& trainer, const Dataset& data, int64_t batch, const LossOptions& loss,
                 bool classification, Communicator& comm) {
  Metrics m;
  bool was_training = trainer.training();
  trainer.set_training(false);
  std::vector<int64_t> shard;
  for (int64_t i = comm.rank(); i < data.size(); i += comm.size()) shard.push_back(i);
  for (size_t begin = 0; begin < shard.size(); begin += size_t(batch)) {
    size_t end = std::min(shard.size(), begin + size_t(batch));
    std::span<const int64_t> index(shard.data() + begin, end - begin);
    Tensor x = gather_rows(data.x, index);
    Tensor y = targets_for(loss.kind, gather_rows(data.y, index));
    const Tensor prediction = trainer.forward(x)[0].to(Device::cpu());
    LossResult r = compute_loss(prediction, y, loss);
    m.loss_sum += r.value * double(end - begin);
    m.samples += int64_t(end - begin);
    if (classification) {
      m.correct += count_correct(prediction, y, loss.ignore_index);
      m.counted += count_labelled(y, loss.ignore_index);
    }
  }
  trainer.set_training(was_training);
  reduce_metrics(comm, m);
  return m;
}

// Copies rank 0's weights and buffers (running statistics, counters) to every rank.
void broadcast_state(Trainer& trainer, Communicator& comm) {
  if (comm.size() == 1) return;
  for (const Layer& layer : trainer.model().graph().layers) {
    if (!layer.op) continue;
    for (const Param& p : layer.op->params()) {
      NNX_CHECK(p.value.is_contiguous(), ErrorKind::usage, "parameter ", p.name,
                " is not contiguous");
      comm.broadcast(p.value.raw_data(), p.value.nbytes(), 0);
    }
  }
}

// --sync-bn on a rank without samples in a step: it runs one sample to take part in the
// BatchNorm reductions, contributing nothing to them.
class ZeroContribution final : public StatReducer {
 public:
  explicit ZeroContribution(Communicator& comm) : comm_(comm) {}
  void sum(std::span<double> values) override {
    std::fill(values.begin(), values.end(), 0.0);
    comm_.sum(values);
  }

 private:
  Communicator& comm_;
};

// NNX_DIST_FAULT=RANK:BATCH[:throw|hang] (for tests): rank RANK dies (SIGKILL), throws, or
// stops answering, at batch BATCH (1-based) of the first epoch it runs.
void maybe_inject_fault(int rank, int64_t batch) {
  const char* spec = std::getenv("NNX_DIST_FAULT");
  if (spec == nullptr) return;
  int fault_rank = -1;
  long long fault_batch = -1;
  char mode[16] = "kill";
  if (std::sscanf(spec, "%d:%lld:%15s", &fault_rank, &fault_batch, mode) < 2) return;
  if (fault_rank != rank || fault_batch != batch) return;
  if (std::string(mode) == "throw")
    fail(ErrorKind::device, "injected fault (NNX_DIST_FAULT) at batch ", batch);
  if (std::string(mode) == "hang")
    for (;;) ::pause();
  ::raise(SIGKILL);
}

// A bad flag value that a library parser refuses is a usage error (exit 2).
template <class F>
auto flag_value(F&& parse) {
  try {
    return parse();
  } catch (const Error& e) {
    throw UsageError(e.message());
  }
}

}  // namespace

TrainConfig parse_train_config(const Args& args) {
  auto required = [&](const char* flag) {
    auto v = args.value(flag);
    if (!v) throw UsageError(std::string(flag) + " is required");
    return *v;
  };
  TrainConfig c;
  std::vector<std::string> train_files = args.values("--train");
  if (train_files.size() != 2) throw UsageError("--train X.npy Y.npy is required (once)");
  c.train_x = train_files[0], c.train_y = train_files[1];
  std::vector<std::string> val_files = args.values("--val");
  if (!val_files.empty() && val_files.size() != 2)
    throw UsageError("--val takes X.npy Y.npy (once)");
  if (!val_files.empty()) c.val_x = val_files[0], c.val_y = val_files[1];
  c.loss.kind = flag_value([&] { return parse_loss_name(required("--loss")); });
  c.loss.label_smoothing = args.number("--label-smoothing", 0.0);
  c.classification = c.loss.kind == LossKind::cross_entropy;
  c.opt.lr = args.number("--lr", NAN);
  if (!args.value("--lr")) throw UsageError("--lr is required");
  if (!(c.opt.lr > 0)) throw UsageError("--lr must be positive");
  c.opt.momentum = args.number("--momentum", 0.0);
  c.opt.nesterov = args.has("--nesterov");
  if (args.value("--weight-decay")) c.opt.weight_decay = args.number("--weight-decay", 0.0);
  c.optimizer = required("--optimizer");
  flag_value([&] { return parse_optimizer_name(c.optimizer); });
  c.epochs = int(args.integer("--epochs", -1));
  if (c.epochs <= 0) throw UsageError("--epochs N (N >= 1) is required");
  c.batch = args.integer("--batch", 0);
  if (c.batch <= 0) throw UsageError("--batch N (N >= 1) is required");
  c.accumulate = std::max<int64_t>(1, args.integer("--accumulate", 1));
  c.clip = args.number("--clip-grad-norm", 0.0);
  c.seed = uint64_t(args.integer("--seed", 0));
  c.shuffle = !args.has("--no-shuffle");
  c.out_dir = required("--out");
  ScheduleOptions& sched = c.schedule;
  sched.kind = flag_value(
      [&] { return parse_schedule_name(args.value("--schedule").value_or("constant")); });
  sched.lr = c.opt.lr;
  bool loss_rule = sched.kind == ScheduleKind::loss;
  sched.lr_min = args.number("--lr-min", loss_rule ? c.opt.lr / 1024 : 0.0);
  sched.lr_max = args.number("--lr-max", loss_rule ? c.opt.lr * 16 : INFINITY);
  sched.step_size = int(args.integer("--step-size", std::max(1, c.epochs / 3)));
  sched.gamma = args.number("--gamma", 0.1);
  sched.total_epochs = c.epochs;
  c.progress = args.has("--progress") || ::isatty(2);
  c.threads = int(args.integer("--threads", 0));
  c.resume = args.value("--resume");
  return c;
}

Dataset load_training_data(const TrainConfig& c, Dataset* val) {
  Dataset train = load_dataset(c.train_x, c.train_y);
  if (val && !c.val_x.empty()) *val = load_dataset(c.val_x, c.val_y);
  if (c.classification)
    NNX_CHECK(train.y.dtype() == DType::i64, ErrorKind::format, c.train_y,
              ": cross_entropy needs integer class labels, found ", dtype_name(train.y.dtype()));
  NNX_CHECK(train.size() > 0, ErrorKind::shape, c.train_x, ": no samples");
  return train;
}

double run_training(Trainer& trainer, const Dataset& train, const Dataset& val,
                    const TrainConfig& c, const TrainHooks& hooks, Communicator* comm_in) {
  LocalCommunicator local;
  Communicator& comm = comm_in != nullptr ? *comm_in : local;
  const int rank = comm.rank(), ranks = comm.size();
  const bool lead = rank == 0;  // prints and writes files
  const LossOptions& loss = c.loss;
  const bool classification = c.classification;
  const int epochs = c.epochs;
  const int64_t batch = c.batch;
  const uint64_t seed = c.seed;
  const std::string& out_dir = c.out_dir;
  std::unique_ptr<Optimizer> optimizer = make_optimizer(c.optimizer, c.opt);
  LrSchedule schedule(c.schedule);
  std::vector<EpochRow> history;
  double best = NAN;
  int start_epoch = 0;
  if (lead) fs::create_directories(out_dir);
  if (c.resume) {
    fs::path dir(*c.resume);
    optimizer->load_state((dir / "last.optim.pth").string(), trainer.parameters(), &schedule);
    history = parse_history((dir / "history.csv").string());
    start_epoch = int(history.size());
    for (const EpochRow& r : history) {
      double score = classification ? (std::isnan(r.val_acc) ? r.train_acc : r.val_acc)
                                    : -(std::isnan(r.val_loss) ? r.train_loss : r.val_loss);
      if (std::isnan(best) || score > best) best = score;
    }
    if (lead)
      std::cerr << "nnx: resuming after epoch " << start_epoch << " from " << *c.resume << "\n";
  }
  schedule.apply(*optimizer);

  auto& params = trainer.parameters();
  // One step takes `global` samples: `batch` per rank.
  const int64_t global = batch * ranks;
  int64_t batches = (train.size() + global - 1) / global;
  broadcast_state(trainer, comm);
  std::unique_ptr<GradientBuckets> buckets;
  if (ranks > 1) buckets = std::make_unique<GradientBuckets>(comm, params, c.bucket_bytes);
  ZeroContribution no_samples(comm);
  std::vector<int64_t> local_index;
  std::mt19937_64 order_rng;
  std::vector<int64_t> order(size_t(train.size()));
  ThreadPool pool(c.threads > 0 ? c.threads : ThreadPool::hardware_threads());
  // One process on a GPU, a step per batch, no clipping: each step as one unit (TrainStep), which
  // replays it as a CUDA graph where the network allows (the loss computed on the device).
  std::unique_ptr<TrainStep> fused;
  if (ranks == 1 && c.accumulate == 1 && c.clip <= 0 && trainer.device().is_cuda())
    fused = std::make_unique<TrainStep>(trainer, *optimizer, TrainStepOptions{.loss = loss});
  for (int epoch = start_epoch; epoch < epochs; ++epoch) {
    auto epoch_start = Clock::now();
    std::iota(order.begin(), order.end(), 0);
    if (c.shuffle) {
      order_rng.seed(seed * 1000003u + uint64_t(epoch));  // resumable: depends on the epoch only
      std::shuffle(order.begin(), order.end(), order_rng);
    }
    trainer.set_training(true);
    // Rank 0 draws what a one-process run draws; other ranks their own Dropout masks.
    trainer.set_seed(seed * 1000003u + 7919u * uint64_t(epoch) + 1u +
                     uint64_t(rank) * 0x9E3779B97F4A7C15u);
    trainer.zero_grad();
    Metrics m;
    Progress bar(c.progress && lead, epoch + 1, epochs, batches);
    for (int64_t b = 0; b < batches; ++b) {
      if (epoch == start_epoch) maybe_inject_fault(rank, b + 1);
      int64_t begin = b * global, end = std::min(train.size(), begin + global);
      // Positions rank, rank + ranks, ... of the global batch.
      local_index.clear();
      for (int64_t i = begin + rank; i < end; i += ranks) local_index.push_back(order[size_t(i)]);
      const int64_t count = int64_t(local_index.size());
      const bool step_now = (b + 1) % c.accumulate == 0 || b + 1 == batches;
      trainer.set_grad_ready_hook(step_now && buckets
                                      ? std::function<void(int)>([&](int k) { buckets->ready(k); })
                                      : nullptr);
      // A rank without samples (short last batch) skips the step's compute; with --sync-bn it
      // runs one sample that adds nothing, to take part in BatchNorm's reductions.
      const bool compute = count > 0 || c.sync_bn;
      if (count == 0 && c.sync_bn) local_index.push_back(order[size_t(begin)]);
      trainer.set_stat_reducer(c.sync_bn && ranks > 1
                                   ? (count > 0 ? static_cast<StatReducer*>(&comm) : &no_samples)
                                   : nullptr);
      if (fused && count > 0) {
        Tensor x = gather_rows(train.x, local_index);
        Tensor y = targets_for(loss.kind, gather_rows(train.y, local_index));
        const double value = fused->run(x, y);
        NNX_CHECK(std::isfinite(value), ErrorKind::format, "epoch ", epoch + 1, " batch ", b + 1,
                  ": the loss is ", value, " (lower --lr?)");
        m.loss_sum += value * double(count);
        m.samples += count;
        if (classification) {
          const Tensor prediction = fused->outputs()[0].to(Device::cpu());
          m.correct += count_correct(prediction, y, loss.ignore_index);
          m.counted += count_labelled(y, loss.ignore_index);
        }
        if (hooks.after_step) hooks.after_step(trainer);
        bar.update(b + 1, m.samples * ranks, m.loss());
        continue;
      }
      if (compute) {
        Tensor x = gather_rows(train.x, local_index);
        Tensor y = targets_for(loss.kind, gather_rows(train.y, local_index));
        // The loss and its gradient on the host (the output is small; a device one is copied).
        const Tensor prediction = trainer.forward(x)[0].to(Device::cpu());
        LossResult r = compute_loss(prediction, y, loss);
        NNX_CHECK(std::isfinite(r.value), ErrorKind::format, "epoch ", epoch + 1, " batch ", b + 1,
                  ": the loss is ", r.value, " (lower --lr?)");
        // The loss is the mean over the global batch: this rank's mean weighs count / global.
        float* g = r.grad.data<float>();
        if (count == end - begin) {
          if (c.accumulate > 1)
            for (int64_t i = 0; i < r.grad.numel(); ++i) g[i] /= float(c.accumulate);
        } else {
          const float scale = float(double(count) / double(end - begin) / double(c.accumulate));
          for (int64_t i = 0; i < r.grad.numel(); ++i) g[i] *= scale;
        }
        if (count > 0) {
          trainer.backward(r.grad);
        } else {
          // The stand-in sample takes part in BatchNorm's backward sums, but its input
          // gradients are not zero (the statistics are other ranks'): every gradient is put
          // back as it was, as soon as it is final, so that buckets start where other ranks'
          // do (collectives must come in the same order everywhere).
          std::vector<Tensor> kept;
          for (const Parameter& p : params) kept.push_back(p.grad.clone());
          auto restore = [&](int k) {
            const Tensor& t = kept[size_t(k)];
            std::copy_n(t.data<float>(), t.numel(), params[size_t(k)].grad.data<float>());
          };
          trainer.set_grad_ready_hook([&](int k) {
            restore(k);
            if (step_now && buckets) buckets->ready(k);
          });
          trainer.backward(r.grad);
          for (size_t k = 0; k < params.size(); ++k) restore(int(k));
        }
        if (count > 0) {
          m.loss_sum += r.value * double(count);
          m.samples += count;
          if (classification) {
            m.correct += count_correct(prediction, y, loss.ignore_index);
            m.counted += count_labelled(y, loss.ignore_index);
          }
        }
      }
      if (step_now) {
        if (buckets) buckets->finish();
        if (c.clip > 0) clip_grad_norm(params, c.clip, 2.0, &pool);
        optimizer->step(params, &pool);
        if (hooks.after_step) hooks.after_step(trainer);
        trainer.zero_grad();
      }
      bar.update(b + 1, m.samples * ranks, m.loss());
    }
    bar.finish();
    trainer.set_grad_ready_hook(nullptr);
    trainer.set_stat_reducer(nullptr);
    // Local BatchNorm statistics differ between ranks: rank 0's are the model's.
    broadcast_state(trainer, comm);
    reduce_metrics(comm, m);
    EpochRow row;
    row.epoch = epoch + 1;
    row.lr = optimizer->lr();
    row.train_loss = m.loss();
    row.train_acc = m.acc();
    if (val.size() > 0) {
      Metrics v = evaluate(trainer, val, batch, loss, classification, comm);
      row.val_loss = v.loss();
      row.val_acc = v.acc();
    }
    row.seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    history.push_back(row);
    std::ostringstream line;
    line << "epoch " << row.epoch << "/" << epochs << ": lr " << fmt(row.lr, 4) << ", train loss "
         << fmt(row.train_loss, 5);
    if (classification) line << ", accuracy " << fmt(100 * row.train_acc, 4) << "%";
    if (val.size() > 0) {
      line << "; val loss " << fmt(row.val_loss, 5);
      if (classification) line << ", accuracy " << fmt(100 * row.val_acc, 4) << "%";
    }
    line << " (" << fmt(row.seconds, 3) << " s, " << fmt(double(m.samples) / row.seconds, 4)
         << " samples/s)";
    if (lead) std::cerr << line.str() << "\n";

    // The next epoch's lr (the loss rule follows the validation loss when there is one).
    schedule.on_epoch_end(std::isnan(row.val_loss) ? row.train_loss : row.val_loss);
    schedule.apply(*optimizer);

    // Checkpoints: every file complete or absent.
    double score = classification ? (std::isnan(row.val_acc) ? row.train_acc : row.val_acc)
                                  : -(std::isnan(row.val_loss) ? row.train_loss : row.val_loss);
    const bool improved = std::isnan(best) || score > best;
    if (improved) best = score;
    if (!lead) continue;
    fs::path dir(out_dir);
    trainer.model().save((dir / "last.json").string());
    optimizer->save_state((dir / "last.optim.pth").string(), params, &schedule);
    if (improved) trainer.model().save((dir / "best.json").string());
    write_file_atomic((dir / "history.csv").string(), history_csv(history));
    try {
      write_plot((dir / "history.png").string(), history, classification);
    } catch (const std::exception& e) {
      std::cerr << "nnx: warning: history.png not drawn: " << e.what() << "\n";
    }
  }
  if (!lead) return best;
  if (fused)
    std::cerr << "nnx: training steps on " << trainer.device().str() << ": "
              << fused->cuda_graph_state() << "\n";
  TrainMemory mem = trainer.memory();
  std::cerr << "nnx: trained " << epochs - start_epoch << " epoch(s); best "
            << (classification ? "accuracy " + fmt(100 * best, 4) + "%" : "loss " + fmt(-best, 5))
            << "; peak activation memory " << fmt(double(mem.peak_activation_bytes) / 1048576, 4)
            << " MiB, parameters+gradients "
            << fmt(double(mem.parameter_bytes + mem.gradient_bytes) / 1048576, 4)
            << " MiB, peak RSS " << fmt(peak_rss_mb(), 4) << " MiB\n";
  return best;
}

namespace {

// Ranks the launcher (mpirun, or a PMI launcher) started, from its environment; 0 without one.
int launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

double env_number(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return fallback;
  char* end = nullptr;
  double x = std::strtod(v, &end);
  if (*end != 0 || !(x > 0)) throw UsageError(std::string(name) + ": expected a positive number");
  return x;
}

// Discards what is written to it: std::cerr of ranks other than 0.
class NullBuffer : public std::streambuf {
 protected:
  int overflow(int c) override { return c == EOF ? 0 : c; }
};

int train_body(const Args& args, Communicator& comm) {
  TrainConfig config = parse_train_config(args);
  config.sync_bn = args.has("--sync-bn");
  config.bucket_bytes = size_t(env_number("NNX_BUCKET_MB", 25) * 1048576);
  if (args.has("--sync-bn") && comm.size() == 1)
    std::cerr << "nnx: note: --sync-bn only changes distributed runs; this one has one process\n";
  if (comm.size() > 1 && !args.value("--threads")) {
    // The cores of a node are shared by the ranks on it.
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    int per_node = local != nullptr ? std::max(1, std::atoi(local)) : 1;
    config.threads = std::max(1, ThreadPool::hardware_threads() / per_node);
  }
  if (comm.size() > 1)
    std::cerr << "nnx: data-parallel training on " << comm.size() << " ranks (" << comm.backend()
              << "), --batch " << config.batch << " per rank, global batch "
              << config.batch * comm.size() << (config.sync_bn ? ", synchronised BatchNorm" : "")
              << "\n";
  // --device cuda (or auto with a GPU present): the Trainer keeps the network on the GPU.
  const std::string device = args.value("--device").value_or("cpu");
  NNX_CHECK(device == "cpu" || device == "cuda" || device == "auto", ErrorKind::usage,
            "--device must be cpu, cuda or auto, found '", device, "'");
  const bool use_cuda = device == "cuda" || (device == "auto" && [] {
                          cuda::init();
                          return cuda::available();
                        }());
  if (use_cuda) {
    NNX_CHECK(comm.size() == 1, ErrorKind::unsupported,
              "--device cuda: data-parallel training runs on the CPU (one rank per process)");
    NNX_CHECK(cuda::available(), ErrorKind::device, "--device cuda: ", cuda::unavailable_reason());
  }
  Model model;
  if (config.resume) {
    // The description and weights of the checkpoint; ARCH must be the same network.
    fs::path dir(*config.resume);
    for (const char* f : {"last.json", "last.pth", "last.optim.pth", "history.csv"})
      NNX_CHECK(fs::exists(dir / f), ErrorKind::io, (dir / f).string(),
                ": not found (--resume needs a checkpoint folder written by nnx train)");
    for (const std::string& plugin : args.values("--plugin")) load_plugin(plugin);
    model = load((dir / "last.json").string(), (dir / "last.pth").string());
  } else {
    model = load_model(args);
  }
  NNX_CHECK(model.num_outputs() == 1, ErrorKind::shape, model.source(),
            ": nnx train needs a network with one output, found ", model.num_outputs());
  NNX_CHECK(model.num_inputs() == 1, ErrorKind::shape, model.source(),
            ": nnx train needs a network with one input, found ", model.num_inputs());
  Dataset val;
  Dataset train = load_training_data(config, &val);
  Trainer trainer(model, {.threads = config.threads,
                          .seed = config.seed,
                          .device = use_cuda ? Device::cuda() : Device::cpu()});
  run_training(trainer, train, val, config, {}, &comm);
  if (comm.rank() == 0) {
    fs::path out(config.out_dir);
    std::cout << "wrote " << (out / "last.json").string() << " (+ last.pth), "
              << (out / "best.json").string()
              << " (+ best.pth), last.optim.pth, history.csv, history.png\n";
  }
  return kOk;
}

}  // namespace

int train_command(const Args& args) {
  const int launched = launcher_world_size();
  std::unique_ptr<Communicator> comm;
#ifdef NNX_WITH_MPI
  if (launched > 0) comm = dist::make_mpi_communicator(env_number("NNX_COMM_TIMEOUT", 300));
#else
  NNX_CHECK(launched <= 1, ErrorKind::usage, "started by mpirun with ", launched,
            " ranks, but this nnx was built without MPI (NNX_MPI; install libopenmpi-dev and "
            "rebuild): refusing to train ",
            launched, " independent copies");
#endif
  if (!comm) comm = std::make_unique<LocalCommunicator>();
  if (comm->size() == 1) return train_body(args, *comm);

  // Only rank 0 prints; any rank's fault ends every rank, naming the rank.
  NullBuffer null;
  std::streambuf* cerr_buffer = std::cerr.rdbuf();
  if (comm->rank() != 0) std::cerr.rdbuf(&null);
  auto stop = [&](int code, std::string message) {
    std::cerr.rdbuf(cerr_buffer);
    const std::string own = "rank " + std::to_string(comm->rank()) + ": ";
    if (message.rfind(own, 0) == 0) message.erase(0, own.size());  // backends name the rank too
    std::fprintf(stderr, "nnx: error: rank %d of %d: %s\n", comm->rank(), comm->size(),
                 message.c_str());
    std::fflush(stderr);
    comm->abort(code);
  };
  try {
    int status = train_body(args, *comm);
    std::cerr.rdbuf(cerr_buffer);
    return status;
  } catch (const UsageError& e) {
    stop(kUsage, e.what());
  } catch (const Error& e) {
    stop(e.kind() == ErrorKind::device || e.kind() == ErrorKind::usage ? kFailure : kBadInput,
         e.message());
  } catch (const std::bad_alloc&) {
    stop(kFailure, "out of memory");
  } catch (const std::exception& e) {
    stop(kFailure, e.what());
  }
  return kFailure;  // not reached: stop() ends the process
}

}  // namespace nnx::cli
