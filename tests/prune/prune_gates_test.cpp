// Structured pruning by the learned Pruner gates, on the original package's cases
// (python/fixture_prune.py): the expected Conv2d channels, no Pruner left, and outputs equal
// to the gated network's (PyTorch, through nnx_ref) within 1e-5, also after a save and load.
#include <gtest/gtest.h>

#include <filesystem>

#include "graph/graph.h"
#include "importer/json.h"
#include "nnx/executor.h"
#include "nnx/npy.h"
#include "nnx/prune.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

fs::path case_dir(const std::string& name) {
  return fs::path(NNX_FIXTURE_DIR) / "prune" / name;
}

std::vector<std::pair<int64_t, int64_t>> convs(const Model& m) {
  std::vector<std::pair<int64_t, int64_t>> out;
  const Graph& g = m.graph();
  for (int n : g.schedule) {
    const Layer& layer = g.layer_of(n);
    if (layer.op->type() != "Conv2d") continue;
    const Node& node = g.nodes[size_t(n)];
    out.push_back({g.nodes[size_t(node.inputs[0].node)].out_channels[size_t(node.inputs[0].port)],
                   node.out_channels[0]});
  }
  return out;
}

class GatesCase : public ::testing::TestWithParam<std::string> {};

TEST_P(GatesCase, ExpectedChannelsAndGatedOutputs) {
  fs::path dir = case_dir(GetParam());
  ASSERT_TRUE(fs::exists(dir / "prune.json")) << dir;
  Model model = load((dir / "model.json").string(), (dir / "model.pth").string());
  Tensor x = read_npy((dir / "in0.npy").string());
  Tensor ref = read_npy((dir / "ref0.npy").string());

  ChannelPruneOptions opt;
  opt.score = ChannelScore::gates;
  opt.input_shapes = {x.shape()};
  ChannelPruneResult r = prune_channels(model, opt);

  json::Value expect = json::parse_file((dir / "prune.json").string());
  std::vector<std::pair<int64_t, int64_t>> want;
  for (auto& c : expect.find("convs")->array)
    want.push_back({c.array[0].integer, c.array[1].integer});
  EXPECT_EQ(convs(r.model), want);
  for (const Layer& layer : r.model.graph().layers)
    EXPECT_EQ(layer.op->type().find("Pruner"), std::string::npos) << layer.call_text;

  Executor net(r.model);
  Tensor got = net(x)[0];
  EXPECT_LE(testing_util::relative_error(got, ref), 1e-5);

  // The two-file form `nnx convert` writes loads back to the same numbers.
  testing_util::TempDir tmp;
  r.model.save(tmp.file("pruned.json"));
  Model back = load(tmp.file("pruned.json"), tmp.file("pruned.pth"));
  Executor net2(back);
  EXPECT_LE(testing_util::relative_error(net2(x)[0], ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(OriginalPackage, GatesCase,
                         ::testing::Values("chain", "residual", "nested_residual", "cat", "all_off",
                                           "fold_flatten_linear", "all_or_nothing"));

// The fully gated branch leaves a Constant node as an extra input of its Add.
TEST(GatesPrune, GatedOffBranchKeepsItsConstantAtTheAdd) {
  fs::path dir = case_dir("residual");
  Model model = load((dir / "model.json").string(), (dir / "model.pth").string());
  ChannelPruneOptions opt;
  opt.input_shapes = {Shape{2, 4, 8, 8}};
  ChannelPruneResult r = prune_channels(model, opt);
  const Graph& g = r.model.graph();
  bool found = false;
  for (int n : g.schedule) {
    if (g.layer_of(n).op->type() != "Add") continue;
    for (const PortRef& in : g.nodes[size_t(n)].inputs) {
      // Constant, possibly through the BatchNorm that followed the branch's last conv.
      int v = in.node;
      while (v > 0 && g.layer_of(v).op->type() == "BatchNorm2d")
        v = g.nodes[size_t(v)].inputs[0].node;
      if (v > 0 && g.layer_of(v).op->type() == "Constant") found = true;
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace nnx
