// The planner's arena (graph/planner.h): a Cat whose pieces are contiguous blocks of its output
// has the inputs that it alone reads computed in their blocks (PlannedBuffer::parent), and the
// network gives the same numbers as where the pieces are copied; ops that may write over an
// input (Op::in_place_inputs) do so where nothing reads it later, with the same numbers.
#include <gtest/gtest.h>

#include <random>
#include <span>
#include <vector>

#include "graph/fusion.h"
#include "graph/graph.h"
#include "graph/planner.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

using testing_util::relative_error;

// Node k is layer k. A fire module (SqueezeNet's): the squeeze 1-2, its two expansions 3-4 and
// 5-6 (Conv+ReLU chains), Cat 7 of them (a network output too); then Cat 11 of chain 9-10 and of
// node 8, which node 9 reads as well.
const char* kFire = R"json({
  "auto_connect": true,
  "inputs_channels": [8],
  "outputs_channels": [12, 16],
  "outputs": [[11, 0, 0], [7, 0, 1]],
  "layers": [
    ["torch.nn.Conv2d(8,4,1)", 4],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(4,8,1)", 8],
    ["torch.nn.ReLU()"],
    ["torch.nn.Conv2d(4,8,3,padding=1)", [[4], [8]], [[2, 0]]],
    ["torch.nn.ReLU()"],
    ["nn_executor.models.Cat(dim=1)", [[8, 8], [16]], [[4, 0], [6, 0]]],
    ["torch.nn.Conv2d(16,4,1)", 4],
    ["torch.nn.Conv2d(4,8,1)", 8],
    ["torch.nn.ReLU()"],
    ["nn_executor.models.Cat(dim=1)", [[8, 4], [12]], [[10, 0], [8, 0]]]
  ]
})json";

Tensor random_tensor(const Shape& shape, std::mt19937& rng) {
  Tensor t = Tensor::empty(shape);
  std::uniform_real_distribution<float> dist(-2, 2);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// No two buffers that are live at once overlap in the arena (a Cat's pieces, which lie in its
// buffer on purpose, aside).
void expect_no_live_overlap(const Plan& plan) {
  for (size_t a = 0; a < plan.buffers.size(); ++a)
    for (size_t b = a + 1; b < plan.buffers.size(); ++b) {
      const PlannedBuffer &x = plan.buffers[a], &y = plan.buffers[b];
      if (x.parent >= 0 || y.parent >= 0) continue;
      const bool live = x.first_step <= y.last_step && y.first_step <= x.last_step;
      const bool overlap = x.offset < y.offset + y.bytes && y.offset < x.offset + x.bytes;
      EXPECT_FALSE(live && overlap) << "buffers " << a << " and " << b;
    }
}

// The buffer of node v's value: its chain head's where it is absorbed.
int buffer_of(const Plan& plan, const nnx::Fusion& fusion, int v) {
  const int head = fusion.alias_of[size_t(v)];
  return plan.buffer[size_t(head >= 0 ? head : v)][0];
}

TEST(PlannerCat, PiecesReadOnlyByTheCatAreComputedInTheirBlocks) {
  Model model = load_memory(kFire, "", {}, "fire.json");
  const Graph& graph = model.graph();
  const std::shared_ptr<const nnx::Fusion> fusion = find_fusion(graph, true);
  ASSERT_TRUE(fusion->is_head(3) && fusion->is_head(5) && fusion->is_head(9));
  const TensorSpec spec{Shape{1, 8, 8, 8}, DType::f32};
  const Plan plan = make_plan(graph, std::span(&spec, 1), fusion.get());
  const size_t piece = 8 * 8 * 8 * sizeof(float);
  const int cat = plan.buffer[7][0];
  const PlannedBuffer& whole = plan.buffers[size_t(cat)];
  for (int i = 0; i < 2; ++i) {
    const PlannedBuffer& b = plan.buffers[size_t(buffer_of(plan, *fusion, i == 0 ? 4 : 6))];
    EXPECT_EQ(b.parent, cat) << "input " << i;
    EXPECT_EQ(b.within, i * piece) << "input " << i;
    EXPECT_EQ(b.offset, whole.offset + i * piece) << "input " << i;
    // The Cat's memory is held from the first piece's step, so nothing else is placed there.
    EXPECT_LE(whole.first_step, b.first_step) << "input " << i;
  }
  // Cat 11: chain 9-10's value is its first piece; node 8, which chain 9 reads, is copied.
  const int cat2 = plan.buffer[11][0];
  EXPECT_EQ(plan.buffers[size_t(buffer_of(plan, *fusion, 10))].parent, cat2);
  EXPECT_EQ(plan.buffers[size_t(plan.buffer[8][0])].parent, -1);
  // No other live buffer overlaps a Cat's memory while any of its pieces lives.
  expect_no_live_overlap(plan);

  // At batch 2 a piece is two blocks apart: every input keeps a buffer of its own.
  const TensorSpec two{Shape{2, 8, 8, 8}, DType::f32};
  const Plan batched = make_plan(graph, std::span(&two, 1), fusion.get());
  for (const PlannedBuffer& b : batched.buffers) EXPECT_EQ(b.parent, -1);
}

// A piece whose block would start off the allocator's alignment (5 channels of 3x3 after the
// first: 180 bytes in) is copied; the first, at 0, is computed in place.
TEST(PlannerCat, APieceOffTheAlignmentIsCopied) {
  const char* description = R"json({
    "auto_connect": true,
    "inputs_channels": [3],
    "outputs_channels": [10],
    "outputs": [[3, 0, 0]],
    "layers": [
      ["torch.nn.Conv2d(3,5,1)", 5],
      ["torch.nn.Conv2d(3,5,1)", [[3], [5]], [[0, 0]]],
      ["nn_executor.models.Cat(dim=1)", [[5, 5], [10]], [[1, 0], [2, 0]]]
    ]
  })json";
  Model model = load_memory(description, "", {}, "unaligned.json");
  const std::shared_ptr<const nnx::Fusion> fusion = find_fusion(model.graph(), true);
  const TensorSpec spec{Shape{1, 3, 3, 3}, DType::f32};
  const Plan plan = make_plan(model.graph(), std::span(&spec, 1), fusion.get());
  EXPECT_EQ(plan.buffers[size_t(plan.buffer[1][0])].parent, plan.buffer[3][0]);
  EXPECT_EQ(plan.buffers[size_t(plan.buffer[2][0])].parent, -1);
}

