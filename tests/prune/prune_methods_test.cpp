// Structured pruning by score (l1, l2, slim): tied channels go together (residual Add, Cat
// offsets, Flatten into Linear, depthwise convolutions, shared layers), inputs and outputs
// keep their channels; magnitude masks are exact.
#include <gtest/gtest.h>

#include <cmath>

#include "graph/graph.h"
#include "nnx/executor.h"
#include "nnx/prune.h"
#include "test_util.h"

namespace nnx {
namespace {

Model from_text(const std::string& text) {
  return load_memory(text, "", {}, "test.json");
}

std::vector<int64_t> out_channels(const Model& m, const std::string& type) {
  std::vector<int64_t> out;
  const Graph& g = m.graph();
  for (int n : g.schedule)
    if (g.layer_of(n).op->type() == type) out.push_back(g.nodes[size_t(n)].out_channels[0]);
  return out;
}

Tensor run(const Model& m, const Shape& s) {
  Tensor x = Tensor::full(s, 0.5);
  Executor net(m);
  return net(x)[0];
}

TEST(ScorePrune, DigitsResNetHalvesEveryTiedGroup) {
  Model m = load(std::string(NNX_SOURCE_DIR) + "/examples/digits/digits_resnet.json");
  for (ChannelScore s : {ChannelScore::l1, ChannelScore::l2, ChannelScore::slim}) {
    ChannelPruneOptions opt;
    opt.score = s;
    opt.amount = 0.5;
    opt.input_shapes = {Shape{1, 1, 8, 8}};
    ChannelPruneResult r = prune_channels(m, opt);
    EXPECT_EQ(out_channels(r.model, "Conv2d"), (std::vector<int64_t>{16, 16, 16, 16, 16, 32, 32}));
    EXPECT_EQ(out_channels(r.model, "Linear"), (std::vector<int64_t>{10}));
    // Flatten gives 2x2 features per channel: the Linear keeps 32 channels' blocks.
    const Graph& g = r.model.graph();
    for (const Layer& layer : g.layers)
      if (layer.op->type() == "Linear") {
        EXPECT_EQ(layer.op->find_param("weight")->value.size(1), 128);
      }
    EXPECT_EQ(run(r.model, Shape{2, 1, 8, 8}).shape(), (Shape{2, 10}));
  }
}

TEST(ScorePrune, GlobalRankingRemovesTheRequestedShare) {
  Model m = load(std::string(NNX_SOURCE_DIR) + "/examples/digits/digits_resnet.json");
  ChannelPruneOptions opt;
  opt.score = ChannelScore::slim;
  opt.amount = 0.5;
  opt.global = true;
  opt.input_shapes = {Shape{1, 1, 8, 8}};
  ChannelPruneResult r = prune_channels(m, opt);
  int64_t before = 0, after = 0;
  for (const ChannelCount& c : r.channels)
    if (c.type == "BatchNorm2d") {
      before += c.before;
      after += c.after;
    }
  EXPECT_GT(after, 0);
  EXPECT_LT(after, before);
  EXPECT_EQ(run(r.model, Shape{1, 1, 8, 8}).shape(), (Shape{1, 10}));
}

// The smallest filters go; what stays computes what it computed before (checked on a network
// whose removed filters are zero, so that the result is unchanged).
TEST(ScorePrune, ZeroFiltersGoAndTheRestIsUnchanged) {
  Model m = from_text(R"J({"inputs_channels": [3], "outputs_channels": [4], "outputs": [[-1, 0, 0]],
    "layers": [["Conv2d(3, 8, 3, padding=1)", [[3], [8]], [[-1, 0]]],
               ["ReLU()", [[8], [8]], [[-1, 0]]],
               ["Conv2d(8, 8, 3, padding=1, groups=8)", [[8], [8]], [[-1, 0]]],
               ["Conv2d(8, 4, 1)", [[8], [4]], [[-1, 0]]]]})J");
  Model z = m.clone();
  // Zero filters 1, 3, 5, 7 of the first conv (and their biases) and of the depthwise conv
  // tied to it: they are the smallest. The depthwise biases stay: those constants must be
  // folded into the 1x1 conv's bias.
  const Graph& g = z.graph();
  for (auto [layer, name] : {std::pair{0, "weight"}, {0, "bias"}, {2, "weight"}}) {
    Tensor w = g.layers[size_t(layer)].op->find_param(name)->value;
    int64_t per = w.numel() / 8;
    for (int64_t o = 1; o < 8; o += 2)
      for (int64_t q = 0; q < per; ++q) w.data<float>()[o * per + q] = 0.f;
  }
  Tensor ref = run(z, Shape{1, 3, 6, 6});
  ChannelPruneOptions opt;
  opt.score = ChannelScore::l1;
  opt.amount = 0.5;
  opt.input_shapes = {Shape{1, 3, 6, 6}};
  ChannelPruneResult r = prune_channels(z, opt);
  EXPECT_EQ(out_channels(r.model, "Conv2d"), (std::vector<int64_t>{4, 4, 4}));
  // The depthwise conv followed its input: 4 groups.
  EXPECT_NE(r.model.graph().layers[2].op->repr().find("groups=4"), std::string::npos)
      << r.model.graph().layers[2].op->repr();
  EXPECT_LE(testing_util::relative_error(run(r.model, Shape{1, 3, 6, 6}), ref), 1e-6);
}

TEST(ScorePrune, SharedLayerStaysShared) {
  Model m = from_text(R"J({"inputs_channels": [3], "outputs_channels": [2], "outputs": [[-1, 0, 0]],
    "layers": [[[1], "Conv2d(3, 8, 3, padding=1)", [[3], [8]]],
               [[2, 4], "Conv2d(8, 8, 3, padding=1)", [[8], [8]]],
               [[3], "ReLU()", [[8], [8]]],
               [[5], "Conv2d(8, 2, 1)", [[8], [2]]]],
    "connections": [[0, 0, 1, 0], [1, 0, 2, 0], [2, 0, 3, 0], [3, 0, 4, 0], [4, 0, 5, 0]]})J");
  ChannelPruneOptions opt;
  opt.score = ChannelScore::l2;
  opt.amount = 0.5;
  opt.input_shapes = {Shape{1, 3, 6, 6}};
  ChannelPruneResult r = prune_channels(m, opt);
  const Graph& g = r.model.graph();
  bool shared = false;
  for (const Layer& layer : g.layers) shared = shared || layer.nodes.size() == 2;
  EXPECT_TRUE(shared);
  EXPECT_EQ(out_channels(r.model, "Conv2d"), (std::vector<int64_t>{4, 4, 4, 2}));
  EXPECT_EQ(run(r.model, Shape{1, 3, 6, 6}).shape(), (Shape{1, 2, 6, 6}));
}

