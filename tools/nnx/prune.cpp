// nnx prune: structured channel pruning (gates, l1, l2, slim) or unstructured magnitude
// pruning, optional fine-tuning (the loop of nnx train, masks put back after every step),
// DIR/pruned.json + DIR/pruned.pth, and parameters, FLOPs and latency before and after.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <unistd.h>

#include "graph/graph.h"
#include "importer/json.h"
#include "nnx/prune.h"
#include "tools/nnx/cli.h"
#include "tools/nnx/train_loop.h"

namespace nnx::cli {
namespace {

namespace fs = std::filesystem;

struct Measure {
  int64_t params = 0, nonzero = 0, flops = 0;
  double ms = 0;  // median latency
};

Measure counts(const Model& model) {
  Measure m;
  m.params = model.num_parameters();
  for (const Layer& layer : model.graph().layers)
    for (const Param& p : layer.op->params()) {
      if (!p.trainable) continue;
      Tensor t = p.value.to(DType::f32).contiguous();
      const float* d = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i) m.nonzero += d[i] != 0.f;
    }
  return m;
}

// FLOPs and median latency of both models, timed alternately so that a change in machine load
// affects both alike.
void time_both(const Model& a, const Model& b, const std::vector<Shape>& shapes, int threads,
               int64_t iters, Measure& ma, Measure& mb) {
  ExecutorOptions o;
  o.threads = threads;
  Executor na(a, o), nb(b, o);
  std::vector<Tensor> inputs = random_inputs(shapes);
  for (int i = 0; i < 3; ++i) {
    na(inputs);
    nb(inputs);
  }
  ma.flops = na.plan_stats().flops;
  mb.flops = nb.plan_stats().flops;
  std::vector<double> ta, tb;
  auto timed = [&](Executor& net, std::vector<double>& times) {
    auto t0 = std::chrono::steady_clock::now();
    net(inputs);
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  };
  for (int64_t i = 0; i < iters; ++i) {
    timed(na, ta);
    timed(nb, tb);
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  ma.ms = ta[ta.size() / 2];
  mb.ms = tb[tb.size() / 2];
}

double amount_of(const Args& args, bool magnitude) {
  auto text = args.value("--amount");
  if (!text) throw UsageError("--method needs --amount A (a fraction, 0 <= A < 1)");
  double a = 0;
  try {
    size_t used = 0;
    a = std::stod(*text, &used);
    if (used != text->size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    throw UsageError("--amount must be a number, found '" + *text + "'");
  }
  if (!(a >= 0 && (magnitude ? a <= 1 : a < 1)))
    throw UsageError("--amount must be in [0, 1), found '" + *text + "'");
  return a;
}

}  // namespace

int prune_command(const Args& args) {
  auto method = args.value("--method");
  if (!method) throw UsageError("prune needs --method magnitude|l1|l2|slim|gates");
  static const std::vector<std::string> methods = {"magnitude", "l1", "l2", "slim", "gates"};
  if (std::find(methods.begin(), methods.end(), *method) == methods.end())
    throw UsageError("--method must be magnitude, l1, l2, slim or gates, found '" + *method + "'");
  auto out = args.value("--out");
  if (!out) throw UsageError("prune needs --out DIR");
  if (args.has("--per-layer") && args.has("--global"))
    throw UsageError("--per-layer and --global exclude each other");
  bool magnitude = *method == "magnitude";
  double amount = *method == "gates" ? 0 : amount_of(args, magnitude);
  if (*method == "gates" && args.value("--amount"))
    throw UsageError("--method gates prunes what the gates say and takes no --amount");
  bool finetune = args.has("--finetune");
  if (args.has("--gradual") && !(magnitude && finetune))
    throw UsageError("--gradual applies to --method magnitude with --finetune");
  std::optional<TrainConfig> config;
  if (finetune) config = parse_train_config(args);
  int threads = int(args.integer("--threads", 0));
  int64_t iters = args.integer("--iters", 20);
  if (iters <= 0) throw UsageError("--iters must be positive");

  Model model = load_model(args);
  std::vector<Shape> shapes = input_shapes(model, args);
  Measure before = counts(model);

  Model pruned;
  std::vector<WeightMask> masks;
  MagnitudeOptions mopt{amount, args.has("--global")};
  std::ostringstream detail;
  if (magnitude) {
    pruned = args.has("--gradual") ? model.clone() : prune_magnitude(model, mopt, &masks);
  } else {
    ChannelPruneOptions opt;
    opt.score = *method == "gates" ? ChannelScore::gates
                : *method == "l1"  ? ChannelScore::l1
                : *method == "l2"  ? ChannelScore::l2
                                   : ChannelScore::slim;
    opt.amount = amount;
    opt.global = args.has("--global");
    opt.input_shapes = shapes;
    ChannelPruneResult r = prune_channels(model, opt);
    pruned = r.model;
    detail << "channels removed: " << r.groups_removed << " of " << r.groups_total
           << " channel groups\n";
    for (const ChannelCount& c : r.channels)
      if (c.before != c.after)
        detail << "  layer " << c.layer << " " << c.type << ": " << c.before << " -> " << c.after
               << "\n";
  }

  if (finetune) {
    Dataset val;
    Dataset train = load_training_data(*config, &val);
    fs::path tmp = fs::path(*out) / (".finetune-" + std::to_string(::getpid()));
    config->out_dir = tmp.string();
    fs::create_directories(tmp);
    TrainerOptions to;
    to.threads = config->threads;
    to.seed = config->seed;
    Trainer trainer(pruned, to);
    TrainHooks hooks;
    if (magnitude) {
      int64_t per_epoch = (train.size() + config->batch - 1) / std::max<int64_t>(1, config->batch);
      int64_t steps = std::max<int64_t>(1, per_epoch * config->epochs / config->accumulate);
      int64_t ramp = std::max<int64_t>(1, steps * 3 / 4);  // the last quarter at full sparsity
      bool gradual = args.has("--gradual");
      if (gradual) masks = magnitude_masks(trainer.parameters(), {0.0, mopt.global});
      // The hook outlives this block: its own step count and ramp, by value.
      hooks.after_step = [&, gradual, ramp, step = int64_t(0)](Trainer& t) mutable {
        ++step;
        if (gradual && (step % 10 == 0 || step == ramp)) {
          MagnitudeOptions now = mopt;
          now.amount = cubic_sparsity(0.0, amount, std::min(step, ramp), ramp);
          masks = magnitude_masks(t.parameters(), now);
        }
        apply_masks(t.parameters(), masks);
      };
    }
    double best = 0;
    try {
      best = run_training(trainer, train, val, *config, hooks);
    } catch (...) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      throw;
    }
    if (magnitude) {
      masks = magnitude_masks(trainer.parameters(), mopt);  // exactly the target at the end
      apply_masks(trainer.parameters(), masks);
    }
    std::error_code ec;
    fs::remove_all(tmp, ec);
    pruned = trainer.model().clone();
    if (config->classification)
      detail << "fine-tuned: best accuracy " << std::fixed << std::setprecision(2) << 100 * best
             << " %\n";
    else
      detail << "fine-tuned: best score " << best << "\n";
  }
  if (magnitude) {
    int64_t w = 0, z = 0;
    detail << "sparsity per layer:\n";
    for (const LayerSparsity& s : sparsity_report(pruned)) {
      detail << "  layer " << s.layer << " " << s.type << ": " << std::fixed << std::setprecision(2)
             << 100.0 * double(s.zeros) / double(std::max<int64_t>(1, s.weights)) << " % of "
             << s.weights << "\n";
      w += s.weights;
      z += s.zeros;
    }
    detail << "  all: " << std::fixed << std::setprecision(2)
           << 100.0 * double(z) / double(std::max<int64_t>(1, w)) << " % of " << w << "\n";
  }

  fs::create_directories(*out);
  const std::string written_json = (fs::path(*out) / "pruned.json").string();
  pruned.save(written_json);
  Measure after = counts(pruned);
  // Timed as it will be deployed: loaded from the files just written. The pruned model in
  // memory is a copy whose weights may still change, so its Executors fuse activations but do
  // not fold BatchNorm into the convolutions, as they do for the loaded original.
  LoadOptions reload;
  reload.device = pruned.device();
  const Model deployed = load(written_json, (fs::path(*out) / "pruned.pth").string(), reload);
  time_both(model, deployed, shapes, threads, iters, before, after);

  std::ostringstream table;
  table << detail.str() << std::left << std::setw(22) << "" << std::right << std::setw(14)
        << "before" << std::setw(14) << "after" << std::setw(10) << "ratio\n";
  auto row = [&](const std::string& name, double a, double b, int precision) {
    table << std::left << std::setw(22) << name << std::right << std::fixed
          << std::setprecision(precision) << std::setw(14) << a << std::setw(14) << b
          << std::setprecision(2) << std::setw(9) << (b > 0 ? a / b : 0.0) << "x\n";
  };
  row("parameters", double(before.params), double(after.params), 0);
  row("nonzero parameters", double(before.nonzero), double(after.nonzero), 0);
  row("MFLOPs", double(before.flops) / 1e6, double(after.flops) / 1e6, 3);
  row("latency (ms, median)", before.ms, after.ms, 3);
  table << "wrote " << (fs::path(*out) / "pruned.json").string() << " + pruned.pth\n";
  if (args.has("--json")) {
    auto obj = [](const Measure& m) {
      return json::object({{"parameters", json::integer(m.params)},
                           {"nonzero_parameters", json::integer(m.nonzero)},
                           {"flops", json::integer(m.flops)},
                           {"latency_ms", json::number(m.ms)}});
    };
    std::cout << json::dump(json::object({{"before", obj(before)}, {"after", obj(after)}}), -1)
              << "\n";
    std::cerr << table.str();
  } else {
    std::cout << table.str();
  }
  return kOk;
}

}  // namespace nnx::cli
