// The nnx commands: run, info, convert, bench.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <unistd.h>

#include "graph/planner.h"
#include "importer/json.h"
#include "kernels/cpu/peak.h"
#include "nnx/cuda.h"
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
  o.precision = parse_precision(args.value("--precision").value_or("fp32"));
  return o;
}

std::string human_bytes(double bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (bytes >= 1 << 20)
    out << bytes / (1 << 20) << " MiB";
  else
    out << bytes / 1024 << " KiB";
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
      fail(ErrorKind::shape, model.source(), ": the network has ", model.num_inputs(),
           " input(s), ", files.size(), " --input given");
    for (auto& f : files) inputs.push_back(read_npy(f).to(DType::f32));
  } else {
    inputs = random_inputs(input_shapes(model, args));
  }
  Executor net(model, executor_options(args));
  auto start = Clock::now();
  std::vector<Tensor> outputs = net(inputs);
  double first_ms = ms_since(start);
  for (Tensor& t : outputs) t = t.to(Device::cpu());  // results of a CUDA run, to the host
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
  std::ostringstream table;
  table << std::left << std::setw(6) << "node" << std::setw(22) << "op" << std::setw(24) << "inputs"
        << std::setw(26) << "output shapes" << std::right << std::setw(12) << "params"
        << std::setw(14) << "MFLOPs"
        << "\n";
  std::vector<json::Value> nodes;
  for (int v : g.schedule) {
    const Node& node = g.nodes[size_t(v)];
    const Layer& layer = g.layer_of(v);
    std::string ins, shapes;
    std::vector<json::Value> in_refs, out_shapes;
    for (auto& in : node.inputs) {
      if (!ins.empty()) ins += ' ';
      ins += std::to_string(in.node) + ":" + std::to_string(in.port);
      in_refs.push_back(json::string(std::to_string(in.node) + ":" + std::to_string(in.port)));
    }
    for (auto& s : plan.specs[size_t(v)]) {
      if (!shapes.empty()) shapes += ' ';
      shapes += s.shape.str();
      out_shapes.push_back(json::integers(s.shape.vec()));
    }
    if (plan.specs[size_t(v)].empty()) shapes = "(unused)";
    int64_t params = 0;
    if (layer.nodes[0] == v)  // a shared layer's weights count once
      for (auto& p : layer.op->params()) params += p.trainable ? p.value.numel() : 0;
    table << std::left << std::setw(6) << v << std::setw(22) << layer.op->type() << std::setw(24)
          << ins << std::setw(26) << shapes << std::right << std::setw(12) << params
          << std::setw(14) << std::fixed << std::setprecision(2)
          << double(plan.node_flops[size_t(v)]) / 1e6 << "\n";
    nodes.push_back(json::object({{"index", json::integer(v)},
                                  {"op", json::string(layer.op->type())},
                                  {"call", json::string(layer.call_text)},
                                  {"inputs", json::array(std::move(in_refs))},
                                  {"shapes", json::array(std::move(out_shapes))},
                                  {"params", json::integer(params)},
                                  {"flops", json::integer(plan.node_flops[size_t(v)])}}));
  }
  table << "\nparameters: " << model.num_parameters() << "\nFLOPs: " << std::setprecision(3)
        << double(plan.flops) / 1e9
        << " G\nactivation memory: " << human_bytes(double(plan.arena_bytes)) << " planned, "
        << human_bytes(double(plan.unplanned_bytes)) << " unplanned\n";
  if (args.has("--json")) {
    json::Value out =
        json::object({{"source", json::string(model.source())},
                      {"nodes", json::array(std::move(nodes))},
                      {"parameters", json::integer(model.num_parameters())},
                      {"flops", json::integer(plan.flops)},
                      {"planned_bytes", json::integer(int64_t(plan.arena_bytes))},
                      {"unplanned_bytes", json::integer(int64_t(plan.unplanned_bytes))}});
    std::cout << json::dump(out, -1) << "\n";
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
  if (args.has("--cuda-graph")) {
    if (args.value("--device").value_or("cpu") != "cuda")
      throw UsageError("--cuda-graph applies to --device cuda");
    const std::string graph = *args.value("--cuda-graph");
    if (graph != "on" && graph != "off")
      throw UsageError("--cuda-graph must be on or off, found '" + graph + "'");
  }
  if (args.has("--batch-split")) {
    const std::string split = *args.value("--batch-split");
    if (split != "on" && split != "off")
      throw UsageError("--batch-split must be on or off, found '" + split + "'");
  }
  auto load_start = Clock::now();
  Model model = load_model(args);
  double load_ms = ms_since(load_start);
  const Device device = model.device();
  std::vector<Shape> shapes = input_shapes(model, args);
  std::vector<Tensor> inputs = random_inputs(shapes);
  // On CUDA the inputs are put on the device once: the runs time the network, not the copies.
  if (device.is_cuda())
    for (Tensor& t : inputs) t = t.to(device);
  int64_t iters = args.integer("--iters", 20), warmup = args.integer("--warmup", 3);
  if (iters <= 0) throw UsageError("--iters must be positive");
  bool profile = args.has("--profile");
  ExecutorOptions options = executor_options(args);
  options.profile = profile;
  // CUDA: the runs after the first replay CUDA graphs unless --cuda-graph off (or --profile).
  options.cuda_graph = args.value("--cuda-graph").value_or("on") == "on";
  // CPU, 2+ threads: a batch of one sample per thread or more runs as parts, each whole on one
  // thread, where no op mixes samples (ExecutorOptions::batch_split), unless --batch-split off.
  options.batch_split = args.value("--batch-split").value_or("on") == "on";
  // load_ms: file open to model ready; first_run_ms: executor set-up, planning and the first
  // run (pages of mapped weights fault in here), apart from the steady-state runs below.
  auto t0 = Clock::now();
  Executor net(model, options);
  net(inputs);
  double first_ms = ms_since(t0);
  // A progress line on stderr (a terminal, or --progress), rewritten at most every 100 ms.
  const bool progress = args.has("--progress") || ::isatty(2);
  auto last_shown = Clock::now();
  auto show = [&](const char* phase, int64_t done, int64_t total, bool force) {
    if (!progress || (!force && ms_since(last_shown) < 100)) return;
    last_shown = Clock::now();
    std::cerr << "\rnnx bench: " << phase << ' ' << done << '/' << total << "   " << std::flush;
  };
  // The runs write into the outputs of the run before, as an embedding application would: on
  // the CPU no allocation at all (Executor::run with outputs).
  std::vector<Tensor> outputs(size_t(model.num_outputs()));
  for (int64_t i = 0; i < warmup; ++i) {
    show("warm-up", i + 1, warmup, i + 1 == warmup);
    net.run(inputs, outputs);
  }
  std::vector<double> times;
  std::vector<std::vector<double>> node_runs;  // per node, in run order: each timed run's ms
  for (int64_t i = 0; i < iters; ++i) {
    show("run", i + 1, iters, i + 1 == iters);
    auto t = Clock::now();
    net.run(inputs, outputs);
    times.push_back(ms_since(t));
    const auto& timings = net.last_profile();
    node_runs.resize(timings.size());
    for (size_t k = 0; k < timings.size(); ++k) node_runs[k].push_back(timings[k].ms);
  }
  // Each node's median over the runs, like the headline figure: a run that a busy neighbour
  // slowed down moves neither (a mean across runs a minute apart on a shared VM did, by 20%).
  std::vector<double> node_ms;
  for (std::vector<double>& runs : node_runs) {
    std::sort(runs.begin(), runs.end());
    const size_t n = runs.size();
    node_ms.push_back(n % 2 == 1 ? runs[n / 2] : 0.5 * (runs[n / 2 - 1] + runs[n / 2]));
  }
  if (progress) std::cerr << "\r" << std::string(40, ' ') << "\r" << std::flush;
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double q) { return sorted[size_t(q * double(sorted.size() - 1) + 0.5)]; };
  double mean = 0;
  for (double t : times) mean += t / double(times.size());
  double median = pct(0.5);
  int threads = options.threads > 0 ? options.threads : ThreadPool::hardware_threads();

  // Per node: median time, its share of the summed node times, achieved GFLOP/s.
  std::vector<int64_t> flops;
  std::vector<Shape> out_shapes;  // each node's first output
  if (profile) {
    std::vector<TensorSpec> specs;
    for (const Shape& s : shapes) specs.push_back({s, DType::f32});
    Plan plan = make_plan(model.graph(), specs);
    for (const NodeTiming& t : net.last_profile()) {
      int64_t node_flops = plan.node_flops[size_t(t.node)];
      for (int f : t.fused) node_flops += plan.node_flops[size_t(f)];
      flops.push_back(node_flops);
      // A fused chain's value is its last node's.
      const int last = t.fused.empty() ? t.node : t.fused.back();
      out_shapes.push_back(plan.specs[size_t(last)][0].shape);
    }
  }
  // The machine's float32 FMA peak for these threads (kernels/cpu/peak.h), measured after the
  // runs: each node's GFLOP/s is also given as a share of it (on the CPU; a CUDA run has none).
  const double peak_gflops = profile && !device.is_cuda() ? cpu::measure_peak_gflops(threads) : 0.0;
  // Peak device memory: what the CUDA allocator handed out at most (weights, arena, temporaries).
  const double peak_device_mb =
      device.is_cuda() ? double(cuda::allocator(device.index).stats().peak_bytes) / (1 << 20) : 0.0;
  const std::string device_name = device.is_cuda() ? "cuda:" + std::to_string(device.index) + " (" +
                                                         cuda::device_name(device.index) + ")"
                                                   : std::to_string(threads) + " threads";
  double total_node_ms = 0;
  for (double ms : node_ms) total_node_ms += ms;
  std::vector<json::Value> nodes;
  std::ostringstream table;
  const Graph& g = model.graph();
  for (size_t k = 0; k < node_ms.size(); ++k) {
    const NodeTiming& timing = net.last_profile()[k];
    const int v = timing.node;
    std::string op = g.layer_of(v).op->type();  // "Conv2d+BatchNorm2d+ReLU" for a fused chain
    for (int f : timing.fused) op += "+" + g.layer_of(f).op->type();
    double ms = node_ms[k];
    double share = total_node_ms > 0 ? node_ms[k] / total_node_ms : 0;
    double gflops = ms > 0 ? double(flops[k]) / (ms * 1e6) : 0;
    double of_peak = peak_gflops > 0 ? gflops / peak_gflops : 0;
    nodes.push_back(json::object({{"index", json::integer(v)},
                                  {"op", json::string(op)},
                                  {"shape", json::integers(out_shapes[k].vec())},
                                  {"ms", json::number(ms)},
                                  {"share", json::number(share)},
                                  {"gflops", json::number(gflops)},
                                  {"peak_share", json::number(of_peak)}}));
    std::string shape = out_shapes[k].str();
    table << std::left << std::setw(6) << v << std::setw(28) << op << ' ' << std::setw(20) << shape
          << std::right << std::fixed << std::setprecision(3) << std::setw(10) << ms << " ms"
          << std::setprecision(1) << std::setw(7) << 100 * share << " %" << std::setw(8) << gflops
          << " GFLOP/s" << std::setw(6) << 100 * of_peak << " % of peak\n";
  }
  if (profile && !device.is_cuda())
    table << "peak: " << std::fixed << std::setprecision(1) << peak_gflops << " GFLOP/s ("
          << threads << " threads, " << cpu::fma_vector_bits() << "-bit FMA)\n";
  if (profile && device.is_cuda())
    table << "(CUDA: the stream is synchronised after every node to time it; no peak share)\n";
  std::vector<json::Value> shape_list;
  for (const Shape& s : shapes) shape_list.push_back(json::integers(s.vec()));
  if (args.has("--json")) {
    std::vector<std::pair<std::string, json::Value>> out = {
        {"median_ms", json::number(median)},
        {"p10_ms", json::number(pct(0.1))},
        {"p90_ms", json::number(pct(0.9))},
        {"mean_ms", json::number(mean)},
        {"throughput_per_s", json::number(1000.0 * double(shapes[0][0]) / median)},
        {"load_ms", json::number(load_ms)},
        {"first_run_ms", json::number(first_ms)},
        {"peak_rss_mb", json::number(peak_rss_mb())},
        {"peak_device_mb", device.is_cuda() ? json::number(peak_device_mb) : json::null()},
        {"device", json::string(device.is_cuda() ? "cuda" : "cpu")},
        {"threads", json::integer(threads)},
        {"precision", json::string(args.value("--precision").value_or("fp32"))},
        {"cuda_graph", device.is_cuda() ? json::string(net.cuda_graph_state()) : json::null()},
        {"batch_parts", json::integer(net.batch_parts())},
        {"shapes", json::array(std::move(shape_list))}};
    if (profile) {
      out.emplace_back("peak_gflops", json::number(peak_gflops));
      out.emplace_back("nodes", json::array(std::move(nodes)));
    }
    std::cout << json::dump(json::object(std::move(out)), -1) << "\n";
    if (profile) std::cerr << table.str();
  } else {
    if (profile) std::cout << table.str() << "\n";
    std::cout << std::fixed << std::setprecision(2) << "median " << median << " ms, p10 "
              << pct(0.1) << " ms, p90 " << pct(0.9) << " ms, mean " << mean << " ms over " << iters
              << " runs (" << device_name
              << (net.batch_parts() > 0
                      ? ", the batch in " + std::to_string(net.batch_parts()) + " parts"
                      : std::string())
              << ")\nload " << load_ms << " ms, first run " << first_ms << " ms, peak RSS "
              << peak_rss_mb() << " MB";
    if (device.is_cuda())
      std::cout << ", peak device memory " << peak_device_mb
                << " MB\nCUDA graph: " << net.cuda_graph_state();
    std::cout << "\n";
  }
  return kOk;
}

}  // namespace nnx::cli
