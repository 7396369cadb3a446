// nnx::TrainStep: the whole step as one unit gives the numbers of the calls made one by one
// (Trainer::zero_grad, forward, compute_loss, backward, Optimizer::step), on the CPU and on CUDA;
// on CUDA, steps replayed from one CUDA graph give the numbers of steps run op by op, through
// changes of the learning rate and bad input, and steps that cannot be captured say why. (The
// calls one by one are held to PyTorch in network_parity_test.cpp, and TrainStep too there.)
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "graph/graph.h"
#include "nnx/cuda.h"
#include "nnx/error.h"
#include "nnx/loss.h"
#include "nnx/op.h"
#include "nnx/optim.h"
#include "nnx/registry.h"
#include "nnx/train.h"
#ifdef NNX_WITH_CUDA
#include "kernels/cuda/conv_igemm.h"
#endif

namespace nnx {
namespace {

const std::string kResnet = std::string(NNX_SOURCE_DIR) + "/examples/digits/digits_resnet.json";
const std::string kCnn = std::string(NNX_SOURCE_DIR) + "/examples/digits/digits_cnn.json";

struct Batch {
  Tensor x, y;
};

// Batch k: 8 images 1x8x8 and their class indices, the same for every caller.
Batch batch(int k, int64_t n = 8) {
  std::mt19937_64 rng(uint64_t(1000 + k));
  std::normal_distribution<float> normal(0.f, 1.f);
  Batch b{Tensor::empty(Shape{n, 1, 8, 8}), Tensor::empty(Shape{n}, DType::i64)};
  for (int64_t i = 0; i < b.x.numel(); ++i) b.x.data<float>()[i] = normal(rng);
  for (int64_t i = 0; i < n; ++i) b.y.data<int64_t>()[i] = int64_t(rng() % 10);
  return b;
}

LossOptions cross_entropy() {
  LossOptions o;
  o.kind = LossKind::cross_entropy;
  o.label_smoothing = 0.1;
  o.weight = Tensor::empty(Shape{10});
  for (int k = 0; k < 10; ++k) o.weight.data<float>()[k] = 0.5f + 0.1f * float(k);
  return o;
}

// Every parameter, BatchNorm buffer and optimizer state tensor of a trainer, on the host.
std::vector<Tensor> snapshot(const Trainer& trainer, const Optimizer& optimizer) {
  std::vector<Tensor> out;
  for (const Layer& layer : trainer.model().graph().layers)
    if (layer.op)
      for (const Param& p : layer.op->params()) out.push_back(p.value.to(Device::cpu()).clone());
  for (const auto& st : optimizer.state())
    for (const Tensor& b : st.buffers)
      if (b.defined()) out.push_back(b.to(Device::cpu()).clone());
  return out;
}

// The largest difference between two snapshots relative to max(1, |reference|), or INFINITY
// when they do not line up.
double worst(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return INFINITY;
  double w = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].shape() != b[k].shape()) return INFINITY;
    const Tensor x = a[k].to(DType::f64).contiguous(), y = b[k].to(DType::f64).contiguous();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double d = std::abs(x.data<double>()[i] - y.data<double>()[i]) /
                       std::max(1.0, std::abs(y.data<double>()[i]));
      w = std::isnan(d) ? INFINITY : std::max(w, d);
    }
  }
  return w;
}

// The step as separate calls, the way a hand-written loop makes them.
double manual_step(Trainer& trainer, Optimizer& optimizer, const Batch& b,
                   const LossOptions& loss) {
  trainer.zero_grad();
  std::vector<Tensor> out = trainer.forward(b.x);
  LossResult r = compute_loss(out[0], b.y, loss);
  trainer.backward(r.grad);
  optimizer.step(trainer.parameters());
  return r.value;
}

std::unique_ptr<Optimizer> optimizer_for(const std::string& kind) {
  OptimizerOptions o;
  o.lr = 0.05;
  if (kind == "sgd") {
    o.momentum = 0.9;
    o.nesterov = true;
    o.weight_decay = 1e-3;
  } else {
    o.lr = 2e-3;
    o.amsgrad = kind == "adam";
  }
  return make_optimizer(kind, o);
}

TEST(TrainStep, MatchesTheCallsOneByOneOnTheCpu) {
  Model model = load(kResnet);
  for (const char* kind : {"sgd", "adamw"}) {
    Trainer a(model, {.threads = 2}), b(model, {.threads = 2});
    auto oa = optimizer_for(kind), ob = optimizer_for(kind);
    TrainStep step(a, *oa, {.loss = cross_entropy()});
    for (int k = 0; k < 3; ++k) {
      const Batch d = batch(k);
      const double got = step.run(d.x, d.y);
      const double want = manual_step(b, *ob, d, cross_entropy());
      EXPECT_EQ(got, want) << kind << " step " << k;
    }
    EXPECT_EQ(worst(snapshot(a, *oa), snapshot(b, *ob)), 0.0) << kind;
    EXPECT_EQ(oa->steps(), 3);
    ASSERT_EQ(step.outputs().size(), 1u);
    EXPECT_EQ(step.outputs()[0].shape(), Shape({8, 10}));
    EXPECT_EQ(step.cuda_graph_state(), "CPU: no CUDA graphs");
  }
}

