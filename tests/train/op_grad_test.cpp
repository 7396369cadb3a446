// Every op's backward pass against PyTorch's autograd: each case folder written by
// python/fixture_grads.py holds a constructor string, inputs, parameters, upstream gradients and
// PyTorch's input and parameter gradients (and, for training forwards, the buffers after it).
// Dropout and StochasticDepth draw their masks from our own generator, so their training
// backward is checked against the mask of the forward and against finite differences instead.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "importer/call_parser.h"
#include "importer/json.h"
#include "nnx/npy.h"
#include "nnx/registry.h"
#include "nnx/thread_pool.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

fs::path grad_root() {
  return fs::path(NNX_FIXTURE_DIR) / "grads";
}

std::vector<fs::path> case_folders() {
  std::vector<fs::path> folders;
  if (!fs::exists(grad_root())) return folders;
  for (auto& entry : fs::recursive_directory_iterator(grad_root()))
    if (entry.path().filename() == "case.json") folders.push_back(entry.path().parent_path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

Tensor nan_filled(const Shape& shape) {
  return Tensor::full(shape, std::numeric_limits<double>::quiet_NaN(), DType::f32);
}

struct Forward {
  std::shared_ptr<Op> op;
  std::vector<Tensor> inputs, outputs, saved;
};

// Builds the op of a case, runs the forward and the backward with the fixture's gradients, and
// returns what differs from PyTorch (empty when everything agrees). `skip_first_grad`: input
// 0's gradient is not asked for (undefined), as for an input that needs none.
std::string run_case(const fs::path& folder, ThreadPool* pool, bool skip_first_grad) {
  json::Value meta = json::parse_file((folder / "case.json").string());
  const double tol = meta.find("tol")->number;
  const bool training = meta.find("training")->b;
  Call call = parse_call(meta.find("call")->str);
  std::shared_ptr<Op> op = make_op(call);
  const int num_in = int(meta.find("num_inputs")->integer);
  const int num_out = int(meta.find("num_outputs")->integer);
  op->check_arity(num_in, num_out);
  for (auto& name : meta.find("params")->array)
    op->set_param(name.str, read_npy((folder / ("param_" + name.str + ".npy")).string()));
  std::vector<Tensor> inputs;
  std::vector<TensorSpec> specs;
  for (int i = 0; i < num_in; ++i) {
    inputs.push_back(read_npy((folder / ("in" + std::to_string(i) + ".npy")).string()));
    specs.push_back({inputs.back().shape(), inputs.back().dtype()});
  }
  std::vector<TensorSpec> out_specs = op->infer_shapes(specs, num_out);
  std::vector<Tensor> outputs(static_cast<size_t>(num_out));
  for (int i = 0; i < num_out; ++i)
    if (!op->output_view_of(i)) outputs[i] = Tensor::empty(out_specs[i].shape, out_specs[i].dtype);
  RandomEngine rng(7);
  std::vector<Tensor> saved;
  ExecContext ctx;
  ctx.pool = pool;
  ctx.training = training;
  ctx.rng = &rng;
  ctx.saved = &saved;
  op->forward(ctx, inputs, outputs);

  std::string failures;
  auto compare = [&](const std::string& what, const Tensor& got, const fs::path& ref_path) {
    Tensor ref = read_npy(ref_path.string());
    double err = testing_util::relative_error(got, ref);
    if (!(err <= tol))
      failures += " " + what + " error " + std::to_string(err) + " (" + got.str() + ")";
  };
  for (auto& name : meta.find("after")->array) {
    const Param* p = op->find_param(name.str);
    if (p == nullptr) {
      failures += " no buffer " + name.str;
      continue;
    }
    compare("buffer " + name.str + " after the forward", p->value,
            folder / ("after_" + name.str + ".npy"));
  }

  // The gradients asked for, NaN-filled so that what the backward does not write shows.
  const BackwardNeeds needs = op->backward_needs();
  std::vector<Tensor> ins(static_cast<size_t>(num_in)), outs(static_cast<size_t>(num_out)), gouts,
      gins(static_cast<size_t>(num_in));
  for (int i = 0; i < num_in; ++i) {
    if (needs.inputs) ins[i] = inputs[i];
    const bool is_float = meta.find("float_inputs")->array[size_t(i)].b;
    if (is_float && !(skip_first_grad && i == 0)) gins[i] = nan_filled(inputs[i].shape());
  }
  for (int i = 0; i < num_out; ++i) {
    if (needs.outputs) outs[i] = outputs[i];
    gouts.push_back(read_npy((folder / ("gout" + std::to_string(i) + ".npy")).string()));
  }
  std::vector<std::string> trainable;
  for (auto& name : meta.find("trainable")->array) trainable.push_back(name.str);
  std::vector<Tensor> gparams;
  bool any_trainable = false;
  for (const Param& p : op->params()) {
    const bool expected = std::count(trainable.begin(), trainable.end(), p.name) > 0;
    if (expected != p.trainable)
      failures += " parameter " + p.name + (p.trainable ? " trainable" : " not trainable") +
                  ", in PyTorch" + (expected ? " trainable" : " not trainable");
    gparams.push_back(p.trainable ? nan_filled(p.value.shape()) : Tensor());
    any_trainable = any_trainable || p.trainable;
  }
  if (!any_trainable) gparams.clear();
  op->backward(ctx, ins, outs, gouts, gins, gparams);

  for (int i = 0; i < num_in; ++i)
    if (gins[i].defined())
      compare("grad input " + std::to_string(i), gins[i],
              folder / ("gin" + std::to_string(i) + ".npy"));
  for (size_t k = 0; k < gparams.size(); ++k)
    if (gparams[k].defined())
      compare("grad " + op->params()[k].name, gparams[k],
              folder / ("gparam_" + op->params()[k].name + ".npy"));
  return failures;
}

void run_all(ThreadPool* pool) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  auto folders = case_folders();
  ASSERT_FALSE(folders.empty()) << "no gradient cases under " << grad_root();
  for (auto& folder : folders) {
    std::string name = fs::relative(folder, grad_root()).string();
    json::Value meta = json::parse_file((folder / "case.json").string());
    const bool several_inputs = meta.find("num_inputs")->integer >= 2;
    for (bool skip_first : {false, true}) {
      if (skip_first && !several_inputs) continue;
      try {
        std::string failures = run_case(folder, pool, skip_first);
        EXPECT_TRUE(failures.empty())
            << name << (skip_first ? " (no gradient for input 0)" : "") << ":" << failures;
      } catch (const std::exception& e) {
        ADD_FAILURE() << name << ": " << e.what();
      }
    }
  }
}

TEST(OpGrad, EveryCaseMatchesPyTorchSingleThreaded) {
  run_all(nullptr);
}

TEST(OpGrad, EveryCaseMatchesPyTorchTwoThreads) {
  ThreadPool pool(2);
  run_all(&pool);
}

// ---- Dropout and StochasticDepth in training mode

Tensor random_nonzero(const Shape& shape, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = (gen() & 1 ? 1.0f : -1.0f) * u(gen);
  return t;
}

Forward training_forward(const std::string& call, const Tensor& x, uint64_t seed, bool training,
                         ThreadPool* pool) {
  Forward f;
  f.op = make_op(parse_call(call));
  f.inputs = {x};
  TensorSpec spec{x.shape(), x.dtype()};
  auto out_specs = f.op->infer_shapes({&spec, 1}, 1);
  f.outputs.resize(1);
  if (!f.op->output_view_of(0)) f.outputs[0] = Tensor::empty(out_specs[0].shape, DType::f32);
  RandomEngine rng(seed);
  ExecContext ctx;
  ctx.pool = pool;
  ctx.training = training;
  ctx.rng = &rng;
  ctx.saved = &f.saved;
  f.op->forward(ctx, f.inputs, f.outputs);
  return f;
}

Tensor run_backward(Forward& f, const Tensor& gout, bool training, ThreadPool* pool) {
  const BackwardNeeds needs = f.op->backward_needs();
  std::vector<Tensor> ins{needs.inputs ? f.inputs[0] : Tensor()};
  std::vector<Tensor> outs{needs.outputs ? f.outputs[0] : Tensor()};
  std::vector<Tensor> gouts{gout}, gins{nan_filled(f.inputs[0].shape())}, gparams;
  ExecContext ctx;
  ctx.pool = pool;
  ctx.training = training;
  ctx.saved = &f.saved;
  f.op->backward(ctx, ins, outs, gouts, gins, gparams);
  return gins[0];
}

struct MaskCase {
  std::string call;
  Shape shape;
  double p;
  Shape mask_shape;  // one draw per element of this shape, broadcast over the input
};

// The mask a training forward applied (y = x * mask, x nonzero), checked to be 0 or 1/(1-p) and
// constant over the broadcast dims.
std::vector<float> read_mask(const MaskCase& c, const Tensor& x, const Tensor& y) {
  const float keep = c.p < 1 ? float(1.0 / (1.0 - c.p)) : 0.0f;
  const Shape& s = x.shape();
  std::vector<float> mask(size_t(c.mask_shape.numel()), -1.0f);
  const float* xp = x.data<float>();
  Tensor yc = y.contiguous();
  const float* yp = yc.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    // Index into the mask: drop the coordinates where the mask has size 1.
    int64_t rest = i, m = 0, mstride = 1;
    for (int d = s.size() - 1; d >= 0; --d) {
      int64_t coord = rest % s[d];
      rest /= s[d];
      if (c.mask_shape[d] != 1) m += coord * mstride;
      mstride *= c.mask_shape[d];
    }
    float v = yp[i] / xp[i];
    EXPECT_TRUE(std::abs(v) < 1e-6f || std::abs(v - keep) < 1e-5f * keep)
        << c.call << ": element " << i << " scaled by " << v << ", expected 0 or " << keep;
    float quantised = std::abs(v) < 1e-6f ? 0.0f : keep;
    if (mask[size_t(m)] < 0) mask[size_t(m)] = quantised;
    EXPECT_EQ(mask[size_t(m)], quantised) << c.call << ": mask not constant over its draw";
  }
  return mask;
}

