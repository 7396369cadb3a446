// A batch in parts (ExecutorOptions::batch_split) on a pool of threads, each part's Executor
// planning and running on its own thread over one shared model: the numbers of a one-thread run,
// the same bits run after run. In the runtime tests, which tools/tsan.sh runs under
// ThreadSanitizer (the parts' first runs fold BatchNorm and prepare weights concurrently).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

TEST(BatchSplitThreads, PartsOnAPoolMatchOneThread) {
  const char* description = R"json({
    "auto_connect": true, "inputs_channels": [3], "outputs_channels": [5], "outputs": [[9, 0, 0]],
    "layers": [
      ["torch.nn.Conv2d(3,8,3,padding=1,bias=False)", 8],
      ["torch.nn.BatchNorm2d(8)"],
      ["torch.nn.ReLU()"],
      ["torch.nn.MaxPool2d(2)"],
      ["torch.nn.Conv2d(8,16,3,padding=1)", 16],
      ["torch.nn.ReLU()"],
      ["torch.nn.AdaptiveAvgPool2d(1)"],
      ["torch.nn.Flatten()"],
      ["torch.nn.Linear(16,5)", 5]
    ]})json";
  Model model = load_memory(description, "", {}, "split.json");
  struct Run {
    int threads;
    int64_t batch;
  };
  for (const Run& r : {Run{2, 4}, Run{2, 6}, Run{3, 8}, Run{4, 4}}) {
    const Tensor input = testing_util::uniform_tensor(Shape{r.batch, 3, 20, 24}, uint64_t(r.batch));
    Executor one(model, {.threads = 1});
    const Tensor ref = one(input)[0];
    Executor net(model, {.threads = r.threads});
    const Tensor first = net(input)[0];
    const std::string what =
        "batch " + std::to_string(r.batch) + ", " + std::to_string(r.threads) + " threads";
    EXPECT_GT(net.batch_parts(), 0) << what;
    EXPECT_LE(testing_util::relative_error(first, ref), 1e-5) << what;
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(net(input)[0].bitwise_equal(first)) << what;
  }
}

}  // namespace
}  // namespace nnx
