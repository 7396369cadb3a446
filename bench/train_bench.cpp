// Training step time of a description: forward, backward and optimizer update on a fixed
// random batch, the loss MSE of every output against fixed random targets. Prints the median,
// p10 and p90 over --iters steps after --warmup steps, and peak memory, as one JSON object
// (python/bench_train_compare.py runs it beside PyTorch).
//
// usage: nnx_train_bench ARCH [--weights W] --shape N,C,H,W [--optimizer sgd|adam|adamw]
//          [--lr LR] [--momentum M] [--threads N] [--iters N] [--warmup K] [--plugin LIB.so]
//          [--profile 1] [--device cpu|cuda] [--cuda-graph on|off]
// --profile 1 then runs --iters more steps with per-node timing (Trainer::set_profiling) and
// prints, on stderr, each node's forward and backward time per step and share of the total,
// the costliest first, and the optimizer's time. --device cuda trains on the GPU (Trainer with
// TrainerOptions::device; the batch and the targets kept there, as PyTorch's side keeps them;
// each step ends with a device synchronize, so its time is the GPU's) and
// adds the device allocator's peak to the JSON. On CUDA the timed steps are nnx::TrainStep runs:
// after two op-by-op steps the whole step is two CUDA graphs, replayed (--cuda-graph off: op by op
// on TrainStep's stream); the JSON's "cuda_graph" says which.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "examples/embed/yolo_head.h"
#include "nnx/cuda.h"
#include "nnx/loss.h"
#include "nnx/nnx.hpp"
#include "nnx/optim.h"
#include "nnx/train.h"

namespace {

nnx::Shape parse_shape(const std::string& text) {
  nnx::Shape s;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    s.push_back(std::stoll(text.substr(start, end - start)));
    start = end + 1;
  }
  return s;
}

