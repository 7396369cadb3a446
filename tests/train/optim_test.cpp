// Optimizers, clip_grad_norm and schedules against PyTorch (python/fixture_train_math.py), and
// the optimizer state file: C++ round trip, PyTorch's file read here, ours read by PyTorch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "importer/json.h"
#include "nnx/npy.h"
#include "nnx/optim.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;
using testing_util::expect_error;
using testing_util::relative_error;

fs::path fixture_root() {
  return fs::path(NNX_FIXTURE_DIR) / "train_math";
}

#define NEED_FIXTURES()                                                          \
  do {                                                                           \
    if (std::string(NNX_PYTHON).empty()) GTEST_SKIP() << "no Python with torch"; \
  } while (0)

std::vector<fs::path> folders_under(const std::string& sub) {
  std::vector<fs::path> folders;
  fs::path root = fixture_root() / sub;
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::directory_iterator(root)) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

std::string npy(const fs::path& folder, const std::string& name) {
  return (folder / (name + ".npy")).string();
}

OptimizerOptions options_of(const json::Value& opts) {
  OptimizerOptions o;
  for (const auto& [key, v] : opts.object) {
    if (key == "lr")
      o.lr = v.number;
    else if (key == "momentum")
      o.momentum = v.number;
    else if (key == "dampening")
      o.dampening = v.number;
    else if (key == "weight_decay")
      o.weight_decay = v.number;
    else if (key == "nesterov")
      o.nesterov = v.b;
    else if (key == "maximize")
      o.maximize = v.b;
    else if (key == "beta1")
      o.beta1 = v.number;
    else if (key == "beta2")
      o.beta2 = v.number;
    else if (key == "eps")
      o.eps = v.number;
    else if (key == "amsgrad")
      o.amsgrad = v.b;
    else
      ADD_FAILURE() << "unknown option " << key;
  }
  return o;
}

// One optimizer case: parameters, grads per step, and the schedule of lr changes.
struct OptimCase {
  fs::path folder;
  json::Value meta;
  std::vector<Tensor> grads;  // steps x shape, per parameter
  int steps = 0, resume_at = 0;
  double tol = 0;

  explicit OptimCase(const fs::path& f) : folder(f) {
    meta = json::parse_file((folder / "case.json").string());
    steps = int(meta.find("steps")->integer);
    resume_at = int(meta.find("resume_at")->integer);
    tol = meta.find("tol")->number;
    for (int k = 0; fs::exists(npy(folder, "grads" + std::to_string(k))); ++k)
      grads.push_back(read_npy(npy(folder, "grads" + std::to_string(k))));
  }
  std::unique_ptr<Optimizer> make() const {
    return make_optimizer(meta.find("optimizer")->str, options_of(*meta.find("options")));
  }
  std::vector<Parameter> params(const std::string& prefix) const {
    std::vector<Parameter> ps;
    for (size_t k = 0; k < grads.size(); ++k)
      ps.push_back({std::to_string(k) + ".weight", int(k),
                    read_npy(npy(folder, prefix + std::to_string(k))), Tensor()});
    return ps;
  }
  bool missing(int step, size_t k) const {
    for (const auto& m : meta.find("missing")->array)
      if (m.array[0].integer == step && size_t(m.array[1].integer) == k) return true;
    return false;
  }
  // Runs steps [from, to) on `ps`.
  void run(Optimizer& opt, std::vector<Parameter>& ps, int from, int to,
           ThreadPool* pool = nullptr) const {
    for (int s = from; s < to; ++s) {
      if (const json::Value* lr = meta.find("lr_changes")->find(std::to_string(s)))
        opt.set_lr(lr->number);
      for (size_t k = 0; k < ps.size(); ++k) {
        const Tensor& g = grads[k];
        Shape shape = g.shape();
        shape.erase(0);
        ps[k].grad = missing(s, k) ? Tensor() : g.slice(0, s, s + 1).reshape(shape).clone();
      }
      opt.step(ps, pool);
    }
  }
  void expect_final(const std::vector<Parameter>& ps, const std::string& what) const {
    for (size_t k = 0; k < ps.size(); ++k)
      EXPECT_LE(relative_error(ps[k].value, read_npy(npy(folder, "final" + std::to_string(k)))),
                tol)
          << what << ", parameter " << k;
  }
};

