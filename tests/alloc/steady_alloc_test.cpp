// Steady-state inference makes no heap allocation of its own: after the first runs with given
// shapes (which plan, pack weights and grow the kernels' thread-local buffers), a run of any
// network allocates exactly what a one-node network allocates, which is what Executor::run's
// interface itself needs (the returned vector and output tensors); run into the outputs of its
// previous call, it allocates nothing. A per-node or per-kernel allocation (a std::function holding
// a lambda, a vector per call) makes the count grow with the network and fails here.
//
// Counted through a replacement of the global operator new, so this folder is an executable of
// its own; memory the allocators take from aligned_alloc is not counted (the arena and the
// kernels' buffers are reused across runs). The sanitizer builds supply their own operator new:
// there the test is skipped (NNX_SANITIZED_TESTS: the ASan build compiles this file without
// ASan's instrumentation, so __SANITIZE_ADDRESS__ alone does not say it).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "importer/json.h"
#include "nnx/nnx.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(NNX_SANITIZED_TESTS)
#define NNX_COUNT_ALLOCATIONS 0
#else
#define NNX_COUNT_ALLOCATIONS 1
#endif

namespace {
std::atomic<long> g_allocations{0};
}

#if NNX_COUNT_ALLOCATIONS
// GCC takes these deletes' free() for a mismatch with the operator new it knows.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t align) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = std::size_t(align);
  if (void* p = std::aligned_alloc(a, (size + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
#pragma GCC diagnostic pop
#endif

namespace nnx {
namespace {

namespace fs = std::filesystem;

// Heap allocations of each call of `run` after `warmup` calls, until `clean` consecutive calls
// have made exactly `expected` (or `limit` calls): the list of counts. Which pool thread takes
// which chunk of a loop varies from run to run, so a thread may first meet a kernel's thread-local
// buffer, and grow it, a few runs in: a one-time allocation that this waits out, while one made
// by every run never gives the clean runs.
template <typename Run>
std::vector<long> counts_until_clean(Run&& run, int warmup, long expected, int clean = 3,
                                     int limit = 30) {
  for (int k = 0; k < warmup; ++k) run();
  std::vector<long> counts;
  for (int streak = 0; streak < clean && int(counts.size()) < limit;) {
    const long before = g_allocations.load();
    run();
    counts.push_back(g_allocations.load() - before);
    streak = counts.back() == expected ? streak + 1 : 0;
  }
  return counts;
}

bool ends_clean(const std::vector<long>& counts, long expected) {
  return counts.size() >= 3 &&
         std::all_of(counts.end() - 3, counts.end(), [&](long c) { return c == expected; });
}

std::string text(const std::vector<long>& counts) {
  std::string s;
  for (long c : counts) s += (s.empty() ? "" : " ") + std::to_string(c);
  return s;
}

Tensor pattern(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(std::sin(0.37 * double(i)));
  return t;
}

TEST(SteadyState, RunsAllocateNoMoreThanAOneNodeNetwork) {
  if (!NNX_COUNT_ALLOCATIONS) GTEST_SKIP() << "sanitizer build: operator new is the sanitizer's";
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: export fixtures not generated";
  const fs::path root = fs::path(NNX_FIXTURE_DIR) / "export";
  if (fs::exists(root / "SKIPPED")) GTEST_SKIP() << "export fixtures skipped (see " << root << ")";

  for (int threads : {1, 2}) {
    Model one = load_memory(
        R"json({"auto_connect": true, "inputs_channels": [3], "outputs_channels": [3], "outputs": [[1, 0, 0]], "layers": [["ReLU()"]]})json",
        "", {}, "one_node.json");
    for (int64_t batch : {1, 3}) {
      const std::vector<Tensor> inputs = {pattern(Shape{batch, 3, 224, 224})};
      Executor base(one, {.threads = threads});
      // The one-node network's count: the fewest of five calls after two warm-up calls (a
      // thread's first use of something on one call can only add to it; one call alone, as
      // before, failed the whole test twice in a session's full ctest runs, no message kept).
      const std::vector<long> base_counts =
          counts_until_clean([&] { std::vector<Tensor> out = base(inputs); }, 2, -1, 1, 5);
      const long expected = *std::min_element(base_counts.begin(), base_counts.end());
      int cases = 0;
      for (const char* name :
           {"resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1"}) {
        const fs::path folder = root / name;
        if (!fs::exists(folder / "case.json")) continue;
        const json::Value meta = json::parse_file((folder / "case.json").string());
        Model model = load((folder / meta.find("arch")->str).string(),
                           (folder / meta.find("weights")->str).string());
        Executor net(model, {.threads = threads});
        const std::vector<long> counts =
            counts_until_clean([&] { std::vector<Tensor> out = net(inputs); }, 2, expected);
        EXPECT_TRUE(ends_clean(counts, expected))
            << name << ", batch " << batch << ", " << threads
            << " thread(s): heap allocations in each run (" << text(counts) << "), against "
            << expected << " for a one-node network";
        // Into the outputs of the previous call: nothing at all.
        std::vector<Tensor> into(1);
        const std::vector<long> into_counts =
            counts_until_clean([&] { net.run(inputs, into); }, 2, 0);
        EXPECT_TRUE(ends_clean(into_counts, 0))
            << name << ", batch " << batch << ", " << threads
            << " thread(s): heap allocations in each run into given outputs (" << text(into_counts)
            << ")";
        EXPECT_TRUE(into[0].bitwise_equal(net(inputs)[0])) << name;
        ++cases;
      }
      EXPECT_GE(cases, 3) << "export fixtures missing under " << root;
    }
  }
}

}  // namespace
}  // namespace nnx
