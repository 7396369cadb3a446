// Whole-network training parity with PyTorch: five optimizer steps on the seed network from
// the same initial weights, batches and targets (python/fixture_train_parity.py) must leave
// every weight and BatchNorm statistic within tolerance of PyTorch's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "examples/embed/yolo_head.h"
#include "graph/graph.h"
#include "importer/json.h"
#include "nnx/cuda.h"
#include "nnx/loss.h"
#include "nnx/npy.h"
#include "nnx/optim.h"
#include "nnx/train.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

double max_abs_diff(const Tensor& a, const Tensor& b) {
  Tensor x = a.to(DType::f64).contiguous(), y = b.to(DType::f64).contiguous();
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i)
    m = std::max(m, std::abs(x.data<double>()[i] - y.data<double>()[i]));
  return m;
}

fs::path case_dir(const std::string& name) {
  return fs::path(NNX_FIXTURE_DIR) / "train_parity" / name;
}

// Trains the case with `threads` threads on `device`, through the calls one by one or, with
// `via_step`, through TrainStep; returns one line per disagreeing tensor.
std::string train_case(const std::string& name, int threads, Device device = Device::cpu(),
                       bool via_step = false) {
  fs::path dir = case_dir(name);
  if (!fs::exists(dir / "case.json")) return "missing fixture " + dir.string();
  example::register_yolo_head();
  json::Value meta = json::parse_file((dir / "case.json").string());
  std::string arch = (dir / "arch.json").string();
  Model model = load(arch, (dir / "init.pth").string());
  Trainer trainer(model, {.threads = threads, .device = device});
  OptimizerOptions opt;
  opt.lr = meta.find("lr")->number;
  if (const json::Value* m = meta.find("momentum")) opt.momentum = m->number;
  if (const json::Value* wd = meta.find("weight_decay")) opt.weight_decay = wd->number;
  if (const json::Value* eps = meta.find("eps")) opt.eps = eps->number;
  auto optimizer = make_optimizer(meta.find("optimizer")->str, opt);
  int steps = int(meta.find("steps")->integer);
  int outputs = int(meta.find("outputs")->integer);
  LossOptions mse;
  mse.kind = LossKind::mse;
  TrainStep step(trainer, *optimizer, {.loss = mse});
  for (int k = 0; k < steps; ++k) {
    Tensor x = read_npy((dir / ("x" + std::to_string(k) + ".npy")).string());
    if (via_step) {
      std::vector<Tensor> targets;
      for (int j = 0; j < outputs; ++j)
        targets.push_back(read_npy(
            (dir / ("t" + std::to_string(k) + "_" + std::to_string(j) + ".npy")).string()));
      step.run(std::span(&x, 1), targets);
      continue;
    }
    trainer.zero_grad();
    std::vector<Tensor> out = trainer.forward(x);
    std::vector<Tensor> grads;
    for (int j = 0; j < outputs; ++j) {
      Tensor t =
          read_npy((dir / ("t" + std::to_string(k) + "_" + std::to_string(j) + ".npy")).string());
      grads.push_back(compute_loss(out[size_t(j)], t, mse).grad);
    }
    trainer.backward(grads);
    optimizer->step(trainer.parameters());
  }

  // On CUDA the fourth and fifth TrainSteps are replayed from a graph (the YOLO head's CPU body a
  // host task in it).
  std::string failures;
  if (via_step && device.is_cuda() && step.cuda_graph_state().find("captured") != 0)
    failures += " steps not replayed: " + step.cuda_graph_state();

  // Compare with PyTorch's weights after the same steps, layer by layer.
  Model after = load(arch, (dir / "after.pth").string());
  std::vector<std::string> noise_only;
  for (auto& v : meta.find("noise_only")->array) noise_only.push_back(v.str);
  double tol = meta.find("tol")->number;
  double lr = opt.lr;
  const Graph& got_graph = trainer.model().graph();
  const Graph& ref_graph = after.graph();
  const Graph& init_graph = model.graph();
  for (size_t l = 0; l < ref_graph.layers.size(); ++l) {
    const auto& got_params = got_graph.layers[l].op->params();
    const auto& ref_params = ref_graph.layers[l].op->params();
    for (size_t p = 0; p < ref_params.size(); ++p) {
      std::string key = std::to_string(l) + "." + ref_params[p].name;
      const Tensor got = got_params[p].value.to(Device::cpu());
      const Tensor& ref = ref_params[p].value;
      if (std::find(noise_only.begin(), noise_only.end(), key) != noise_only.end()) {
        // Moved by Adam's steps on rounding noise: at most lr per step, either way.
        const Tensor& init = init_graph.layers[l].op->params()[p].value;
        double moved = max_abs_diff(got, init);
        if (!(moved <= lr * steps * 1.01))
          failures += " " + key + " moved " + std::to_string(moved) + " (bound " +
                      std::to_string(lr * steps) + ")";
        continue;
      }
      double err = testing_util::relative_error(got, ref);
      if (const json::Value* f = meta.find("follows_noise")->find(key)) {
        // A running mean after a noise-driven bias: the issue asks this case to stay small, not
        // to match. It integrates batch means that move with the noise in the bias and, through
        // Adam's whole steps on near-zero gradients, in the weights before it, by amounts that
        // follow the summation order (1.5e-4 of its scale with AVX2 kernels, under 1e-4 with
        // AVX-512 ones): bound ten times the tolerance at its scale, plus the biases' difference.
        size_t bias_layer = size_t(std::stoul(f->str));
        const Param* gb = got_graph.layers[bias_layer].op->find_param("bias");
        const Param* rb = ref_graph.layers[bias_layer].op->find_param("bias");
        const double scale = std::max(1.0, max_abs_diff(ref, Tensor::zeros(ref.shape())));
        double bound = 10 * tol * scale + max_abs_diff(gb->value.to(Device::cpu()), rb->value);
        if (!(max_abs_diff(got, ref) <= bound))
          failures += " " + key + ": " + std::to_string(max_abs_diff(got, ref)) + " (bound " +
                      std::to_string(bound) + ")";
        continue;
      }
      if (!(err <= tol)) failures += " " + key + ": " + std::to_string(err);
    }
  }
  return failures;
}

