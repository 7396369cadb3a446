// The nnx commands: run, info, convert, bench.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "graph/planner.h"
#include "runtime/model_impl.h"
#include "tools/nnx/cli.h"

namespace nnx::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

ExecutorOptions executor_options(const Args& args) {
  ExecutorOptions o;
  o.threads = int(args.integer("--threads", 0));
  return o;
}

std::string human_bytes(double bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (bytes >= 1 << 20) out << bytes / (1 << 20) << " MiB";
  else out << bytes / 1024 << " KiB";
  return out.str();
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

}  // namespace

int run_command(const Args& args) {
  Model model = load_model(args);
  std::vector<Tensor> inputs;
  std::vector<std::string> files = args.values("--input");
  if (!files.empty()) {
    if (int(files.size()) != model.num_inputs())
      fail(ErrorKind::shape, model.source(), ": the network has ", model.num_inputs(), " input(s), ",
           files.size(), " --input given");
    for (auto& f : files) inputs.push_back(read_npy(f).to(DType::f32));
  } else {
    inputs = random_inputs(input_shapes(model, args));
  }
  Executor net(model, executor_options(args));
  auto start = Clock::now();
  std::vector<Tensor> outputs = net(inputs);
  double first_ms = ms_since(start);
  for (size_t k = 0; k < outputs.size(); ++k)
    std::cout << "output " << k << ": " << outputs[k].shape().str() << "\n";
  std::cerr << "nnx: ran in " << std::fixed << std::setprecision(2) << first_ms << " ms\n";
  if (auto dir = args.value("--out")) {
    fs::create_directories(*dir);
    // Every file under a temporary name first: a failure leaves no output behind.
    std::vector<std::pair<std::string, std::string>> written;
    try {
      for (size_t k = 0; k < outputs.size(); ++k) {
        std::string final_path = (fs::path(*dir) / ("out" + std::to_string(k) + ".npy")).string();
        std::string tmp = final_path + ".partial";
        write_npy(tmp, outputs[k]);
        written.emplace_back(tmp, final_path);
      }
      for (auto& [tmp, final_path] : written) fs::rename(tmp, final_path);
    } catch (...) {
      std::error_code ec;
      for (auto& [tmp, final_path] : written) fs::remove(tmp, ec);
      throw;
    }
  }
  return kOk;
}

int info_command(const Args& args) {
  Model model = load_model(args);
  const Graph& g = model.graph();
  std::vector<TensorSpec> specs;
  for (const Shape& s : input_shapes(model, args)) specs.push_back({s, DType::f32});
  Plan plan = make_plan(g, specs);
  bool json = args.has("--json");
  std::ostringstream table, js;
  js << "{\"source\": \"" << model.source() << "\", \"nodes\": [";
  table << std::left << std::setw(6) << "node" << std::setw(22) << "op" << std::setw(24) << "inputs"
        << std::setw(26) << "output shapes" << std::right << std::setw(12) << "params" << std::setw(14)
        << "MFLOPs" << "\n";
  bool first = true;
  for (int v : g.schedule) {
    const Node& node = g.nodes[size_t(v)];
    const Layer& layer = g.layer_of(v);
    std::string ins, shapes;
    for (auto& in : node.inputs) {
      if (!ins.empty()) ins += ' ';
      ins += std::to_string(in.node) + ":" + std::to_string(in.port);
    }
    for (auto& s : plan.specs[size_t(v)]) {
      if (!shapes.empty()) shapes += ' ';
      shapes += s.shape.str();
    }
    int64_t params = 0;
    if (layer.nodes[0] == v)
      for (auto& p : layer.op->params()) params += p.trainable ? p.value.numel() : 0;
    bool ran = !plan.specs[size_t(v)].empty();
    if (!ran) shapes = "(unused)";
    table << std::left << std::setw(6) << v << std::setw(22) << layer.op->type() << std::setw(24) << ins
          << std::setw(26) << shapes << std::right << std::setw(12) << params << std::setw(14) << std::fixed
          << std::setprecision(2) << double(plan.node_flops[size_t(v)]) / 1e6 << "\n";
    js << (first ? "" : ", ") << "{\"index\": " << v << ", \"op\": \"" << layer.op->type()
       << "\", \"inputs\": \"" << ins << "\", \"shapes\": \"" << shapes << "\", \"params\": " << params
       << ", \"flops\": " << plan.node_flops[size_t(v)] << "}";
    first = false;
  }
  table << "\nparameters: " << model.num_parameters() << "\nFLOPs: " << std::setprecision(3)
        << double(plan.flops) / 1e9 << " G\nactivation memory: " << human_bytes(double(plan.arena_bytes))
        << " planned, " << human_bytes(double(plan.unplanned_bytes)) << " unplanned\n";
  js << "], \"parameters\": " << model.num_parameters() << ", \"flops\": " << plan.flops
     << ", \"planned_bytes\": " << plan.arena_bytes << ", \"unplanned_bytes\": " << plan.unplanned_bytes << "}\n";
  if (json) {
    std::cout << js.str();
    std::cerr << table.str();
  } else {
    std::cout << table.str();
  }
  return kOk;
}