TEST(OptimParity, EveryCaseMatchesPyTorch) {
  NEED_FIXTURES();
  auto folders = folders_under("optim");
  ASSERT_FALSE(folders.empty()) << "no optimizer cases under " << fixture_root();
  ThreadPool pool(3);
  for (const fs::path& folder : folders) {
    SCOPED_TRACE(folder.filename().string());
    OptimCase c(folder);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      auto opt = c.make();
      auto ps = c.params("param");
      c.run(*opt, ps, 0, c.steps, p);
      c.expect_final(ps, p ? "with a pool" : "inline");
      EXPECT_EQ(opt->steps(), c.steps);
    }
  }
}

TEST(OptimParity, ResumesFromPyTorchState) {
  NEED_FIXTURES();
  for (const fs::path& folder : folders_under("optim")) {
    SCOPED_TRACE(folder.filename().string());
    OptimCase c(folder);
    auto opt = c.make();
    auto ps = c.params("mid");
    opt->set_lr(123);  // replaced by the file's
    opt->load_state((folder / "state.pth").string(), ps);
    c.run(*opt, ps, c.resume_at, c.steps);
    c.expect_final(ps, "resumed from PyTorch's state");
  }
}

TEST(OptimState, RoundTripContinuesExactly) {
  NEED_FIXTURES();
  testing_util::TempDir dir;
  for (const fs::path& folder : folders_under("optim")) {
    SCOPED_TRACE(folder.filename().string());
    OptimCase c(folder);
    auto whole = c.make();
    auto ps_whole = c.params("param");
    c.run(*whole, ps_whole, 0, c.steps);

    auto first = c.make();
    auto ps = c.params("param");
    c.run(*first, ps, 0, c.resume_at);
    LrSchedule schedule({.kind = ScheduleKind::loss, .lr = 0.1, .lr_min = 1e-3, .lr_max = 1});
    schedule.on_epoch_end(2.0);
    schedule.on_epoch_end(1.0);
    std::string path = dir.file("opt.pth");
    first->save_state(path, ps, &schedule);
    EXPECT_EQ(dir.listing(), std::vector<std::string>{"opt.pth"});  // no temporary left

    auto second = c.make();
    second->set_lr(5);
    LrSchedule restored({.kind = ScheduleKind::loss, .lr = 0.1, .lr_min = 1e-3, .lr_max = 1});
    second->load_state(path, ps, &restored);
    EXPECT_EQ(second->lr(), first->lr());
    EXPECT_EQ(second->steps(), first->steps());
    EXPECT_EQ(restored.epoch(), 2);
    EXPECT_EQ(restored.lr(), schedule.lr());
    EXPECT_EQ(restored.last_loss(), 1.0);
    c.run(*second, ps, c.resume_at, c.steps);
    for (size_t k = 0; k < ps.size(); ++k)
      EXPECT_TRUE(ps[k].value.bitwise_equal(ps_whole[k].value)) << "parameter " << k;
  }
}

// Our file read by torch.load and accepted by torch.optim.X.load_state_dict; PyTorch's next
// step from it agrees with ours.
TEST(OptimState, PyTorchLoadsOurState) {
  NEED_FIXTURES();
  testing_util::TempDir dir;
  const std::vector<std::string> names = {"sgd_plain", "sgd_nesterov_wd",
                                          "adam_betas_eps_amsgrad_wd", "adamw_default",
                                          "adam_maximize"};
  std::vector<std::vector<Parameter>> stepped;  // after our step past the saved state
  std::string cmd =
      std::string(NNX_PYTHON) + " " + NNX_SOURCE_DIR + "/python/fixture_train_math.py resume";
  for (const std::string& name : names) {
    fs::path folder = fixture_root() / "optim" / name;
    ASSERT_TRUE(fs::exists(folder)) << folder;
    OptimCase c(folder);
    auto opt = c.make();
    auto ps = c.params("param");
    c.run(*opt, ps, 0, c.resume_at);
    fs::path out = dir.file(name);
    fs::create_directories(out);
    opt->save_state((out / "state.pth").string(), ps);
    json::Value meta = json::object({{"optimizer", *c.meta.find("optimizer")},
                                     {"options", *c.meta.find("options")},
                                     {"count", json::integer(int64_t(ps.size()))}});
    testing_util::write_file((out / "case.json").string(), json::dump(meta));
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    for (size_t k = 0; k < ps.size(); ++k) {
      write_npy(npy(out, "param" + std::to_string(k)), ps[k].value);
      ps[k].grad = Tensor::empty(ps[k].value.shape());
      for (int64_t i = 0; i < ps[k].grad.numel(); ++i) ps[k].grad.data<float>()[i] = normal(rng);
      write_npy(npy(out, "grad" + std::to_string(k)), ps[k].grad);
    }
    opt->step(ps);
    stepped.push_back(ps);
    cmd += " " + out.string();
  }
  std::string log = dir.file("log.txt");
  ASSERT_EQ(std::system((cmd + " > " + log + " 2>&1").c_str()), 0) << testing_util::read_file(log);
  for (size_t n = 0; n < names.size(); ++n) {
    fs::path out = dir.file(names[n]);
    for (size_t k = 0; k < stepped[n].size(); ++k)
      EXPECT_LE(
          relative_error(stepped[n][k].value, read_npy(npy(out, "torch_next" + std::to_string(k)))),
          1e-5)
          << names[n] << ", parameter " << k;
  }
}

