// Inference-time fusion (graph/fusion.h): fused chains give the unfused outputs to float
// rounding, run fewer nodes, and leave alone what must not fuse: a convolution read elsewhere,
// a BatchNorm with batch statistics, a network output inside a chain, a model being trained.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "examples/embed/yolo_head.h"
#include "graph/fusion.h"
#include "graph/graph.h"
#include "graph/planner.h"
#include "kernels/cpu/pointwise_conv.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {

// GoogleTest prints parameters with this rather than as raw bytes.
void PrintTo(const Shape& shape, std::ostream* os) {
  *os << shape.str();
}

namespace {

using testing_util::relative_error;

// Node k is layer k. Chains: 1-2-3 (im2col Conv+BN+ReLU), 4-5-6 (Winograd at 64x64, no bias,
// ReLU6), 7-8 (Add+ReLU), 9 is read by 10 and 12 (no chain), 13-14 BN without running stats
// (no fold, so no chain), 16-17 (depthwise Conv+BN, 17 a network output: 18 stays alone),
// 19-20-21 (strided Conv+BN+SiLU), 22-23 (pointwise Conv+LeakyReLU), 24-25 (Winograd Conv+ReLU
// at 64x64, reading node 12).
const char* kDescription = R"json({
  "auto_connect": true,
  "inputs_channels": [3],
  "outputs_channels": [8, 32, 16, 16],
  "outputs": [[17, 0, 0], [21, 0, 1], [23, 0, 2], [25, 0, 3]],
  "layers": [
    ["torch.nn.Conv2d(3,16,3,padding=1)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(16,16,3,padding=1,bias=False)", 16],
    ["torch.nn.BatchNorm2d(16, affine=False)"],
    ["torch.nn.ReLU6()"],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-4, 0]]],
    ["torch.nn.ReLU(inplace=True)"],
    ["torch.nn.Conv2d(16,16,1)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["torch.nn.ReLU()"],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-3, 0], [-1, 0]]],
    ["torch.nn.Conv2d(16,8,3,padding=1)", 8],
    ["torch.nn.BatchNorm2d(8, track_running_stats=False)"],
    ["torch.nn.LeakyReLU(0.1)"],
    ["torch.nn.Conv2d(8,8,3,padding=1,groups=8)", 8],
    ["torch.nn.BatchNorm2d(8)"],
    ["torch.nn.Hardswish()"],
    ["torch.nn.Conv2d(8,32,3,stride=2,padding=1)", 32],
    ["torch.nn.BatchNorm2d(32)"],
    ["torch.nn.SiLU()"],
    ["torch.nn.Conv2d(32,16,1)", 16],
    ["torch.nn.LeakyReLU(0.2)"],
    ["torch.nn.Conv2d(16,16,3,padding=1)", [[16], [16]], [[-12, 0]]],
    ["torch.nn.ReLU()"]
  ]
})json";

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float lo, float hi) {
  Tensor t = Tensor::empty(shape);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// The description with BatchNorm statistics and affine parameters far from their defaults, so
// that folding them changes the weights.
Model fusion_model() {
  Model model = load_memory(kDescription, "", {}, "fusion.json");
  std::mt19937 rng(7);
  for (const Layer& layer : model.graph().layers) {
    if (layer.op->type() != "BatchNorm2d") continue;
    for (const Param& p : layer.op->params()) {
      if (p.name == "weight")
        layer.op->set_param(p.name, random_tensor(p.value.shape(), rng, 0.5f, 2));
      if (p.name == "bias" || p.name == "running_mean")
        layer.op->set_param(p.name, random_tensor(p.value.shape(), rng, -1, 1));
      if (p.name == "running_var")
        layer.op->set_param(p.name, random_tensor(p.value.shape(), rng, 0.1f, 3));
    }
  }
  return model;
}

std::vector<Tensor> run(const Model& model, const Tensor& input, bool fuse, int threads = 2,
                        std::vector<NodeTiming>* profile = nullptr) {
  Executor net(model, {.threads = threads, .profile = true, .fuse = fuse});
  std::vector<Tensor> out = net(input);
  out = net(input);  // the second run reuses the plan and the folded weights
  if (profile != nullptr) *profile = net.last_profile();
  return out;
}

// node -> the nodes fused into it, for the nodes that ran.
std::map<int, std::vector<int>> chains(const std::vector<NodeTiming>& profile) {
  std::map<int, std::vector<int>> c;
  for (const NodeTiming& t : profile) c[t.node] = t.fused;
  return c;
}

class Fusion : public ::testing::TestWithParam<Shape> {};

TEST_P(Fusion, MatchesUnfusedAndRunsFewerNodes) {
  Model model = fusion_model();
  std::mt19937 rng(1);
  Tensor input = random_tensor(GetParam(), rng, -2, 2);
  std::vector<NodeTiming> fused_profile, plain_profile;
  std::vector<Tensor> fused = run(model, input, true, 2, &fused_profile);
  std::vector<Tensor> plain = run(model, input, false, 2, &plain_profile);
  ASSERT_EQ(fused.size(), plain.size());
  for (size_t k = 0; k < fused.size(); ++k)
    EXPECT_LE(relative_error(fused[k], plain[k]), 1e-5) << "output " << k;

  EXPECT_EQ(plain_profile.size(), 25u);
  for (const NodeTiming& t : plain_profile) EXPECT_TRUE(t.fused.empty());
  auto c = chains(fused_profile);
  const std::map<int, std::vector<int>> expected = {
      {1, {2, 3}}, {4, {5, 6}}, {7, {8}},       {9, {}},    {10, {}},
      {11, {}},    {12, {}},    {13, {}},       {14, {}},   {15, {}},
      {16, {17}},  {18, {}},    {19, {20, 21}}, {22, {23}}, {24, {25}}};
  EXPECT_EQ(c, expected);
  EXPECT_EQ(fused_profile.size(), 15u);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Fusion,
                         ::testing::Values(Shape{1, 3, 64, 64},  // Winograd, bands, direct
                                           Shape{2, 3, 12, 12},  // image blocks
                                           Shape{1, 3, 7, 9}),   // odd edges
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           std::string name;  // "1x3x64x64"
                           for (int64_t d : info.param.vec())
                             name += (name.empty() ? "" : "x") + std::to_string(d);
                           return name;
                         });