TEST(ScorePrune, AmountOutOfRangeIsRefused) {
  Model m = load(std::string(NNX_SOURCE_DIR) + "/examples/digits/digits_resnet.json");
  ChannelPruneOptions opt;
  opt.score = ChannelScore::l1;
  opt.amount = 1.5;
  EXPECT_THROW(prune_channels(m, opt), Error);
}

TEST(MagnitudePrune, ExactShareOfZerosPerLayerAndGlobal) {
  Model m = load(std::string(NNX_SOURCE_DIR) + "/examples/digits/digits_resnet.json");
  for (bool global : {false, true}) {
    std::vector<WeightMask> masks;
    Model p = prune_magnitude(m, {0.9, global}, &masks);
    int64_t w = 0, z = 0;
    for (const LayerSparsity& s : sparsity_report(p)) {
      if (!global) {
        EXPECT_EQ(s.zeros, std::llround(0.9 * double(s.weights))) << s.layer;
      }
      w += s.weights;
      z += s.zeros;
    }
    EXPECT_EQ(z, std::llround(0.9 * double(w)));
    EXPECT_FALSE(masks.empty());
    // The original is untouched.
    for (const LayerSparsity& s : sparsity_report(m)) EXPECT_EQ(s.zeros, 0) << s.layer;
  }
  EXPECT_DOUBLE_EQ(cubic_sparsity(0, 0.9, 0, 100), 0.0);
  EXPECT_DOUBLE_EQ(cubic_sparsity(0, 0.9, 100, 100), 0.9);
  EXPECT_NEAR(cubic_sparsity(0, 0.9, 50, 100), 0.9 * (1 - 0.125), 1e-12);
}

}  // namespace
}  // namespace nnx