// The numbers: image 0 at batch 1 (pieces in place) against the same image at batch 2 (pieces
// copied), on one and two threads, fused and not. (ExportParity holds SqueezeNet at batch 1 to
// PyTorch's outputs.)
TEST(PlannerCat, PiecesInPlaceGiveTheCopiedPiecesNumbers) {
  Model model = load_memory(kFire, "", {}, "fire.json");
  std::mt19937 rng(3);
  for (const Layer& layer : model.graph().layers)
    for (const Param& p : layer.op->params())
      layer.op->set_param(p.name, random_tensor(p.value.shape(), rng));
  const Tensor image = random_tensor(Shape{1, 8, 8, 8}, rng);
  Tensor pair = Tensor::empty(Shape{2, 8, 8, 8});
  std::copy(image.data<float>(), image.data<float>() + image.numel(), pair.data<float>());
  std::copy(image.data<float>(), image.data<float>() + image.numel(),
            pair.data<float>() + image.numel());
  for (bool fuse : {true, false})
    for (int threads : {1, 2}) {
      Executor one(model, {.threads = threads, .fuse = fuse});
      Executor both(model, {.threads = threads, .fuse = fuse});
      for (int run = 0; run < 2; ++run) {  // the second run on the kept plan
        const std::vector<Tensor> a = one(image);
        const std::vector<Tensor> b = both(pair);
        ASSERT_EQ(a.size(), 2u);
        for (size_t k = 0; k < a.size(); ++k) {
          const Tensor first = b[k].slice(0, 0, 1).contiguous();
          EXPECT_LE(relative_error(a[k], first), 1e-6)
              << "output " << k << ", fuse " << fuse << ", " << threads << " thread(s)";
        }
      }
    }
}