// Trainer::backward_replacing gives zero_grad() then backward(): over gradients set to NaN
// beforehand (any it failed to overwrite would show), for a residual network with BatchNorm and
// a plain CNN; and where no gradient reaches a layer's parameters, zeros.
TEST(TrainStep, BackwardReplacingIsZeroGradThenBackward) {
  for (const std::string& path : {kResnet, kCnn}) {
    Model model = load(path);
    Trainer a(model, {.threads = 2}), b(model, {.threads = 2});
    const Batch d = batch(0);
    a.zero_grad();
    a.backward(compute_loss(a.forward(d.x)[0], d.y, cross_entropy()).grad);
    auto poison = [&] {
      for (Parameter& p : b.parameters()) {
        if (!p.grad.defined()) p.grad = Tensor::empty(p.value.shape());
        p.grad.fill(NAN);
      }
    };
    poison();
    b.backward_replacing(compute_loss(b.forward(d.x)[0], d.y, cross_entropy()).grad);
    ASSERT_EQ(a.parameters().size(), b.parameters().size());
    for (size_t k = 0; k < a.parameters().size(); ++k) {
      const Tensor& x = a.parameters()[k].grad;
      const Tensor& y = b.parameters()[k].grad;
      ASSERT_EQ(x.shape(), y.shape()) << path << " " << a.parameters()[k].name;
      int64_t differ = 0;
      for (int64_t i = 0; i < x.numel(); ++i) differ += !(x.data<float>()[i] == y.data<float>()[i]);
      EXPECT_EQ(differ, 0) << path << " " << a.parameters()[k].name;
    }
  }
  // A layer no output depends on: no backward writes its gradients, which end as zeros.
  Model model = load_memory(R"json({
    "inputs_channels": [1], "outputs_channels": [4], "outputs": [[1, 0, 0]], "auto_connect": true,
    "layers": [["torch.nn.Conv2d(1,4,3,padding=1)", 4], ["torch.nn.Conv2d(4,2,1)", 2]]})json",
                            "", {}, "dead_branch.json");
  Trainer t(model, {.threads = 2});
  ASSERT_EQ(t.parameters().size(), 4u);
  for (Parameter& p : t.parameters()) {
    p.grad = Tensor::empty(p.value.shape());
    p.grad.fill(NAN);
  }
  const Tensor x = batch(1).x;
  t.backward_replacing(t.forward(x)[0]);  // the output itself as its gradient
  for (const Parameter& p : t.parameters()) {
    int64_t nan = 0, nonzero = 0;
    for (int64_t i = 0; i < p.grad.numel(); ++i) {
      nan += std::isnan(p.grad.data<float>()[i]);
      nonzero += p.grad.data<float>()[i] != 0.f;
    }
    EXPECT_EQ(nan, 0) << p.name;
    if (p.layer == 1) {
      EXPECT_EQ(nonzero, 0) << p.name;
    } else {
      EXPECT_GT(nonzero, 0) << p.name;
    }
  }
}

TEST(TrainStep, CountsTargetsPerOutput) {
  Model model = load(kResnet);
  Trainer trainer(model, {.threads = 1});
  auto opt = optimizer_for("sgd");
  TrainStep step(trainer, *opt, {.loss = cross_entropy()});
  const Batch d = batch(0);
  std::vector<Tensor> two = {d.y, d.y};
  try {
    step.run(std::span(&d.x, 1), two);
    FAIL() << "two targets for one output accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
    EXPECT_NE(e.message().find("expected 1 target"), std::string::npos) << e.message();
  }
}

bool emulated() {
  return cuda::device_name(0).find("emulator") != std::string::npos;
}

// On a GPU a replayed Adam step computes its bias correction with the device's pow, which may
// round the last bit differently; the emulator's is the host's.
double replay_tolerance(const std::string& kind) {
  return emulated() || kind == "sgd" ? 0.0 : 1e-6;
}

class CudaTrainStep : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    cuda::init();
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  }
};