// A 1x1 layer that reduces a deep input takes the panels on small planes and the band path on
// larger ones, so its folded weights must stay besides the panels: one Executor runs it at both
// sizes (a 14x14 input once read weights that the fusion had dropped and crashed).
TEST(FusionReduce, APointwiseReductionRunsOnEveryPlaneSize) {
  Model model = load_memory(R"json({
    "inputs_channels": [512], "outputs_channels": [128], "outputs": [[2, 0, 0]],
    "auto_connect": true,
    "layers": [["torch.nn.Conv2d(512,128,1,bias=False)", 128], ["torch.nn.BatchNorm2d(128)"],
               ["torch.nn.ReLU()"]]})json",
                            "", {}, "reduce.json");
  std::mt19937 rng(3);
  for (const Layer& layer : model.graph().layers)
    for (const Param& p : layer.op->params())
      if (p.name == "running_var" || p.name == "weight" || p.name == "bias")
        layer.op->set_param(p.name, random_tensor(p.value.shape(), rng, 0.5f, 2));
  Executor fused(model, {.threads = 2, .fuse = true});
  Executor plain(model, {.threads = 2, .fuse = false});
  for (const Shape& shape :
       {Shape{1, 512, 7, 7}, Shape{1, 512, 14, 14}, Shape{1, 512, 5, 5}, Shape{2, 512, 9, 9}}) {
    Tensor input = random_tensor(shape, rng, -2, 2);
    EXPECT_LE(relative_error(fused(input)[0], plain(input)[0]), 1e-5) << shape.str();
  }
}