// Ops over an input that dies at them (Op::in_place_inputs, make_plan's `in_place`): node k is
// layer k. Mul 4 = s * x writes over x (its second operand: Mul commutes to the bit); Mul 5 reads
// one value twice; Sub 7's operands are both read later; Sub 8's first operand is broadcast (and
// its second is Sub's right-hand side); Add 9 writes over its first operand, Add 10 over its
// second (its first is a network output).
const char* kInPlace = R"json({
  "inputs_channels": [4],
  "outputs_channels": [8, 8],
  "outputs": [[9, 0, 0], [10, 0, 1]],
  "layers": [
    ["torch.nn.Conv2d(4,8,3,padding=1)", [[4], [8]], [[0, 0]]],
    ["torch.nn.AdaptiveAvgPool2d(1)", [[8], [8]], [[1, 0]]],
    ["torch.nn.Sigmoid()", [[8], [8]], [[2, 0]]],
    ["nn_executor.models.Mul(num=2)", [[8, 8], [8]], [[3, 0], [1, 0]]],
    ["nn_executor.models.Mul(num=2)", [[8, 8], [8]], [[4, 0], [4, 0]]],
    ["torch.nn.Conv2d(8,8,1)", [[8], [8]], [[5, 0]]],
    ["nn_executor.models.Sub(num=2)", [[8, 8], [8]], [[6, 0], [5, 0]]],
    ["nn_executor.models.Sub(num=2)", [[8, 8], [8]], [[3, 0], [7, 0]]],
    ["nn_executor.models.Add(num=2)", [[8, 8], [8]], [[5, 0], [8, 0]]],
    ["nn_executor.models.Add(num=2)", [[8, 8], [8]], [[9, 0], [6, 0]]]
  ]
})json";

TEST(PlannerInPlace, OpsWriteOverInputsThatDieAtThem) {
  Model model = load_memory(kInPlace, "", {}, "in_place.json");
  const Graph& graph = model.graph();
  const TensorSpec spec{Shape{2, 4, 6, 5}, DType::f32};
  const Plan plan = make_plan(graph, std::span(&spec, 1), nullptr, true);
  auto buffer = [&](int v) { return plan.buffer[size_t(v)][0]; };
  EXPECT_EQ(buffer(4), buffer(1));
  EXPECT_EQ(buffer(9), buffer(5));
  EXPECT_EQ(buffer(10), buffer(6));
  EXPECT_NE(buffer(5), buffer(4));
  for (int v : {7, 8})
    for (int u = 1; u <= 10; ++u) {
      if (u == v) continue;
      EXPECT_NE(buffer(v), buffer(u)) << "nodes " << v << " and " << u;
    }
  // Buffers that share memory are never live at once, merged ones included.
  expect_no_live_overlap(plan);
  // Without `in_place` every value has a buffer of its own.
  const Plan apart = make_plan(graph, std::span(&spec, 1), nullptr, false);
  for (int v = 1; v <= 10; ++v)
    for (int u = v + 1; u <= 10; ++u)
      EXPECT_NE(apart.buffer[size_t(v)][0], apart.buffer[size_t(u)][0]);

  // The numbers: each op run on tensors of its own, in schedule order, against the Executor's
  // run (one thread, unfused: the same kernels, so the same bits).
  std::mt19937 rng(5);
  for (const Layer& layer : graph.layers)
    for (const Param& p : layer.op->params())
      layer.op->set_param(p.name, random_tensor(p.value.shape(), rng));
  const Tensor input = random_tensor(spec.shape, rng);
  std::vector<std::vector<Tensor>> values(graph.nodes.size());
  values[0] = {input};
  ExecContext ctx;
  for (int v : graph.schedule) {
    const Node& node = graph.nodes[size_t(v)];
    std::vector<Tensor> in;
    for (const PortRef& r : node.inputs) in.push_back(values[size_t(r.node)][size_t(r.port)]);
    Tensor out = Tensor::empty(plan.specs[size_t(v)][0].shape);
    graph.layer_of(v).op->forward(ctx, in, std::span(&out, 1));
    values[size_t(v)] = {out};
  }
  Executor net(model, {.threads = 1, .fuse = false});
  const std::vector<Tensor> got = net(input);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(relative_error(got[0], values[9][0]), 0.0);
  EXPECT_EQ(relative_error(got[1], values[10][0]), 0.0);
}

}  // namespace
}  // namespace nnx