// Three trainers from one model: the calls one by one on the legacy stream, TrainStep op by op,
// TrainStep with CUDA graphs. Seven steps on different batches, the learning rate changed before
// the sixth (the graph is captured again), then compared. "sgd+igemm": SGD with every
// convolution, forward and gradients, on our implicit-GEMM kernels (kernels/cuda/conv_igemm.h).
TEST_P(CudaTrainStep, ReplaysMatchTheStepsOpByOp) {
  std::string kind = GetParam();
#ifdef NNX_WITH_CUDA
  struct Restore {
    ~Restore() { cuda::reset_igemm_mode(); }
  } restore;
  if (kind.size() > 6 && kind.compare(kind.size() - 6, 6, "+igemm") == 0) {
    kind.resize(kind.size() - 6);
    cuda::set_igemm_mode(cuda::IgemmMode::on);
  }
#endif
  const Device gpu = Device::cuda(0);
  Model model = load(kResnet);
  Trainer manual(model, {.threads = 2, .device = gpu}), eager(model, {.threads = 2, .device = gpu}),
      graphed(model, {.threads = 2, .device = gpu});
  auto om = optimizer_for(kind), oe = optimizer_for(kind), og = optimizer_for(kind);
  TrainStep op_by_op(eager, *oe, {.loss = cross_entropy(), .cuda_graph = false});
  TrainStep replayed(graphed, *og, {.loss = cross_entropy()});
  const double tol = replay_tolerance(kind);
  for (int k = 0; k < 7; ++k) {
    if (k == 5)
      for (Optimizer* o : {om.get(), oe.get(), og.get()}) o->set_lr(o->lr() * 0.5);
    const Batch d = batch(k);
    const double want = manual_step(manual, *om, d, cross_entropy());
    const double e = op_by_op.run(d.x, d.y);
    // Host or device inputs alike.
    const double g = k % 2 == 0 ? replayed.run(d.x, d.y) : replayed.run(d.x.to(gpu), d.y.to(gpu));
    EXPECT_EQ(e, want) << kind << " step " << k;
    EXPECT_LE(std::abs(g - want), tol * std::max(1.0, std::abs(want))) << kind << " step " << k;
    if (k == 4 || k == 6) {
      EXPECT_NE(replayed.cuda_graph_state().find("captured"), std::string::npos)
          << kind << " step " << k << ": " << replayed.cuda_graph_state();
    }
  }
  EXPECT_EQ(op_by_op.cuda_graph_state(), "off (op by op)");
  const std::vector<Tensor> want = snapshot(manual, *om);
  EXPECT_EQ(worst(snapshot(eager, *oe), want), 0.0) << kind;
  EXPECT_LE(worst(snapshot(graphed, *og), want), tol) << kind;
  EXPECT_EQ(og->steps(), 7);
  for (size_t k = 0; k < og->state().size(); ++k)
    EXPECT_EQ(og->state()[k].step, om->state()[k].step) << kind << " parameter " << k;
  // The outputs are the last step's.
  ASSERT_EQ(replayed.outputs().size(), 1u);
  const Tensor out = replayed.outputs()[0].to(Device::cpu());
  manual.set_training(false);
  graphed.set_training(false);
  EXPECT_LE(worst({graphed.forward(batch(9).x)[0].to(Device::cpu())},
                  {manual.forward(batch(9).x)[0].to(Device::cpu())}),
            tol);
  EXPECT_EQ(out.shape(), Shape({8, 10}));
}

INSTANTIATE_TEST_SUITE_P(Optimizers, CudaTrainStep,
                         ::testing::Values("sgd", "adam", "adamw", "sgd+igemm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '+', '_');
                           return name;
                         });

// A bad class index is refused before anything changes, in a replayed step as in the first.
TEST(CudaTrainStepInput, BadClassIndexChangesNothing) {
  cuda::init();
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  Model model = load(kResnet);
  Trainer trainer(model, {.threads = 2, .device = Device::cuda(0)});
  auto opt = optimizer_for("sgd");
  TrainStep step(trainer, *opt, {.loss = cross_entropy()});
  Batch bad = batch(0);
  bad.y.data<int64_t>()[3] = 10;
  auto refused = [&](const char* when) {
    const std::vector<Tensor> before = snapshot(trainer, *opt);
    const int64_t steps = opt->steps();
    try {
      step.run(bad.x, bad.y);
      ADD_FAILURE() << when << ": class index 10 of 10 accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::usage) << when;
      EXPECT_NE(e.message().find("class index 10 at position 3 is out of range [0, 10)"),
                std::string::npos)
          << when << ": " << e.message();
    }
    EXPECT_EQ(worst(snapshot(trainer, *opt), before), 0.0) << when;
    EXPECT_EQ(opt->steps(), steps) << when;
  };
  refused("first step");
  for (int k = 0; k < 5; ++k) step.run(batch(k).x, batch(k).y);
  ASSERT_NE(step.cuda_graph_state().find("captured"), std::string::npos) << step.cuda_graph_state();
  refused("replayed step");
  const double loss = step.run(batch(5).x, batch(5).y);
  EXPECT_TRUE(std::isfinite(loss));
}