TEST(FusionThreads, FusedRunsAreBitExactAcrossThreadCounts) {
  Model model = fusion_model();
  std::mt19937 rng(2);
  Tensor input = random_tensor(Shape{1, 3, 64, 64}, rng, -2, 2);
  std::vector<Tensor> one = run(model, input, true, 1);
  std::vector<Tensor> three = run(model, input, true, 3);
  for (size_t k = 0; k < one.size(); ++k) EXPECT_EQ(relative_error(one[k], three[k]), 0.0);
}

TEST(FusionThreads, ExecutorsOnManyThreadsShareOneModel) {
  Model model = fusion_model();
  std::mt19937 rng(3);
  Tensor input = random_tensor(Shape{1, 3, 32, 32}, rng, -2, 2);
  std::vector<std::vector<Tensor>> results(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i)
    threads.emplace_back([&, i] { results[i] = run(model, input, true, 1); });
  for (auto& t : threads) t.join();
  std::vector<Tensor> plain = run(model, input, false, 1);
  for (const auto& r : results)
    for (size_t k = 0; k < r.size(); ++k) {
      EXPECT_EQ(relative_error(r[k], results[0][k]), 0.0);
      EXPECT_LE(relative_error(r[k], plain[k]), 1e-5);
    }
}

TEST(FusionClone, ACopyThatMayBeTrainedFusesActivationsButFoldsNoBatchNorm) {
  Model model = fusion_model().clone();
  std::mt19937 rng(4);
  Tensor input = random_tensor(Shape{1, 3, 16, 16}, rng, -2, 2);
  std::vector<NodeTiming> profile;
  std::vector<Tensor> fused = run(model, input, true, 2, &profile);
  std::vector<Tensor> plain = run(model, input, false, 2);
  for (size_t k = 0; k < fused.size(); ++k) EXPECT_LE(relative_error(fused[k], plain[k]), 1e-5);
  auto c = chains(profile);
  EXPECT_EQ(c.at(7), std::vector<int>{8});
  EXPECT_EQ(c.at(22), std::vector<int>{23});
  EXPECT_TRUE(c.at(1).empty());
  EXPECT_TRUE(c.count(2));  // the BatchNorm ran as a node
}

// Residual Adds fused into the convolution before them: Winograd, 1x1 panel and strided
// convolutions, the convolution's value as either operand, an Add whose other operand is
// computed later in the schedule (not fused: the later convolution takes it instead), and a
// broadcasting Add (the convolution into a buffer of its own, then the Add).
const char* kResidualDescription = R"json({
  "auto_connect": true,
  "inputs_channels": [3],
  "outputs_channels": [16],
  "outputs": [[19, 0, 0]],
  "layers": [
    ["torch.nn.Conv2d(3,16,3,padding=1)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(16,16,3,padding=1,bias=False)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-3, 0]]],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(16,16,1)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-3, 0], [-1, 0]]],
    ["torch.nn.Conv2d(16,16,3,stride=2,padding=1)", 16],
    ["torch.nn.Conv2d(16,16,1,stride=2)", [[16], [16]], [[-2, 0]]],
    ["torch.nn.BatchNorm2d(16)"],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-3, 0], [-1, 0]]],
    ["torch.nn.ReLU6()"],
    ["torch.nn.AdaptiveAvgPool2d(1)"],
    ["torch.nn.Conv2d(16,16,1)", [[16], [16]], [[-2, 0]]],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-2, 0]]],
    ["torch.nn.SiLU()"]
  ]
})json";

// BatchNorm2d means and shifts away from their defaults, so that folding them shows.
void shift_batchnorms(const Model& model, std::mt19937& rng) {
  for (const Layer& layer : model.graph().layers)
    if (layer.op->type() == "BatchNorm2d")
      for (const Param& p : layer.op->params())
        if (p.name == "running_mean" || p.name == "bias")
          layer.op->set_param(p.name, random_tensor(p.value.shape(), rng, -1, 1));
}