std::vector<MaskCase> mask_cases() {
  return {
      {"Dropout(p=0.3)", Shape{2, 3, 4, 5}, 0.3, Shape{2, 3, 4, 5}},
      {"Dropout(p=0.5, inplace=True)", Shape{7, 9}, 0.5, Shape{7, 9}},
      {"Dropout1d(p=0.5)", Shape{4, 6, 5}, 0.5, Shape{4, 6, 1}},
      {"Dropout1d(p=0.5)", Shape{12, 5}, 0.5, Shape{12, 1}},
      {"Dropout2d(p=0.4)", Shape{4, 6, 3, 3}, 0.4, Shape{4, 6, 1, 1}},
      {"Dropout3d(p=0.5)", Shape{2, 6, 2, 2, 3}, 0.5, Shape{2, 6, 1, 1, 1}},
      {"Dropout3d(p=0.5)", Shape{12, 2, 2, 3}, 0.5, Shape{12, 1, 1, 1}},
      {"nnx.StochasticDepth(p=0.5, mode=row)", Shape{16, 3, 2, 2}, 0.5, Shape{16, 1, 1, 1}},
      {"nnx.StochasticDepth(p=0.25, mode=batch)", Shape{3, 4, 2, 2}, 0.25, Shape{1, 1, 1, 1}},
  };
}

