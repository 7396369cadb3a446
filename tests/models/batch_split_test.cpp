// The Executor's batch split (ExecutorOptions::batch_split): on two or more threads a batch whose
// network keeps samples apart runs as parts, each whole on one thread, with PyTorch's numbers;
// a network with an op that mixes samples (or a shape that names the batch), a batch smaller
// than the threads, one thread, a profile or the option off run the batch whole.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "examples/embed/yolo_head.h"
#include "importer/json.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

struct Case {
  Model model;
  std::vector<Tensor> inputs, refs;
  double tol = 1e-4;
};

Case read_case(const std::string& name) {
  const fs::path folder = fs::path(NNX_FIXTURE_DIR) / "models" / name;
  const json::Value meta = json::parse_file((folder / "case.json").string());
  example::register_yolo_head();
  Case c;
  std::string weights;
  if (const json::Value* w = meta.find("weights"); w && w->is_string())
    weights = (folder / w->str).string();
  c.model = load((folder / meta.find("arch")->str).string(), weights);
  for (auto& in : meta.find("inputs")->array)
    c.inputs.push_back(read_npy((folder / in.str).string()));
  for (auto& ref : meta.find("refs")->array)
    c.refs.push_back(read_npy((folder / ref.str).string()));
  if (const json::Value* t = meta.find("tol")) c.tol = t->number;
  return c;
}

// `t` repeated `times` times along dimension 0.
Tensor repeat_batch(const Tensor& t, int64_t times) {
  Shape shape = t.shape();
  const int64_t n = shape[0];
  shape[0] = n * times;
  Tensor out = Tensor::empty(shape, t.dtype());
  for (int64_t k = 0; k < times; ++k) out.slice(0, k * n, (k + 1) * n).copy_from(t);
  return out;
}

bool skip_without_fixtures() {
  return std::string(NNX_PYTHON).empty() ||
         !fs::exists(fs::path(NNX_FIXTURE_DIR) / "models" / "seed_b2" / "case.json");
}

// PyTorch's outputs for a batch of 2, the same 2 samples repeated to batches of 2, 6 and 8: on 2
// and 3 threads, in parts (checked), each part's samples against PyTorch's.
TEST(BatchSplit, SeparableNetworksRunInPartsWithPyTorchsNumbers) {
  if (skip_without_fixtures())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  for (const char* name : {"seed_b2", "residual_in_place"}) {
    Case c = read_case(name);
    ASSERT_EQ(c.inputs[0].shape()[0], 2) << name;
    for (int threads : {2, 3})
      for (int64_t times : {1, 3, 4}) {
        std::vector<Tensor> inputs;
        for (const Tensor& in : c.inputs) inputs.push_back(repeat_batch(in, times));
        Executor net(c.model, {.threads = threads});
        const std::vector<Tensor> out = net(inputs);
        const int64_t batch = 2 * times;
        const std::string what = std::string(name) + ", batch " + std::to_string(batch) + ", " +
                                 std::to_string(threads) + " threads";
        if (batch >= threads)
          EXPECT_GE(net.batch_parts(), threads) << what;
        else
          EXPECT_EQ(net.batch_parts(), 0) << what;
        ASSERT_EQ(out.size(), c.refs.size()) << what;
        for (size_t k = 0; k < out.size(); ++k)
          for (int64_t r = 0; r < times; ++r)
            EXPECT_LE(testing_util::relative_error(out[k].slice(0, 2 * r, 2 * r + 2), c.refs[k]),
                      c.tol)
                << what << ", output " << k << ", samples " << 2 * r << "-" << 2 * r + 1;
        // The same numbers run whole, to float rounding; and a second split run gives the same
        // bits (its parts' plans and arenas reused).
        Executor whole(c.model, {.threads = threads, .batch_split = false});
        const std::vector<Tensor> ref = whole(inputs);
        EXPECT_EQ(whole.batch_parts(), 0);
        const std::vector<Tensor> again = net(inputs);
        for (size_t k = 0; k < out.size(); ++k) {
          EXPECT_LE(testing_util::relative_error(out[k], ref[k]), 1e-5) << what;
          EXPECT_TRUE(again[k].bitwise_equal(out[k])) << what;
        }
      }
  }
}

// Ops whose outputs mix samples, or a shape that names the batch: the batch runs whole, with the
// numbers of an Executor that never splits.
TEST(BatchSplit, NetworksThatMixSamplesRunWhole) {
  const std::string head =
      R"json({"auto_connect": true, "inputs_channels": [3], "outputs_channels": [4], "outputs": [[3, 0, 0]], "layers": [["torch.nn.Conv2d(3,4,3,padding=1)", 4], ["torch.nn.ReLU()"], )json";
  const std::vector<std::string> mixing = {
      R"json(["torch.nn.Softmax(dim=0)"])json",
      R"json(["nnx.Permute(dims=(1, 0, 2, 3))"])json",
      R"json(["nnx.Reshape(shape=(4, -1, 5, 6))"])json",
      R"json(["nnx.Mean(dim=(0,), keepdim=True)"])json",
  };
  const Tensor input = testing_util::uniform_tensor(Shape{4, 3, 5, 6}, 7);
  for (const std::string& layer : mixing) {
    Model model = load_memory(head + layer + "]}", "", {}, "mixing.json");
    Executor net(model, {.threads = 2});
    Executor whole(model, {.threads = 2, .batch_split = false});
    const Tensor out = net(input)[0], ref = whole(input)[0];
    EXPECT_EQ(net.batch_parts(), 0) << layer;
    EXPECT_TRUE(out.bitwise_equal(ref)) << layer;
  }
  // The same network with a separable last layer is split: the test above can fail.
  Model separable =
      load_memory(head + R"json(["torch.nn.Softmax(dim=1)"]]})json", "", {}, "separable.json");
  Executor net(separable, {.threads = 2});
  net(input);
  EXPECT_EQ(net.batch_parts(), 4);
}

TEST(BatchSplit, SmallBatchesOneThreadProfilesAndTheOptionOffRunWhole) {
  Model model = load_memory(
      R"json({"auto_connect": true, "inputs_channels": [3], "outputs_channels": [4], "outputs": [[2, 0, 0]], "layers": [["torch.nn.Conv2d(3,4,3,padding=1)", 4], ["torch.nn.ReLU()"]]})json",
      "", {}, "small.json");
  const Tensor one = testing_util::uniform_tensor(Shape{1, 3, 8, 8}, 1),
               four = testing_util::uniform_tensor(Shape{4, 3, 8, 8}, 2);
  Executor two_threads(model, {.threads = 2});
  two_threads(one);
  EXPECT_EQ(two_threads.batch_parts(), 0);
  two_threads(four);
  EXPECT_EQ(two_threads.batch_parts(), 4);
  const int64_t split_flops = two_threads.plan_stats().flops;
  two_threads(one);  // whole again after a split run
  EXPECT_EQ(two_threads.batch_parts(), 0);
  Executor one_thread(model, {.threads = 1});
  one_thread(four);
  EXPECT_EQ(one_thread.batch_parts(), 0);
  Executor profiled(model, {.threads = 2, .profile = true});
  profiled(four);
  EXPECT_EQ(profiled.batch_parts(), 0);
  EXPECT_FALSE(profiled.last_profile().empty());
  Executor off(model, {.threads = 2, .batch_split = false});
  off(four);
  EXPECT_EQ(off.batch_parts(), 0);
  // A split run's plan_stats: the whole batch's flops.
  EXPECT_GT(split_flops, 0);
  EXPECT_EQ(split_flops, one_thread.plan_stats().flops);
}

}  // namespace
}  // namespace nnx