// A one-output model fused at each of `shapes`: its output within float rounding of the
// unfused run's, the same bits on one thread as on two, and the chains `expected`.
void expect_fused(const Model& model, std::mt19937& rng, std::initializer_list<Shape> shapes,
                  const std::map<int, std::vector<int>>& expected) {
  for (const Shape& shape : shapes) {
    Tensor input = random_tensor(shape, rng, -2, 2);
    std::vector<NodeTiming> profile;
    std::vector<Tensor> fused = run(model, input, true, 2, &profile);
    std::vector<Tensor> one_thread = run(model, input, true, 1);
    std::vector<Tensor> plain = run(model, input, false, 2);
    EXPECT_LE(relative_error(fused[0], plain[0]), 1e-5) << shape.str();
    EXPECT_EQ(relative_error(fused[0], one_thread[0]), 0.0) << shape.str();
    EXPECT_EQ(chains(profile), expected) << shape.str();
  }
}

TEST(FusionResidual, AddsFuseIntoTheConvolutionBeforeThem) {
  Model model = load_memory(kResidualDescription, "", {}, "residual.json");
  std::mt19937 rng(11);
  shift_batchnorms(model, rng);
  expect_fused(model, rng, {Shape{1, 3, 64, 64}, Shape{2, 3, 17, 23}},
               {{1, {2, 3}},
                {4, {5, 6, 7}},
                {8, {9, 10}},
                {11, {}},
                {12, {13, 14, 15}},
                {16, {}},
                {17, {18, 19}}});
}

// Nodes that are the identity at inference do not end a chain: Dropout and Identity between a
// convolution, its BatchNorm and its activation, StochasticDepth and Dropout2d between a
// projection's BatchNorm and its residual Add (EfficientNet's blocks), a Dropout after the
// activation that two nodes read (12: the last of chain 6, the residual of chain 13).
const char* kPassThroughDescription = R"json({
  "auto_connect": true,
  "inputs_channels": [3],
  "outputs_channels": [16],
  "outputs": [[14, 0, 0]],
  "layers": [
    ["torch.nn.Conv2d(3,16,3,padding=1)", 16],
    ["torch.nn.modules.dropout.Dropout(p=0.2, inplace=True)"],
    ["torch.nn.BatchNorm2d(16)"],
    ["torch.nn.Identity()"],
    ["torch.nn.SiLU()"],
    ["torch.nn.Conv2d(16,16,1,bias=False)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["nnx.StochasticDepth(p=0.1, mode=row)"],
    ["torch.nn.Dropout2d(0.5)"],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-5, 0]]],
    ["torch.nn.ReLU()"],
    ["torch.nn.Dropout(0.3)"],
    ["torch.nn.Conv2d(16,16,3,padding=1)", 16],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-2, 0]]]
  ]
})json";

TEST(FusionPassThrough, IdentitiesAtInferenceAreAbsorbedIntoChains) {
  Model model = load_memory(kPassThroughDescription, "", {}, "pass_through.json");
  std::mt19937 rng(13);
  shift_batchnorms(model, rng);
  expect_fused(model, rng, {Shape{1, 3, 20, 20}, Shape{2, 3, 9, 11}},
               {{1, {2, 3, 4, 5}}, {6, {7, 8, 9, 10, 11, 12}}, {13, {14}}});
}

// Bottlenecks: node 3's value is the residual of chain 6-7-8-9 and read by nothing after it;
// node 9's is the residual of chain 12-13-14, whose SiLU the 1x1 tiles do not apply in their
// store; node 14's is read by chain 15-16-17's convolution itself.
const char* kInPlaceDescription = R"json({
  "auto_connect": true,
  "inputs_channels": [8],
  "outputs_channels": [16],
  "outputs": [[17, 0, 0]],
  "layers": [
    ["torch.nn.Conv2d(8,16,1)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(16,16,3,padding=1)", 16],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(16,16,1)", 16],
    ["torch.nn.BatchNorm2d(16)"],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-5, 0]]],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(16,16,3,padding=1)", 16],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(16,16,1)", 16],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-4, 0]]],
    ["torch.nn.SiLU()"],
    ["torch.nn.Conv2d(16,16,1)", 16],
    ["nn_executor.models.Add(num=2)", [[16, 16], [16]], [[-1, 0], [-2, 0]]],
    ["torch.nn.ReLU()"]
  ]
})json";