class DropoutTraining : public ::testing::TestWithParam<bool> {};

TEST_P(DropoutTraining, GradientIsUpstreamTimesTheForwardsMask) {
  ThreadPool pool(2);
  ThreadPool* p = GetParam() ? &pool : nullptr;
  for (const MaskCase& c : mask_cases()) {
    SCOPED_TRACE(c.call + " on " + c.shape.str());
    Tensor x = random_nonzero(c.shape, 1);
    Tensor gout = random_nonzero(c.shape, 2);
    int dropped = 0, kept = 0;
    for (uint64_t seed = 0; seed < 8; ++seed) {
      Forward f = training_forward(c.call, x, seed, true, p);
      std::vector<float> mask = read_mask(c, x, f.outputs[0]);
      for (float m : mask) (m == 0 ? dropped : kept) += 1;
      Tensor gin = run_backward(f, gout, true, p);
      const float* g = gin.data<float>();
      const float* up = gout.data<float>();
      const float* xp = x.data<float>();
      const float* yp = f.outputs[0].contiguous().data<float>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        const float m = std::abs(yp[i] / xp[i]) < 1e-6f ? 0.0f : float(1.0 / (1.0 - c.p));
        ASSERT_NEAR(g[i], up[i] * m, 1e-5f * std::max(1.0f, std::abs(up[i] * m))) << i;
      }
      // The same seed gives the same mask.
      Forward again = training_forward(c.call, x, seed, true, p);
      EXPECT_TRUE(again.outputs[0].contiguous().bitwise_equal(f.outputs[0].contiguous()));
    }
    EXPECT_GT(dropped, 0);
    EXPECT_GT(kept, 0);
  }
}