class NetworkParity : public ::testing::TestWithParam<std::string> {};

TEST_P(NetworkParity, FiveStepsMatchPyTorch) {
  for (int threads : {1, 2}) {
    std::string failures = train_case(GetParam(), threads);
    EXPECT_TRUE(failures.empty()) << GetParam() << " (" << threads << " threads):" << failures;
  }
}

// The same steps as one unit each (TrainStep), on the CPU.
TEST_P(NetworkParity, FiveTrainStepsMatchPyTorch) {
  std::string failures = train_case(GetParam(), 2, Device::cpu(), true);
  EXPECT_TRUE(failures.empty()) << GetParam() << " (TrainStep):" << failures;
}

INSTANTIATE_TEST_SUITE_P(Seed, NetworkParity,
                         ::testing::Values("seed_sgd", "seed_adamw_nobias", "seed_adamw_bias"));

// The same five steps with the Trainer on a GPU: parameters, gradients, optimizer state and
// running statistics on the device (skipped without one).
TEST(CudaNetworkParity, FiveStepsMatchPyTorchOnCuda) {
  cuda::init();
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  for (const char* name : {"seed_sgd", "seed_adamw_nobias", "seed_adamw_bias"}) {
    std::string failures;
#ifdef NNX_CUDA_EMULATOR
    // On the host emulator (CI's ASan pass) the Trainer's path runs for one case only: each
    // case costs 20 s there, and the Trainer shares its kernels with TrainStep.
    const bool trainer_path = std::string(name) == "seed_sgd";
#else
    const bool trainer_path = true;
#endif
    if (trainer_path) {
      failures = train_case(name, 2, Device::cuda(0));
      EXPECT_TRUE(failures.empty()) << name << " (cuda:0):" << failures;
    }
    // As TrainStep runs them: on its own stream, the loss queued on the device, the last two
    // replayed from a CUDA graph.
    failures = train_case(name, 2, Device::cuda(0), true);
    EXPECT_TRUE(failures.empty()) << name << " (cuda:0, TrainStep):" << failures;
  }
}

// Per-node profiling: every node of the plan listed once, in execution order, with the steps
// timed since it was turned on, and cleared when turned on again.
TEST(TrainerProfile, ListsEveryNodeWithItsSteps) {
  fs::path dir = case_dir("seed_sgd");
  ASSERT_TRUE(fs::exists(dir / "case.json")) << "missing fixture " << dir;
  example::register_yolo_head();
  Model model = load((dir / "arch.json").string(), (dir / "init.pth").string());
  Trainer trainer(model, {.threads = 2});
  EXPECT_TRUE(trainer.profile().empty());
  Tensor x = read_npy((dir / "x0.npy").string());
  trainer.forward(x);  // not timed
  trainer.set_profiling(true);
  LossOptions mse;
  mse.kind = LossKind::mse;
  for (int step = 0; step < 2; ++step) {
    trainer.zero_grad();
    std::vector<Tensor> out = trainer.forward(x);
    std::vector<Tensor> grads;
    for (const Tensor& o : out)
      grads.push_back(compute_loss(o, Tensor::zeros(o.shape()), mse).grad);
    trainer.backward(grads);
  }
  std::vector<NodeProfile> nodes = trainer.profile();
  ASSERT_FALSE(nodes.empty());
  double backward = 0;
  for (const NodeProfile& n : nodes) {
    EXPECT_EQ(n.calls, 2) << n.node;
    EXPECT_GE(n.forward_ms, 0.0) << n.node;
    backward += n.backward_ms;
    EXPECT_EQ(std::count_if(nodes.begin(), nodes.end(),
                            [&](const NodeProfile& m) { return m.node == n.node; }),
              1)
        << n.node;
  }
  EXPECT_GT(backward, 0.0);
  EXPECT_NE(nodes.front().node.find("Conv2d"), std::string::npos) << nodes.front().node;
  trainer.set_profiling(true);
  for (const NodeProfile& n : trainer.profile()) EXPECT_EQ(n.calls, 0) << n.node;
}

}  // namespace
}  // namespace nnx