// A chain whose residual dies there writes its value over it (the 1x1 tiles read each residual
// element just before storing there) where its kernel allows: on 12x12 planes, and on 4x4 ones
// only in AVX2 builds (AVX-512 ones run such small planes on the channels-last GEMM, which adds
// the residual after its stores), never under a SiLU, nor over the convolution's own input. The
// numbers are the unfused run's either way.
TEST(FusionResidual, AResidualReadLastByItsChainHoldsTheChainsValue) {
  Model model = load_memory(kInPlaceDescription, "", {}, "in_place.json");
  std::mt19937 rng(12);
  shift_batchnorms(model, rng);
  const Graph& graph = model.graph();
  const std::shared_ptr<const nnx::Fusion> fusion = find_fusion(graph, true);
  ASSERT_TRUE(fusion->is_head(6) && fusion->is_head(12) && fusion->is_head(15));
  for (const Shape& shape : {Shape{2, 8, 12, 12}, Shape{1, 8, 4, 4}}) {
    // Builds without the in-place 1x1 tiles (portable ones) share nothing.
#if defined(NNX_POINTWISE_CONV) && defined(__AVX512F__)
    const bool shares = shape[2] == 12;
#elif defined(NNX_POINTWISE_CONV)
    const bool shares = true;
#else
    const bool shares = false;
#endif
    const TensorSpec spec{shape, DType::f32};
    const Plan fused = make_plan(graph, std::span(&spec, 1), fusion.get());
    const int x1 = fused.buffer[1][0], x2 = fused.buffer[6][0];
    EXPECT_EQ(x1 == x2, shares) << shape.str();
    EXPECT_NE(fused.buffer[12][0], x2) << shape.str();                   // SiLU after the Add
    EXPECT_NE(fused.buffer[15][0], fused.buffer[12][0]) << shape.str();  // its own input
    // Chain 6's value lives on in that buffer until chain 12's Add (step 4) reads it.
    if (shares) {
      EXPECT_EQ(fused.buffers[size_t(x1)].last_step, 4);
    }
    Tensor input = random_tensor(shape, rng, -2, 2);
    std::vector<Tensor> one = run(model, input, true, 1);
    std::vector<Tensor> two = run(model, input, true, 2);
    std::vector<Tensor> unfused = run(model, input, false, 2);
    EXPECT_LE(relative_error(two[0], unfused[0]), 1e-5) << shape.str();
    EXPECT_EQ(relative_error(two[0], one[0]), 0.0) << shape.str();
  }
}