int convert_command(const Args& args) {
  auto out = args.value("--out");
  if (!out) throw UsageError("convert needs --out PATH (.json, .pth or .safetensors)");
  std::string ext = fs::path(*out).extension().string();
  if (ext != ".json" && ext != ".pth" && ext != ".safetensors")
    throw UsageError("--out must end in .json, .pth or .safetensors, found '" + *out + "'");
  Model model = load_model(args);
  model.save(*out);
  std::cerr << "nnx: wrote " << *out << "\n";
  return kOk;
}

int bench_command(const Args& args) {
  auto load_start = Clock::now();
  Model model = load_model(args);
  double load_ms = ms_since(load_start);
  std::vector<Shape> shapes = input_shapes(model, args);
  std::vector<Tensor> inputs = random_inputs(shapes);
  int64_t iters = args.integer("--iters", 20), warmup = args.integer("--warmup", 3);
  if (iters <= 0) throw UsageError("--iters must be positive");
  Executor net(model, executor_options(args));
  auto t0 = Clock::now();
  net(inputs);
  double first_ms = ms_since(t0);
  for (int64_t i = 0; i < warmup; ++i) net(inputs);
  std::vector<double> times;
  for (int64_t i = 0; i < iters; ++i) {
    auto t = Clock::now();
    net(inputs);
    times.push_back(ms_since(t));
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double q) { return sorted[size_t(std::min<double>(double(sorted.size() - 1), q * double(sorted.size() - 1) + 0.5))]; };
  double mean = 0;
  for (double t : times) mean += t / double(times.size());
  double median = pct(0.5);
  int threads = args.integer("--threads", 0) > 0 ? int(args.integer("--threads", 0)) : ThreadPool::hardware_threads();
  std::string shape_list;
  for (auto& s : shapes) shape_list += (shape_list.empty() ? "\"" : ", \"") + s.str() + "\"";
  if (args.has("--json")) {
    std::cout << std::fixed << std::setprecision(3) << "{\"median_ms\": " << median << ", \"p10_ms\": " << pct(0.1)
              << ", \"p90_ms\": " << pct(0.9) << ", \"mean_ms\": " << mean
              << ", \"throughput_per_s\": " << 1000.0 * double(shapes[0][0]) / median << ", \"load_ms\": " << load_ms
              << ", \"first_run_ms\": " << first_ms << ", \"peak_rss_mb\": " << peak_rss_mb()
              << ", \"peak_device_mb\": null, \"device\": \"cpu\", \"threads\": " << threads
              << ", \"precision\": \"fp32\", \"shapes\": [" << shape_list << "]}\n";
  } else {
    std::cout << std::fixed << std::setprecision(2) << "median " << median << " ms, p10 " << pct(0.1) << " ms, p90 "
              << pct(0.9) << " ms, mean " << mean << " ms over " << iters << " runs (" << threads
              << " threads)\nload " << load_ms << " ms, first run " << first_ms << " ms, peak RSS "
              << peak_rss_mb() << " MB\n";
  }
  return kOk;
}

}  // namespace nnx::cli