TEST(OptimState, LoadChecksCountsShapesAndKind) {
  testing_util::TempDir dir;
  std::vector<Parameter> ps = {{"0.weight", 0, Tensor::full({3, 2}, 1.0), Tensor()},
                               {"0.bias", 0, Tensor::full({3}, 1.0), Tensor()}};
  for (auto& p : ps) p.grad = Tensor::full(p.value.shape(), 0.5);
  Adam adam({.lr = 0.01});
  adam.step(ps);
  std::string path = dir.file("adam.pth");
  adam.save_state(path, ps);

  Adam other({.lr = 0.5});
  expect_error([&] { other.load_state(path, std::span(ps).first(1)); },
               "holds the state of 2 parameters, but 1 are being trained", ErrorKind::shape);
  std::vector<Parameter> wrong = ps;
  wrong[1].name = "1.bias";
  wrong[1].value = Tensor::zeros({4});
  expect_error([&] { other.load_state(path, wrong); },
               "'exp_avg' of parameter 1 (1.bias, saved as 0.bias) has shape [3], the parameter "
               "[4]",
               ErrorKind::shape);
  EXPECT_EQ(other.lr(), 0.5);  // unchanged on error
  EXPECT_TRUE(other.state().empty());
  SGD sgd({.lr = 0.1, .momentum = 0.9});
  expect_error([&] { sgd.load_state(path, ps); },
               "holds the state of optimizer 'adam', expected 'sgd'");
  AdamW adamw({});
  expect_error([&] { adamw.load_state(path, ps); }, "expected 'adamw'");
  expect_error([&] { other.load_state(dir.file("missing.pth"), ps); }, "missing.pth",
               ErrorKind::io);

  other.load_state(path, ps);
  EXPECT_EQ(other.lr(), 0.01);
  EXPECT_EQ(other.state()[0].step, 1);
  expect_error([&] { other.step(std::span(ps).first(1)); },
               "step() with 1 parameters, but the optimizer's state is for 2", ErrorKind::usage);
}

TEST(Optim, ChecksOptionsAndNames) {
  EXPECT_EQ(make_optimizer("adamw", {})->weight_decay(), 0.01);
  EXPECT_EQ(make_optimizer("adam", {})->weight_decay(), 0.0);
  EXPECT_EQ(make_optimizer("sgd", {})->kind(), OptimizerKind::sgd);
  expect_error([] { make_optimizer("rmsprop", {}); }, "unknown optimizer 'rmsprop'",
               ErrorKind::usage);
  expect_error([] { SGD({.lr = 0.1, .nesterov = true}); }, "nesterov needs a momentum",
               ErrorKind::usage);
  expect_error([] { Adam({.beta1 = 1.0}); }, "betas must be in [0, 1)", ErrorKind::usage);
  expect_error([] { SGD({.lr = -1}); }, "invalid learning rate -1", ErrorKind::usage);
  SGD sgd({});
  std::vector<Parameter> ps = {{"w", 0, Tensor::zeros({2}), Tensor::zeros({3})}};
  expect_error([&] { sgd.step(ps); }, "the grad of w has shape [3], its value [2]",
               ErrorKind::shape);
}

// A parameter large enough to be split among threads: the same bits with and without a pool.
TEST(Optim, ThreadPoolGivesTheSameBits) {
  ThreadPool pool(4);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (const char* name : {"sgd", "adam", "adamw"}) {
    OptimizerOptions o{.lr = 0.01, .momentum = 0.9, .nesterov = true, .amsgrad = true};
    auto a = make_optimizer(name, o), b = make_optimizer(name, o);
    std::vector<Parameter> pa = {{"w", 0, Tensor::empty({300001}), Tensor::empty({300001})}};
    for (int64_t i = 0; i < 300001; ++i) pa[0].value.data<float>()[i] = normal(rng);
    std::vector<Parameter> pb = {{"w", 0, pa[0].value.clone(), Tensor()}};
    for (int s = 0; s < 3; ++s) {
      for (int64_t i = 0; i < 300001; ++i) pa[0].grad.data<float>()[i] = normal(rng);
      pb[0].grad = pa[0].grad.clone();
      a->step(pa);
      b->step(pb, &pool);
    }
    EXPECT_TRUE(pa[0].value.bitwise_equal(pb[0].value)) << name;
  }
}