TEST_P(DropoutTraining, GradientMatchesFiniteDifferences) {
  ThreadPool pool(2);
  ThreadPool* p = GetParam() ? &pool : nullptr;
  for (const MaskCase& c : mask_cases()) {
    SCOPED_TRACE(c.call + " on " + c.shape.str());
    Tensor x = random_nonzero(c.shape, 3);
    Tensor gout = random_nonzero(c.shape, 4);
    const uint64_t seed = 11;
    Forward f = training_forward(c.call, x, seed, true, p);
    Tensor gin = run_backward(f, gout, true, p);
    // L(x) = sum(gout * f(x)) with the generator reseeded: the same mask every time.
    auto loss = [&](const Tensor& at) {
      Forward g = training_forward(c.call, at, seed, true, p);
      Tensor y = g.outputs[0].contiguous();
      double sum = 0;
      for (int64_t i = 0; i < y.numel(); ++i)
        sum += double(gout.data<float>()[i]) * double(y.data<float>()[i]);
      return sum;
    };
    const float h = 1e-2f;
    for (int64_t i = 0; i < x.numel(); ++i) {
      Tensor plus = x.clone(), minus = x.clone();
      plus.data<float>()[i] += h;
      minus.data<float>()[i] -= h;
      const double fd = (loss(plus) - loss(minus)) / (2.0 * h);
      ASSERT_NEAR(gin.data<float>()[i], fd, 1e-2 * std::max(1.0, std::abs(fd))) << i;
    }
  }
}

TEST_P(DropoutTraining, EvaluationModeIsTheIdentity) {
  ThreadPool pool(2);
  ThreadPool* p = GetParam() ? &pool : nullptr;
  for (const MaskCase& c : mask_cases()) {
    SCOPED_TRACE(c.call);
    Tensor x = random_nonzero(c.shape, 5);
    Tensor gout = random_nonzero(c.shape, 6);
    Forward f = training_forward(c.call, x, 0, false, p);
    EXPECT_TRUE(f.outputs[0].contiguous().bitwise_equal(x));
    EXPECT_TRUE(run_backward(f, gout, false, p).bitwise_equal(gout));
  }
}

TEST_P(DropoutTraining, ProbabilityOneDropsEverythingAndZeroNothing) {
  ThreadPool pool(2);
  ThreadPool* p = GetParam() ? &pool : nullptr;
  Tensor x = random_nonzero(Shape{2, 3, 4, 4}, 7);
  Tensor gout = random_nonzero(Shape{2, 3, 4, 4}, 8);
  for (std::string call :
       {"Dropout(p=1.0)", "Dropout2d(p=1)", "nnx.StochasticDepth(p=1.0, mode=row)",
        "nnx.StochasticDepth(p=1.0, mode=batch)"}) {
    SCOPED_TRACE(call);
    Forward f = training_forward(call, x, 3, true, p);
    Tensor gin = run_backward(f, gout, true, p);
    // x * 0 keeps the sign of zero, as PyTorch's does: compare values, not bits.
    EXPECT_EQ(testing_util::relative_error(f.outputs[0], Tensor::zeros(x.shape())), 0.0);
    EXPECT_EQ(testing_util::relative_error(gin, Tensor::zeros(x.shape())), 0.0);
  }
  for (std::string call :
       {"Dropout(p=0.0)", "Dropout3d(p=0)", "nnx.StochasticDepth(p=0.0, mode=row)"}) {
    SCOPED_TRACE(call);
    Forward f = training_forward(call, x, 3, true, p);
    EXPECT_TRUE(f.outputs[0].contiguous().bitwise_equal(x));
    EXPECT_TRUE(run_backward(f, gout, true, p).bitwise_equal(gout));
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, DropoutTraining, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "TwoThreads" : "Inline"; });

}  // namespace
}  // namespace nnx