// Dropout draws on the host at every step: such a step runs op by op, and says so.
TEST(CudaTrainStepInput, RandomDrawsRunOpByOp) {
  cuda::init();
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  Model model = load(kCnn);
  const Device gpu = Device::cuda(0);
  Trainer a(model, {.threads = 2, .seed = 5, .device = gpu}),
      b(model, {.threads = 2, .seed = 5, .device = gpu});
  auto oa = optimizer_for("adamw"), ob = optimizer_for("adamw");
  TrainStep step(a, *oa, {.loss = cross_entropy()});
  for (int k = 0; k < 4; ++k) {
    const Batch d = batch(k);
    EXPECT_EQ(step.run(d.x, d.y), manual_step(b, *ob, d, cross_entropy())) << "step " << k;
  }
  EXPECT_NE(step.cuda_graph_state().find("random"), std::string::npos) << step.cuda_graph_state();
  EXPECT_EQ(worst(snapshot(a, *oa), snapshot(b, *ob)), 0.0);
}

// A user op without a CUDA body: y = 2x, its backward 2dy; its CPU body throws while `failing`.
std::atomic<bool> failing{false};

class Doubler final : public Op {
 public:
  std::string type() const override { return "test_ops.Doubler"; }
  std::string python_module() const override { return "test_ops"; }
  std::string repr() const override { return "Doubler()"; }
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> in, int) const override {
    return {in[0]};
  }
  BackwardNeeds backward_needs() const override { return {false, false}; }
  void forward_cpu(const ExecContext&, std::span<const Tensor> in,
                   std::span<Tensor> out) const override {
    NNX_CHECK(!failing, ErrorKind::usage, "Doubler refuses this batch");
    for (int64_t i = 0; i < in[0].numel(); ++i)
      out[0].data<float>()[i] = 2 * in[0].data<float>()[i];
  }
  void backward_cpu(const ExecContext&, std::span<const Tensor>, std::span<const Tensor>,
                    std::span<const Tensor> gout, std::span<Tensor> gin,
                    std::span<Tensor>) const override {
    for (int64_t i = 0; i < gout[0].numel(); ++i)
      gin[0].data<float>()[i] = 2 * gout[0].data<float>()[i];
  }
};

// An op without a CUDA body is a host task inside the captured step; when its CPU body fails in a
// replay, the step says so and the update is not applied.
TEST(CudaTrainStepInput, AFailingHostTaskLeavesTheParametersAsTheyWere) {
  cuda::init();
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  register_op("test_ops.Doubler", [](const Call&) { return std::make_shared<Doubler>(); });
  const std::string arch = R"json({
    "outputs": [[-1, 0, 0]], "inputs_channels": [1], "outputs_channels": [10],
    "layers": [
      ["torch.nn.Conv2d(1, 4, 3, padding=1)", [[1], [4]], [[-1, 0]]],
      ["test_ops.Doubler()", [[4], [4]], [[-1, 0]]],
      ["torch.nn.Flatten()", [[4], [256]], [[-1, 0]]],
      ["torch.nn.Linear(256, 10)", [[256], [10]], [[-1, 0]]]
    ]})json";
  Model model = load_memory(arch, "");
  Trainer trainer(model, {.threads = 1, .device = Device::cuda(0)}),
      reference(model, {.threads = 1, .device = Device::cuda(0)});
  auto opt = optimizer_for("adamw"), ref_opt = optimizer_for("adamw");
  TrainStep step(trainer, *opt, {.loss = cross_entropy()});
  for (int k = 0; k < 4; ++k) {
    const Batch d = batch(k);
    EXPECT_EQ(step.run(d.x, d.y), manual_step(reference, *ref_opt, d, cross_entropy()))
        << "step " << k;
  }
  ASSERT_EQ(step.cuda_graph_state().find("captured"), 0u) << step.cuda_graph_state();
  const std::vector<Tensor> before = snapshot(trainer, *opt);
  failing = true;
  try {
    step.run(batch(4).x, batch(4).y);
    ADD_FAILURE() << "a failed host task went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("Doubler refuses this batch"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("the update was not applied"), std::string::npos) << e.message();
  }
  failing = false;
  EXPECT_EQ(worst(snapshot(trainer, *opt), before), 0.0);
  EXPECT_EQ(opt->steps(), 4);
  // And on from there, as the calls one by one.
  const Batch d = batch(5);
  EXPECT_EQ(step.run(d.x, d.y), manual_step(reference, *ref_opt, d, cross_entropy()));
  EXPECT_EQ(worst(snapshot(trainer, *opt), snapshot(reference, *ref_opt)), 0.0);
  unregister_op("test_ops.Doubler");
}

}  // namespace
}  // namespace nnx
