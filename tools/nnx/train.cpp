// nnx train: mini-batch training of a description on .npy / IDX arrays, with validation,
// checkpoints (two-file form + optimizer state), resumption, history.csv and history.png.
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

#include "importer/json.h"
#include "nnx/data.h"
#include "nnx/loss.h"
#include "nnx/optim.h"
#include "nnx/train.h"
#include "tools/nnx/cli.h"
#include "tools/nnx/plot.h"
#include "tools/nnx/train_loop.h"

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

Metrics evaluate(Trainer& trainer, const Dataset& data, int64_t batch, const LossOptions& loss,
                 bool classification) {
  Metrics m;
  bool was_training = trainer.training();
  trainer.set_training(false);
  std::vector<int64_t> index;
  for (int64_t begin = 0; begin < data.size(); begin += batch) {
    int64_t end = std::min(data.size(), begin + batch);
    index.resize(size_t(end - begin));
    std::iota(index.begin(), index.end(), begin);
    Tensor x = gather_rows(data.x, index);
    Tensor y = targets_for(loss.kind, gather_rows(data.y, index));
    std::vector<Tensor> out = trainer.forward(x);
    LossResult r = compute_loss(out[0], y, loss);
    m.loss_sum += r.value * double(end - begin);
    m.samples += end - begin;
    if (classification) {
      m.correct += count_correct(out[0], y, loss.ignore_index);
      m.counted += count_labelled(y, loss.ignore_index);
    }
  }
  trainer.set_training(was_training);
  return m;
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
                    const TrainConfig& c, const TrainHooks& hooks) {
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
  fs::create_directories(out_dir);
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
    std::cerr << "nnx: resuming after epoch " << start_epoch << " from " << *c.resume << "\n";
  }
  schedule.apply(*optimizer);

  auto& params = trainer.parameters();
  int64_t batches = (train.size() + batch - 1) / batch;
  std::mt19937_64 order_rng;
  std::vector<int64_t> order(size_t(train.size()));
  ThreadPool pool(c.threads > 0 ? c.threads : ThreadPool::hardware_threads());
  for (int epoch = start_epoch; epoch < epochs; ++epoch) {
    auto epoch_start = Clock::now();
    std::iota(order.begin(), order.end(), 0);
    if (c.shuffle) {
      order_rng.seed(seed * 1000003u + uint64_t(epoch));  // resumable: depends on the epoch only
      std::shuffle(order.begin(), order.end(), order_rng);
    }
    trainer.set_training(true);
    trainer.set_seed(seed * 1000003u + 7919u * uint64_t(epoch) + 1u);
    trainer.zero_grad();
    Metrics m;
    Progress bar(c.progress, epoch + 1, epochs, batches);
    for (int64_t b = 0; b < batches; ++b) {
      int64_t begin = b * batch, end = std::min(train.size(), begin + batch);
      std::span<const int64_t> index(order.data() + begin, size_t(end - begin));
      Tensor x = gather_rows(train.x, index);
      Tensor y = targets_for(loss.kind, gather_rows(train.y, index));
      std::vector<Tensor> out = trainer.forward(x);
      LossResult r = compute_loss(out[0], y, loss);
      NNX_CHECK(std::isfinite(r.value), ErrorKind::format, "epoch ", epoch + 1, " batch ", b + 1,
                ": the loss is ", r.value, " (lower --lr?)");
      if (c.accumulate > 1) {
        float* g = r.grad.data<float>();
        for (int64_t i = 0; i < r.grad.numel(); ++i) g[i] /= float(c.accumulate);
      }
      trainer.backward(r.grad);
      if ((b + 1) % c.accumulate == 0 || b + 1 == batches) {
        if (c.clip > 0) clip_grad_norm(params, c.clip, 2.0, &pool);
        optimizer->step(params, &pool);
        if (hooks.after_step) hooks.after_step(trainer);
        trainer.zero_grad();
      }
      m.loss_sum += r.value * double(end - begin);
      m.samples += end - begin;
      if (classification) {
        m.correct += count_correct(out[0], y, loss.ignore_index);
        m.counted += count_labelled(y, loss.ignore_index);
      }
      bar.update(b + 1, m.samples, m.loss());
    }
    bar.finish();
    EpochRow row;
    row.epoch = epoch + 1;
    row.lr = optimizer->lr();
    row.train_loss = m.loss();
    row.train_acc = m.acc();
    if (val.size() > 0) {
      Metrics v = evaluate(trainer, val, batch, loss, classification);
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
    std::cerr << line.str() << "\n";

    // The next epoch's lr (the loss rule follows the validation loss when there is one).
    schedule.on_epoch_end(std::isnan(row.val_loss) ? row.train_loss : row.val_loss);
    schedule.apply(*optimizer);

    // Checkpoints: every file complete or absent.
    fs::path dir(out_dir);
    trainer.model().save((dir / "last.json").string());
    optimizer->save_state((dir / "last.optim.pth").string(), params, &schedule);
    double score = classification ? (std::isnan(row.val_acc) ? row.train_acc : row.val_acc)
                                  : -(std::isnan(row.val_loss) ? row.train_loss : row.val_loss);
    if (std::isnan(best) || score > best) {
      best = score;
      trainer.model().save((dir / "best.json").string());
    }
    write_file_atomic((dir / "history.csv").string(), history_csv(history));
    try {
      write_plot((dir / "history.png").string(), history, classification);
    } catch (const std::exception& e) {
      std::cerr << "nnx: warning: history.png not drawn: " << e.what() << "\n";
    }
  }
  TrainMemory mem = trainer.memory();
  std::cerr << "nnx: trained " << epochs - start_epoch << " epoch(s); best "
            << (classification ? "accuracy " + fmt(100 * best, 4) + "%" : "loss " + fmt(-best, 5))
            << "; peak activation memory " << fmt(double(mem.peak_activation_bytes) / 1048576, 4)
            << " MiB, parameters+gradients "
            << fmt(double(mem.parameter_bytes + mem.gradient_bytes) / 1048576, 4)
            << " MiB, peak RSS " << fmt(peak_rss_mb(), 4) << " MiB\n";
  return best;
}

int train_command(const Args& args) {
  TrainConfig config = parse_train_config(args);
  if (args.has("--sync-bn"))
    std::cerr << "nnx: note: --sync-bn only changes distributed runs; this one has one process\n";
  std::string device = args.value("--device").value_or("cpu");
  if (device == "cuda")
    fail(ErrorKind::device, "--device cuda: training runs on the CPU in this build");
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
  Trainer trainer(model, {.threads = config.threads, .seed = config.seed});
  run_training(trainer, train, val, config);
  fs::path out(config.out_dir);
  std::cout << "wrote " << (out / "last.json").string() << " (+ last.pth), "
            << (out / "best.json").string()
            << " (+ best.pth), last.optim.pth, history.csv, history.png\n";
  return kOk;
}

}  // namespace nnx::cli
