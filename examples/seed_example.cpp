// The seed README's network, corrected, end to end: register the application's YOLO head,
// load the description (and weights, if given), run a 480x640 image, print outputs and time.
//   seed_example examples/seed/seed.json [weights.pth] [--threads N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "embed/yolo_head.h"
#include "nnx/nnx.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: seed_example ARCH.json [WEIGHTS] [--threads N]\n");
    return 2;
  }
  std::string arch = argv[1], weights;
  int threads = 0;
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else
      weights = argv[i];
  }
  try {
    example::register_yolo_head();
    auto model = nnx::load(arch, weights, {.device = nnx::Device::cpu(), .strict = false});
    if (!model.report().weights_given)
      std::fprintf(stderr,
                   "note: no weights given: layers initialised as PyTorch would (seed 0)\n");
    nnx::Executor net(model, {.threads = threads});

    nnx::Tensor image = nnx::Tensor::empty({3, 480, 640});  // CHW, as in the seed README
    std::mt19937 rng(0);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    for (int64_t i = 0; i < image.numel(); ++i) image.data<float>()[i] = uniform(rng);

    using Clock = std::chrono::steady_clock;
    auto t0 = Clock::now();
    std::vector<nnx::Tensor> outputs = net(image);
    double first = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::vector<double> times;
    for (int i = 0; i < 10; ++i) {
      auto t = Clock::now();
      outputs = net(image);
      times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
    }
    std::sort(times.begin(), times.end());

    for (size_t k = 0; k < outputs.size(); ++k) {
      const nnx::Tensor& out = outputs[k];
      double sum = 0, lo = out.at_flat(0), hi = lo;
      for (int64_t i = 0; i < out.numel(); ++i) {
        double v = out.at_flat(i);
        sum += v;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      std::printf("output %zu: shape %s  mean %.6g  min %.6g  max %.6g  first %.6g\n", k,
                  out.shape().str().c_str(), sum / double(out.numel()), lo, hi, out.at_flat(0));
    }
    nnx::PlanStats plan = net.plan_stats();
    std::printf(
        "first run %.1f ms, median of 10 runs %.1f ms (%.2f GFLOP, activations %.1f MiB "
        "planned vs %.1f MiB unplanned)\n",
        first, times[times.size() / 2], double(plan.flops) / 1e9,
        double(plan.arena_bytes) / (1 << 20), double(plan.unplanned_bytes) / (1 << 20));
  } catch (const nnx::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
