// Concurrent inference under load: one loaded Model, 8 threads, each with its own Executor,
// 200 runs each on inputs that change from run to run (and between two shapes, so plans are
// rebuilt), every output checked against a single-threaded run of the same input. Built into
// the main test binary and, by tools/test.sh, under ThreadSanitizer (tools/tsan.sh).
//
// NNX_STRESS_THREADS / NNX_STRESS_RUNS override the 8 x 200 (e.g. for a longer soak).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "examples/embed/yolo_head.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  int n = std::atoi(v);
  return n > 0 ? n : fallback;
}

// A deterministic input per index: two shapes alternate, values differ for every index.
Tensor make_input(int index) {
  Shape shape = index % 2 == 0 ? Shape{1, 3, 48, 64} : Shape{1, 3, 32, 48};
  Tensor t = Tensor::empty(shape);
  std::mt19937 rng(uint32_t(1000 + index));
  std::normal_distribution<float> dist(0.f, 1.f);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

TEST(ConcurrencyStress, EightExecutorsOverOneModelMatchASingleThreadedRun) {
  fs::path folder = fs::path(NNX_FIXTURE_DIR) / "models" / "seed";
  std::string arch = (folder / "seed.json").string(), weights = (folder / "seed.pth").string();
  if (!fs::exists(arch)) {
    // Without the PyTorch fixtures, the example network with PyTorch's default initialisation.
    arch = std::string(NNX_SOURCE_DIR) + "/examples/seed/seed.json";
    weights.clear();
  }
  example::register_yolo_head();
  Model model = load(arch, weights);

  const int num_threads = env_int("NNX_STRESS_THREADS", 8);
  const int runs = env_int("NNX_STRESS_RUNS", 200);
  // `runs` distinct inputs; thread t visits all of them in its own order.
  std::vector<Tensor> inputs;
  for (int i = 0; i < runs; ++i) inputs.push_back(make_input(i));

  std::vector<std::vector<Tensor>> expected;
  {
    Executor single(model, {.threads = 1});
    for (const Tensor& x : inputs) expected.push_back(single(x));
  }

  std::atomic<int> mismatches{0}, done{0};
  std::vector<std::string> first_error(static_cast<size_t>(num_threads));
  std::vector<std::thread> threads;
  for (int t = 0; t < num_threads; ++t) {
    threads.emplace_back([&, t] {
      try {
        // Half of the Executors split ops over two threads of their own pool as well.
        Executor net(model, {.threads = t % 2 == 0 ? 1 : 2});
        for (int r = 0; r < runs; ++r) {
          int index = (r * 7 + t * 13) % runs;
          if (std::gcd(7, runs) != 1) index = (r + t * 13) % runs;
          std::vector<Tensor> out = net(inputs[size_t(index)]);
          const auto& want = expected[size_t(index)];
          bool same = out.size() == want.size();
          for (size_t k = 0; same && k < out.size(); ++k) {
            // One pool thread or two: the split never changes a sum's order, so bit for bit.
            same = out[k].bitwise_equal(want[k]);
          }
          if (!same && mismatches.fetch_add(1) == 0)
            first_error[size_t(t)] = "thread " + std::to_string(t) + " run " + std::to_string(r) +
                                     " (input " + std::to_string(index) +
                                     ") differs from the single-threaded run";
          done.fetch_add(1);
        }
      } catch (const std::exception& e) {
        first_error[size_t(t)] = "thread " + std::to_string(t) + ": " + e.what();
        mismatches.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : first_error) EXPECT_TRUE(e.empty()) << e;
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(done.load(), num_threads * runs);
}

}  // namespace
}  // namespace nnx