// The example network with PyTorch's weights: its three Conv+BN+ReLU chains fuse with the
// MaxPool2d after each, and so does the plain Conv with its MaxPool (not the Add, whose reader is
// a Conv, nor the last Conv, read by the YOLO plugin); both ways agree with PyTorch's outputs.
TEST(FusionSeed, SeedNetworkFusesItsConvBatchNormReluChains) {
  const std::string dir = std::string(NNX_FIXTURE_DIR) + "/models/seed";
  if (!std::filesystem::exists(dir + "/seed.pth")) GTEST_SKIP() << "no seed fixture in " << dir;
  example::register_yolo_head();
  Model model = load(dir + "/seed.json", dir + "/seed.pth");
  Tensor input = read_npy(dir + "/in0.npy");
  std::vector<NodeTiming> profile;
  std::vector<Tensor> fused = run(model, input, true, 2, &profile);
  std::vector<Tensor> plain = run(model, input, false, 2);
  ASSERT_EQ(fused.size(), 2u);
  for (size_t k = 0; k < fused.size(); ++k) {
    Tensor ref = read_npy(dir + "/ref" + std::to_string(k) + ".npy");
    EXPECT_LE(relative_error(fused[k], plain[k]), 1e-5) << "output " << k;
    EXPECT_LE(relative_error(fused[k], ref), 1e-4) << "output " << k;
  }
  auto c = chains(profile);
  EXPECT_EQ(c.at(1), (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(c.at(5), (std::vector<int>{6, 7, 8}));
  EXPECT_EQ(c.at(9), (std::vector<int>{10}));
  EXPECT_EQ(c.at(12), (std::vector<int>{13, 14, 15}));
  EXPECT_TRUE(c.at(11).empty());
  EXPECT_TRUE(c.at(16).empty());
  EXPECT_EQ(profile.size(), 7u);
}

// MobileNetV2's inverted-residual blocks in every variant the block kernel takes
// (python/export_cases/inverted_residuals.py): each block runs as one node, on planes split into
// bands of rows and on planes split over channels, and gives PyTorch's outputs, the unfused
// outputs to float rounding, and the same bits on any number of threads.
TEST(FusionBlocks, InvertedResidualBlocksRunAsOneNodeEach) {
  const std::string dir = std::string(NNX_FIXTURE_DIR) + "/export/inverted_residuals";
  if (!std::filesystem::exists(dir + "/inverted_residuals.pth"))
    GTEST_SKIP() << "no inverted-residual fixture in " << dir;
  Model model = load(dir + "/inverted_residuals.json", dir + "/inverted_residuals.pth");
  Tensor input = read_npy(dir + "/in0.npy");
  Tensor ref = read_npy(dir + "/ref0.npy");
  std::vector<NodeTiming> profile;
  std::vector<Tensor> fused = run(model, input, true, 2, &profile);
  std::vector<Tensor> plain = run(model, input, false, 2);
  ASSERT_EQ(fused.size(), 1u);
  EXPECT_LE(relative_error(fused[0], ref), 1e-4);
  EXPECT_LE(relative_error(fused[0], plain[0]), 1e-5);
  for (int threads : {1, 3})
    EXPECT_EQ(relative_error(run(model, input, true, threads)[0], fused[0]), 0.0)
        << threads << " threads";
  // The stem's Conv+BN+ReLU6, then one node for each of the ten blocks, with these many nodes
  // fused into it: blocks without expansion (4), plain blocks (7), residual ones (8), the
  // residual one with a SiLU after its Add (9), the one with a linear depthwise convolution (7).
  std::vector<size_t> sizes;
  for (const NodeTiming& t : profile) sizes.push_back(t.fused.size());
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 4, 7, 8, 9, 8, 7, 7, 8, 7, 4}));
}

// A batch of at least one image per thread: on small planes each thread runs whole blocks on its
// own images, the images left over split over the threads; the same bits as one thread, and each
// image as it comes out alone.
TEST(FusionBlocks, InvertedResidualBlocksOnWholeImagesPerThread) {
  const std::string dir = std::string(NNX_FIXTURE_DIR) + "/export/inverted_residuals";
  if (!std::filesystem::exists(dir + "/inverted_residuals.pth"))
    GTEST_SKIP() << "no inverted-residual fixture in " << dir;
  Model model = load(dir + "/inverted_residuals.json", dir + "/inverted_residuals.pth");
  std::mt19937 rng(11);
  Tensor batch = random_tensor(Shape{5, 3, 70, 66}, rng, -2, 2);
  std::vector<Tensor> one = run(model, batch, true, 1);
  const Tensor plain = run(model, batch, false, 2)[0];
  EXPECT_LE(relative_error(one[0], plain), 1e-5);
  for (int threads : {2, 3, 5})  // 4 images per thread + 1 split; 3 + 2 split; 1 each
    EXPECT_EQ(relative_error(run(model, batch, true, threads)[0], one[0]), 0.0)
        << threads << " threads";
  const int64_t in_image = 3 * 70 * 66, out_image = one[0].numel() / 5;
  for (int64_t n : {0, 4}) {
    Tensor image = Tensor::empty(Shape{1, 3, 70, 66});
    std::copy(batch.data<float>() + n * in_image, batch.data<float>() + (n + 1) * in_image,
              image.data<float>());
    const Tensor alone = run(model, image, true, 2)[0];
    ASSERT_EQ(alone.numel(), out_image);
    EXPECT_TRUE(std::equal(alone.data<float>(), alone.data<float>() + out_image,
                           one[0].data<float>() + n * out_image))
        << "image " << n;
  }
}

}  // namespace
}  // namespace nnx