TEST(ClipGradNorm, MatchesPyTorch) {
  NEED_FIXTURES();
  auto folders = folders_under("clip");
  ASSERT_FALSE(folders.empty());
  ThreadPool pool(2);
  for (const fs::path& folder : folders) {
    SCOPED_TRACE(folder.filename().string());
    json::Value meta = json::parse_file((folder / "case.json").string());
    const json::Value* nt = meta.find("norm_type");
    double norm_type = nt->is_string() ? INFINITY : nt->number;
    std::vector<Parameter> ps;
    for (int64_t k = 0; k < meta.find("count")->integer; ++k) {
      Tensor g = read_npy(npy(folder, "grad" + std::to_string(k)));
      ps.push_back({std::to_string(k), 0, Tensor::zeros(g.shape()), g});
    }
    ps.push_back({"frozen", 0, Tensor::zeros({2}), Tensor()});  // no grad: not counted
    double total = clip_grad_norm(ps, meta.find("max_norm")->number, norm_type, &pool);
    double ref = meta.find("total_norm")->number;
    EXPECT_LE(std::abs(total - ref) / std::max(1.0, std::abs(ref)), 1e-5) << total << " " << ref;
    for (int64_t k = 0; k < meta.find("count")->integer; ++k)
      EXPECT_LE(
          relative_error(ps[size_t(k)].grad, read_npy(npy(folder, "clipped" + std::to_string(k)))),
          1e-5);
  }
}

TEST(Schedule, StepAndCosineMatchPyTorch) {
  NEED_FIXTURES();
  json::Value meta = json::parse_file((fixture_root() / "schedules" / "schedules.json").string());
  ScheduleOptions base{.lr = meta.find("lr")->number,
                       .lr_min = meta.find("lr_min")->number,
                       .step_size = int(meta.find("step_size")->integer),
                       .gamma = meta.find("gamma")->number,
                       .total_epochs = int(meta.find("total_epochs")->integer)};
  for (const char* name : {"step", "cosine"}) {
    SCOPED_TRACE(name);
    ScheduleOptions o = base;
    o.kind = parse_schedule_name(name);
    LrSchedule s(o);
    const auto& lrs = meta.find("lrs")->find(name)->array;
    for (size_t e = 0; e < lrs.size(); ++e) {
      EXPECT_NEAR(s.lr_for_epoch(int(e)), lrs[e].number, 1e-12) << "epoch " << e;
      EXPECT_NEAR(s.lr(), lrs[e].number, 1e-12) << "epoch " << e;
      s.on_epoch_end(1.0);
    }
  }
}

TEST(Schedule, LossRuleDoublesOnImprovementAndQuartersOtherwise) {
  LrSchedule s({.kind = ScheduleKind::loss, .lr = 0.1, .lr_min = 0.01, .lr_max = 0.3});
  EXPECT_EQ(s.lr(), 0.1);
  EXPECT_EQ(s.on_epoch_end(5.0), 0.1);    // first epoch: nothing to compare with
  EXPECT_EQ(s.on_epoch_end(4.0), 0.2);    // improved
  EXPECT_EQ(s.on_epoch_end(3.0), 0.3);    // improved, clamped to lr_max
  EXPECT_EQ(s.on_epoch_end(3.5), 0.075);  // worse
  EXPECT_EQ(s.on_epoch_end(3.5), 0.01875);
  EXPECT_EQ(s.on_epoch_end(NAN), 0.01);  // clamped to lr_min
  EXPECT_EQ(s.epoch(), 6);
  SGD sgd({.lr = 1});
  s.apply(sgd);
  EXPECT_EQ(sgd.lr(), 0.01);
  EXPECT_EQ(parse_schedule_name("none"), ScheduleKind::constant);
  expect_error([] { parse_schedule_name("exp"); }, "unknown schedule 'exp'", ErrorKind::usage);
  expect_error([] { LrSchedule({.kind = ScheduleKind::cosine}); }, "needs total_epochs > 0",
               ErrorKind::usage);
}

}  // namespace
}  // namespace nnx