nnx::Tensor random_tensor(const nnx::Shape& shape, std::mt19937_64& rng, float scale) {
  nnx::Tensor t = nnx::Tensor::empty(shape);
  std::normal_distribution<float> normal(0.0f, scale);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = normal(rng);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: nnx_train_bench ARCH [--weights W] --shape N,C,H,W [--optimizer O] "
                 "[--lr LR] [--momentum M] [--threads N] [--iters N] [--warmup K]\n";
    return 2;
  }
  std::string arch = argv[1], weights, optimizer_name = "sgd", shape_text = "1,3,224,224";
  std::string device_name = "cpu";
  double lr = 0.01, momentum = 0.9;
  int threads = 2, iters = 10, warmup = 2;
  bool profile = false, cuda_graph = true;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--weights")
      weights = value;
    else if (flag == "--shape")
      shape_text = value;
    else if (flag == "--optimizer")
      optimizer_name = value;
    else if (flag == "--lr")
      lr = std::stod(value);
    else if (flag == "--momentum")
      momentum = std::stod(value);
    else if (flag == "--threads")
      threads = std::stoi(value);
    else if (flag == "--iters")
      iters = std::stoi(value);
    else if (flag == "--warmup")
      warmup = std::stoi(value);
    else if (flag == "--profile")
      profile = value != "0";
    else if (flag == "--plugin")
      nnx::load_plugin(value);
    else if (flag == "--device")
      device_name = value;
    else if (flag == "--cuda-graph" && (value == "on" || value == "off"))
      cuda_graph = value == "on";
    else {
      std::cerr << "nnx_train_bench: unknown option " << flag << "\n";
      return 2;
    }
  }
  try {
    example::register_yolo_head();
    nnx::Model model = nnx::load(arch, weights);
    if (device_name != "cpu" && device_name != "cuda") {
      std::cerr << "nnx_train_bench: --device must be cpu or cuda, found " << device_name << "\n";
      return 2;
    }
    const bool on_cuda = device_name == "cuda";
    const nnx::Device device = on_cuda ? nnx::Device::cuda(0) : nnx::Device::cpu();
    nnx::Trainer trainer(model, {.threads = threads, .device = device});
    nnx::OptimizerOptions opt;
    opt.lr = lr;
    if (optimizer_name == "sgd") opt.momentum = momentum;
    auto optimizer = nnx::make_optimizer(optimizer_name, opt);
    std::mt19937_64 rng(1);
    // The batch on the training device once, as PyTorch's side keeps it.
    const nnx::Tensor x = random_tensor(parse_shape(shape_text), rng, 1.0f).to(device);
    std::vector<nnx::Tensor> targets;
    nnx::ThreadPool pool(threads);
    nnx::LossOptions mse;
    mse.kind = nnx::LossKind::mse;
    std::vector<double> times;
    double optimizer_ms = 0;
    auto step = [&] {
      std::vector<nnx::Tensor> out = trainer.forward(x);
      if (targets.empty())
        for (const auto& o : out)  // on the outputs' device once, as PyTorch's side keeps them
          targets.push_back(random_tensor(o.shape(), rng, 0.1f).to(o.device()));
      std::vector<nnx::Tensor> grads;
      for (size_t k = 0; k < out.size(); ++k)
        grads.push_back(nnx::compute_loss(out[k], targets[k], mse).grad);
      trainer.backward_replacing(grads);  // zero_grad() and backward(), as TrainStep
      auto start = std::chrono::steady_clock::now();
      optimizer->step(trainer.parameters(), &pool);
      if (on_cuda) nnx::cuda::synchronize(0);
      optimizer_ms +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
    };
    // CUDA: the whole step as one unit (TrainStep), with targets of the outputs' shapes.
    std::unique_ptr<nnx::TrainStep> fused;
    if (on_cuda) {
      trainer.set_training(false);  // the output shapes, without touching running statistics
      for (const auto& o : trainer.forward(x))
        targets.push_back(random_tensor(o.shape(), rng, 0.1f).to(o.device()));
      trainer.set_training(true);
      fused = std::make_unique<nnx::TrainStep>(
          trainer, *optimizer, nnx::TrainStepOptions{.loss = mse, .cuda_graph = cuda_graph});
    }
    for (int it = 0; it < warmup + iters; ++it) {
      auto start = std::chrono::steady_clock::now();
      if (fused)
        fused->run(std::span(&x, 1), targets);
      else
        step();
      double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      if (it >= warmup) times.push_back(ms);
    }
    if (profile) {
      trainer.set_profiling(true);
      optimizer_ms = 0;
      for (int it = 0; it < iters; ++it) step();
      auto nodes = trainer.profile();
      trainer.set_profiling(false);
      double total = optimizer_ms;
      for (const auto& n : nodes) total += n.forward_ms + n.backward_ms;
      std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) {
        return a.forward_ms + a.backward_ms > b.forward_ms + b.backward_ms;
      });
      std::fprintf(stderr, "%10s %10s %7s  node (per step, over %d steps; total %.1f ms)\n",
                   "forward", "backward", "share", iters, total / iters);
      for (const auto& n : nodes)
        std::fprintf(stderr, "%10.3f %10.3f %6.1f%%  %s\n", n.forward_ms / iters,
                     n.backward_ms / iters, 100.0 * (n.forward_ms + n.backward_ms) / total,
                     n.node.c_str());
      std::fprintf(stderr, "%10s %10.3f %6.1f%%  optimizer step\n", "", optimizer_ms / iters,
                   100.0 * optimizer_ms / total);
    }
    std::sort(times.begin(), times.end());
    auto at = [&](double q) { return times[size_t(q * double(times.size() - 1) + 0.5)]; };
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    std::string device_peak;
    if (on_cuda)
      device_peak = ", \"device_peak_mb\": " +
                    std::to_string(double(nnx::cuda::allocator(0).stats().peak_bytes) / 1048576.0) +
                    ", \"device\": \"" + nnx::cuda::device_name(0) + "\"";
    if (fused) device_peak += ", \"cuda_graph\": \"" + fused->cuda_graph_state() + "\"";
    nnx::TrainMemory mem = trainer.memory();
    std::printf(
        "{\"median_ms\": %.3f, \"p10_ms\": %.3f, \"p90_ms\": %.3f, \"iters\": %d, "
        "\"threads\": %d, \"peak_activation_mb\": %.2f, \"parameter_mb\": %.2f, "
        "\"peak_rss_mb\": %.1f%s}\n",
        at(0.5), at(0.1), at(0.9), iters, threads, double(mem.peak_activation_bytes) / 1048576.0,
        double(mem.parameter_bytes + mem.gradient_bytes) / 1048576.0, double(u.ru_maxrss) / 1024,
        device_peak.c_str());
  } catch (const nnx::Error& e) {
    std::cerr << "nnx_train_bench: error: " << e.message() << "\n";
    return 1;
  }
  return 0;
}
