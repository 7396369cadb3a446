// Every built-in op's CUDA forward against its CPU forward and PyTorch: each PyTorch op case
// (the fixtures tests/ops reads), a table of argument variants with random inputs and
// parameters, the cuDNN algorithm cache, and whole networks run node by node on the device;
// every variant's training forward and backward, and the optimizers, against the CPU's.
// Every test skips, saying why, where there is no CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "examples/embed/yolo_head.h"
#include "graph/fusion.h"
#include "graph/planner.h"
#include "importer/call_parser.h"
#include "importer/json.h"
#include "nnx/cuda.h"
#include "nnx/loss.h"
#include "nnx/nnx.hpp"
#include "nnx/npy.h"
#include "nnx/optim.h"
#include "nnx/registry.h"
#include "test_util.h"
#include "tests/ops/conv_reference.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/conv_graph.h"
#include "kernels/cuda/conv_igemm.h"
#include "ops/conv2d.h"
#include "runtime/cuda/conv_algo_cache.h"
#endif

namespace nnx {
namespace {

namespace fs = std::filesystem;
using testing_util::relative_error;

constexpr double kCpuTolerance = 1e-4;

// The PyTorch fixtures: NNX_FIXTURE_DIR from the environment when set (a test binary built
// elsewhere and carried to a machine with a device, with the fixtures beside it), else the
// build's.
fs::path fixture_dir() {
  const char* env = std::getenv("NNX_FIXTURE_DIR");
  return env != nullptr && *env != 0 ? fs::path(env) : fs::path(NNX_FIXTURE_DIR);
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    cuda::init();
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  }
};

// ---- running one op on a device

// The op's outputs for CPU `inputs`, run on `device` (inputs copied there, outputs back), on
// `stream` (nullptr: the legacy stream). Outputs the op declares as views are not allocated.
std::vector<Tensor> forward_on(const Op& op, const std::vector<Tensor>& inputs, int num_outputs,
                               Device device, void* stream = nullptr) {
  cuda::StreamGuard guard(device.is_cuda() ? stream : nullptr, device.index);
  std::vector<Tensor> args;
  std::vector<TensorSpec> specs;
  for (const Tensor& t : inputs) {
    args.push_back(t.contiguous().to(device));
    specs.push_back({t.shape(), t.dtype()});
  }
  const std::vector<TensorSpec> out_specs = op.infer_shapes(specs, num_outputs);
  std::vector<Tensor> outputs(static_cast<size_t>(num_outputs));
  for (int i = 0; i < num_outputs; ++i)
    if (!op.output_view_of(i))
      outputs[size_t(i)] =
          Tensor::empty(out_specs[size_t(i)].shape, out_specs[size_t(i)].dtype, device);
  ExecContext ctx;
  ctx.device = device;
  ctx.stream = device.is_cuda() ? stream : nullptr;
  op.forward(ctx, args, outputs);
  std::vector<Tensor> result;
  for (int i = 0; i < num_outputs; ++i) {
    Tensor& out = outputs[size_t(i)];
    EXPECT_TRUE(out.defined()) << op.repr() << ": output " << i << " not set";
    if (!out.defined()) {
      result.emplace_back();
      continue;
    }
    EXPECT_EQ(out.shape(), out_specs[size_t(i)].shape) << op.repr() << ": output " << i;
    EXPECT_EQ(out.device(), device) << op.repr() << ": output " << i;
    result.push_back(out.to(Device::cpu()).contiguous());
  }
  return result;
}

// " output k: error e" for each output of `got` that differs from `ref` by more than `tol`.
std::string compare(const std::vector<Tensor>& got, const std::vector<Tensor>& ref, double tol,
                    const std::string& against) {
  std::string failures;
  if (got.size() != ref.size())
    return " " + std::to_string(got.size()) + " outputs, " + against + " " +
           std::to_string(ref.size());
  for (size_t k = 0; k < got.size(); ++k) {
    if (!got[k].defined() || got[k].shape() != ref[k].shape()) {
      failures += " output " + std::to_string(k) + " shape " +
                  (got[k].defined() ? got[k].shape().str() : std::string("(none)")) + ", " +
                  against + " " + ref[k].shape().str();
      continue;
    }
    const double err = got[k].dtype() == DType::f32 || ref[k].dtype() == DType::f32
                           ? relative_error(got[k], ref[k])
                           : (got[k].bitwise_equal(ref[k]) ? 0.0 : INFINITY);
    if (!(err <= tol))
      failures +=
          " output " + std::to_string(k) + " vs " + against + ": error " + std::to_string(err);
  }
  return failures;
}

// ---- every PyTorch op case (python/gen_fixtures.py writes them; tests/ops reads them)

std::vector<fs::path> op_case_folders() {
  std::vector<fs::path> folders;
  const fs::path root = fixture_dir() / "ops";
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::recursive_directory_iterator(root))
    if (entry.path().filename() == "case.json") folders.push_back(entry.path().parent_path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

std::string run_op_case(const fs::path& folder, void* stream) {
  json::Value meta = json::parse_file((folder / "case.json").string());
  std::shared_ptr<Op> op = make_op(parse_call(meta.find("call")->str));
  const int num_in = int(meta.find("num_inputs")->integer);
  const int num_out = int(meta.find("num_outputs")->integer);
  op->check_arity(num_in, num_out);
  for (auto& name : meta.find("params")->array)
    op->set_param(name.str, read_npy((folder / ("param_" + name.str + ".npy")).string()));
  std::vector<Tensor> inputs;
  for (int i = 0; i < num_in; ++i)
    inputs.push_back(read_npy((folder / ("in" + std::to_string(i) + ".npy")).string()));
  std::vector<Tensor> refs;
  for (int i = 0; i < num_out; ++i)
    refs.push_back(read_npy((folder / ("ref" + std::to_string(i) + ".npy")).string()));
  const std::vector<Tensor> on_cpu = forward_on(*op, inputs, num_out, Device::cpu());
  const std::vector<Tensor> on_cuda = forward_on(*op, inputs, num_out, Device::cuda(0), stream);
  return compare(on_cuda, refs, meta.find("tol")->number, "PyTorch") +
         compare(on_cuda, on_cpu, kCpuTolerance, "CPU");
}

TEST_F(CudaOps, EveryPyTorchOpCaseMatchesOnCuda) {
  const auto folders = op_case_folders();
  if (folders.empty() && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  ASSERT_FALSE(folders.empty()) << "no op cases under " << fixture_dir().string() << "/ops";
  void* stream = cuda::create_stream(0);
  // The legacy stream, then a stream of its own (as the executor will run them).
  for (void* s : {static_cast<void*>(nullptr), stream}) {
    int passed = 0;
    for (auto& folder : folders) {
      const std::string name = fs::relative(folder, fixture_dir() / "ops").string();
      try {
        const std::string failures = run_op_case(folder, s);
        EXPECT_TRUE(failures.empty()) << name << (s ? " (own stream)" : "") << ":" << failures;
        passed += failures.empty();
      } catch (const std::exception& e) {
        ADD_FAILURE() << name << (s ? " (own stream)" : "") << ": " << e.what();
      }
    }
    std::printf("[ cuda ops ] %d of %zu PyTorch op cases pass on CUDA%s\n", passed, folders.size(),
                s ? " on a stream of their own" : "");
  }
  cuda::destroy_stream(stream);
}

// ---- argument variants with random inputs and parameters, CUDA against the CPU

struct Variant {
  std::string call;
  std::vector<Shape> inputs;
  int num_outputs = 1;
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> table = {
      // Conv2d: strides, padding forms and modes, groups, dilation, no bias
      {"Conv2d(3, 8, 3)", {{2, 3, 17, 19}}},
      {"Conv2d(3, 8, 3, stride=2, padding=1)", {{2, 3, 17, 19}}},
      {"Conv2d(8, 8, 3, padding=1, groups=8)", {{2, 8, 16, 16}}},
      {"Conv2d(8, 16, (3, 5), stride=(2, 1), padding=(2, 1), dilation=(2, 3), groups=4)",
       {{1, 8, 20, 21}}},
      {"Conv2d(4, 6, 4, padding='same')", {{2, 4, 9, 10}}},
      {"Conv2d(4, 6, (2, 5), padding='same', dilation=(3, 1), bias=False)", {{1, 4, 11, 9}}},
      {"Conv2d(3, 4, 3, padding='valid')", {{1, 3, 8, 8}}},
      {"Conv2d(4, 6, 3, padding=2, padding_mode='reflect')", {{2, 4, 7, 8}}},
      {"Conv2d(4, 6, 3, padding=(1, 2), padding_mode='replicate')", {{2, 4, 7, 8}}},
      {"Conv2d(4, 6, 3, stride=2, padding=3, padding_mode='circular')", {{2, 4, 7, 8}}},
      {"Conv2d(4, 6, 4, padding='same', padding_mode='reflect')", {{1, 4, 9, 9}}},
      {"Conv2d(16, 32, 1, bias=False)", {{2, 16, 13, 11}}},
      {"Conv2d(64, 64, 3, padding=1)", {{1, 64, 40, 40}}},
      // Linear: ranks, no bias
      {"Linear(10, 7)", {{3, 10}}},
      {"Linear(10, 7, bias=False)", {{2, 3, 10}}},
      {"Linear(256, 1000)", {{4, 256}}},
      // BatchNorm2d: running statistics, none, affine or not
      {"BatchNorm2d(6)", {{2, 6, 5, 7}}},
      {"BatchNorm2d(6, eps=0.001, affine=False)", {{2, 6, 5, 7}}},
      {"BatchNorm2d(6, track_running_stats=False)", {{2, 6, 5, 7}}},
      {"BatchNorm2d(6, affine=False, track_running_stats=False)", {{3, 6, 33, 31}}},
      // pooling
      {"MaxPool2d(2)", {{2, 3, 8, 9}}},
      {"MaxPool2d(3, stride=2, padding=1)", {{2, 3, 9, 9}}},
      {"MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)", {{1, 2, 13, 14}}},
      {"MaxPool2d((2, 3), stride=(1, 2), ceil_mode=True)", {{1, 2, 7, 8}}},
      {"AvgPool2d(2)", {{2, 3, 8, 9}}},
      {"AvgPool2d(3, stride=2, padding=1)", {{2, 3, 9, 9}}},
      {"AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)", {{1, 2, 10, 11}}},
      {"AvgPool2d(2, divisor_override=3)", {{1, 2, 6, 6}}},
      {"AvgPool2d((3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True)", {{1, 2, 8, 7}}},
      {"AdaptiveAvgPool2d(1)", {{2, 3, 10, 11}}},
      {"AdaptiveAvgPool2d((3, 5))", {{2, 3, 10, 11}}},
      {"AdaptiveAvgPool2d((None, 4))", {{2, 3, 10, 11}}},
      // resampling
      {"Upsample(scale_factor=2.0, mode='nearest')", {{1, 3, 5, 6}}},
      {"Upsample(size=(7, 9), mode='nearest')", {{1, 3, 5, 6}}},
      {"Upsample(scale_factor=1.7, mode='nearest-exact')", {{1, 3, 5, 6}}},
      {"Upsample(scale_factor=2.0, mode='bilinear', align_corners=False)", {{2, 3, 5, 6}}},
      {"Upsample(scale_factor=1.5, mode='bilinear', align_corners=True)", {{2, 3, 5, 6}}},
      {"Upsample(size=(4, 3), mode='bilinear')", {{1, 2, 9, 7}}},
      {"Upsample(scale_factor=2.0, mode='bicubic', align_corners=False)", {{1, 2, 5, 6}}},
      {"Upsample(scale_factor=1.5, mode='bicubic', align_corners=True)", {{1, 2, 5, 6}}},
      {"Upsample(size=(3, 4), mode='area')", {{1, 2, 9, 10}}},
      {"UpsamplingNearest2d(scale_factor=2)", {{1, 2, 4, 5}}},
      {"UpsamplingBilinear2d(scale_factor=2)", {{1, 2, 4, 5}}},
      // normalisation and affine maps
      {"LayerNorm(12)", {{2, 5, 12}}},
      {"LayerNorm((4, 6), elementwise_affine=False)", {{3, 4, 6}}},
      {"LayerNorm(96, eps=1e-06)", {{2, 7, 7, 96}}},
      {"LayerNorm(1000)", {{3, 1000}}},
      {"Affine(scale=0.5, shift=3.0)", {{2, 3, 4, 5}}},
      {"Pruner(ch=6, prunable=True, activated=True)", {{2, 6, 4, 5}}},
      {"Pruner(ch=6, prunable=True, activated=False)", {{2, 6, 4, 5}}},
      {"AllOrNothingPruner(ch=6, prunable=True)", {{2, 6, 4, 5}}},
      // elementwise, with broadcasting and n-ary folds
      {"Add(num=2)", {{2, 3, 4, 5}, {2, 3, 4, 5}}},
      {"Add(num=2)", {{2, 3, 4, 5}, {1, 3, 1, 1}}},
      {"Add(num=3)", {{2, 3, 4, 5}, {2, 3, 1, 1}, {5}}},
      {"Add(num=1)", {{2, 3}}},
      {"Sub(num=2)", {{2, 1, 4, 1}, {3, 1, 5}}},
      {"Sub(num=3)", {{1, 3, 1, 1}, {2, 3, 4, 5}, {2, 3, 4, 5}}},
      {"Mul(num=2)", {{2, 3, 4, 5}, {2, 3, 1, 1}}},
      {"Mul(num=3)", {{4, 5}, {3, 1, 1}, {1}}},
      // activations
      {"ReLU()", {{2, 3, 7, 9}}},
      {"ReLU6()", {{2, 3, 7, 9}}},
      {"LeakyReLU(negative_slope=0.2)", {{2, 3, 7, 9}}},
      {"Hardtanh(min_val=-0.5, max_val=2.0)", {{2, 3, 7, 9}}},
      {"Sigmoid()", {{2, 3, 7, 9}}},
      {"Tanh()", {{2, 3, 7, 9}}},
      {"SiLU()", {{2, 3, 7, 9}}},
      {"Mish()", {{2, 3, 7, 9}}},
      {"Hardswish()", {{2, 3, 7, 9}}},
      {"Hardsigmoid()", {{2, 3, 7, 9}}},
      {"ELU(alpha=0.7)", {{2, 3, 7, 9}}},
      {"GELU()", {{2, 3, 7, 9}}},
      {"GELU(approximate='tanh')", {{2, 3, 7, 9}}},
      {"Softplus(beta=2, threshold=5)", {{2, 3, 7, 9}}},
      // softmax over contiguous and strided dims
      {"Softmax(dim=1)", {{2, 5, 3, 4}}},
      {"Softmax(dim=-1)", {{4, 37}}},
      {"Softmax(dim=0)", {{3, 4}}},
      {"LogSoftmax(dim=1)", {{2, 5, 3, 4}}},
      {"LogSoftmax(dim=-1)", {{3, 1000}}},
      // data movement and views
      {"Cat(dim=1)", {{2, 3, 4, 5}, {2, 2, 4, 5}}},
      {"Cat(dim=-1)", {{2, 3, 4, 5}, {2, 3, 4, 2}}},
      {"Cat(dim=0)", {{2, 3}, {1, 3}}},
      {"Cat(dim=2)", {{1, 2, 3, 4}, {1, 2, 1, 4}, {1, 2, 2, 4}}},
      {"Permute(dims=(0, 2, 3, 1))", {{2, 3, 4, 5}}},
      {"Permute(dims=(1, 0))", {{7, 9}}},
      {"Split(sizes=[2, 3], dim=1)", {{2, 5, 3, 4}}, 2},
      {"Split(sizes=[1, 1, 2], dim=-1)", {{2, 3, 4}}, 3},
      {"Reshape(shape=(0, -1))", {{2, 3, 4, 5}}},
      {"Flatten()", {{2, 3, 4, 5}}},
      {"Flatten(start_dim=2)", {{2, 3, 4, 5}}},
      {"Unflatten(1, (3, 4))", {{2, 12, 5}}},
      {"Identity()", {{2, 3}}},
      {"Dropout(p=0.5)", {{2, 3, 4, 5}}},
      {"Dropout2d(p=0.1)", {{2, 3, 4, 5}}},
      {"StochasticDepth(p=0.1, mode='row')", {{2, 3, 4, 5}}},
      // reductions
      {"Mean(dim=(2, 3), keepdim=False)", {{2, 3, 7, 9}}},
      {"Mean(dim=(1, 3), keepdim=True)", {{2, 3, 7, 9}}},
      {"Mean(dim=(-1,))", {{4, 300}}},
      {"Mean(dim=(0, 2))", {{3, 4, 5}}},
  };
  return table;
}

Tensor random_tensor(const Shape& shape, RandomEngine& rng, float lo, float hi) {
  Tensor t = Tensor::empty(shape);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

// PyTorch's initialisation, then every float parameter moved by up to +-0.5, so that running
// statistics, gates and biases are not their trivial defaults (variances stay positive).
void randomise_params(Op& op, RandomEngine& rng) {
  op.init_params(rng);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  for (const Param& p : op.params()) {
    if (p.value.dtype() != DType::f32) continue;
    Tensor t = p.value.clone();
    float* v = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) v[i] += dist(rng);
    op.set_param(p.name, t);
  }
}

TEST_F(CudaOps, EveryVariantMatchesTheCpu) {
  void* stream = cuda::create_stream(0);
  RandomEngine rng(1234);
  for (const Variant& v : variants()) {
    try {
      std::shared_ptr<Op> op = make_op(parse_call(v.call));
      op->check_arity(int(v.inputs.size()), v.num_outputs);
      randomise_params(*op, rng);
      std::vector<Tensor> inputs;
      for (const Shape& s : v.inputs) inputs.push_back(random_tensor(s, rng, -4.0f, 4.0f));
      const auto on_cpu = forward_on(*op, inputs, v.num_outputs, Device::cpu());
      const auto on_cuda = forward_on(*op, inputs, v.num_outputs, Device::cuda(0), stream);
      const std::string failures = compare(on_cuda, on_cpu, kCpuTolerance, "CPU");
      EXPECT_TRUE(failures.empty()) << v.call << ":" << failures;
      // A second run reuses the cached weights and algorithm: the same numbers (to rounding,
      // should cuDNN's choice not be bitwise deterministic).
      const auto again = forward_on(*op, inputs, v.num_outputs, Device::cuda(0), stream);
      const std::string drift = compare(again, on_cuda, 1e-6, "the first CUDA run");
      EXPECT_TRUE(drift.empty()) << v.call << ": second run:" << drift;
    } catch (const std::exception& e) {
      ADD_FAILURE() << v.call << ": " << e.what();
    }
  }
  cuda::destroy_stream(stream);
}

// Without a device: every variant is a valid call whose CPU forward runs (the table's own check).
TEST(CudaOpVariants, EveryVariantRunsOnTheCpu) {
  RandomEngine rng(1234);
  for (const Variant& v : variants()) {
    try {
      std::shared_ptr<Op> op = make_op(parse_call(v.call));
      op->check_arity(int(v.inputs.size()), v.num_outputs);
      randomise_params(*op, rng);
      std::vector<Tensor> inputs;
      for (const Shape& s : v.inputs) inputs.push_back(random_tensor(s, rng, -4.0f, 4.0f));
      forward_on(*op, inputs, v.num_outputs, Device::cpu());
    } catch (const std::exception& e) {
      ADD_FAILURE() << v.call << ": " << e.what();
    }
  }
}

TEST_F(CudaOps, NanPropagatesThroughMaxPoolAsOnTheCpu) {
  std::shared_ptr<Op> op = make_op(parse_call("MaxPool2d(2)"));
  RandomEngine rng(7);
  Tensor x = random_tensor({1, 1, 4, 4}, rng, -1, 1);
  x.data<float>()[5] = std::nanf("");
  const auto on_cpu = forward_on(*op, {x}, 1, Device::cpu());
  const auto on_cuda = forward_on(*op, {x}, 1, Device::cuda(0));
  EXPECT_TRUE(compare(on_cuda, on_cpu, 0.0, "CPU").empty());
}

// ---- training: forward with saved state, then backward, on the device against the CPU

struct TrainPass {
  std::vector<Tensor> outputs, grad_inputs, grad_params, params;  // copied to the host
};

// One training forward (ctx.saved, a generator seeded with `seed`) and the backward of
// `grad_outputs` through `op` on `device`: its outputs, input and parameter gradients, and its
// parameters and buffers afterwards (running statistics move in training).
TrainPass train_pass(const Op& op, const std::vector<Tensor>& inputs,
                     const std::vector<Tensor>& grad_outputs, Device device, uint64_t seed) {
  std::vector<Tensor> args;
  std::vector<TensorSpec> specs;
  for (const Tensor& t : inputs) {
    args.push_back(t.contiguous().to(device));
    specs.push_back({t.shape(), t.dtype()});
  }
  const int num_outputs = int(grad_outputs.size());
  const std::vector<TensorSpec> out_specs = op.infer_shapes(specs, num_outputs);
  std::vector<Tensor> outputs(grad_outputs.size());
  for (int i = 0; i < num_outputs; ++i)
    if (!op.output_view_of(i))
      outputs[size_t(i)] =
          Tensor::empty(out_specs[size_t(i)].shape, out_specs[size_t(i)].dtype, device);
  RandomEngine rng(seed);
  std::vector<Tensor> saved;
  ExecContext ctx;
  ctx.device = device;
  ctx.training = true;
  ctx.rng = &rng;
  ctx.saved = &saved;
  op.forward(ctx, args, outputs);
  const BackwardNeeds need = op.backward_needs();
  std::vector<Tensor> ins(args.size()), outs(outputs.size()), gouts, gins;
  for (size_t i = 0; i < args.size(); ++i) {
    if (need.inputs) ins[i] = args[i];
    gins.push_back(Tensor::empty(args[i].shape(), DType::f32, device));
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    if (need.outputs) outs[k] = outputs[k];
    gouts.push_back(grad_outputs[k].to(device));
  }
  std::vector<Tensor> gparams;
  bool any_param = false;
  for (const Param& p : op.params()) {
    const bool trained = p.trainable && p.value.dtype() == DType::f32;
    gparams.push_back(trained ? Tensor::empty(p.value.shape(), DType::f32, device) : Tensor());
    any_param = any_param || trained;
  }
  if (!any_param) gparams.clear();
  op.backward(ctx, ins, outs, gouts, gins, gparams);
  TrainPass r;
  auto host = [](const Tensor& t) { return t.defined() ? t.to(Device::cpu()) : t; };
  for (const Tensor& t : outputs) r.outputs.push_back(host(t));
  for (const Tensor& t : gins) r.grad_inputs.push_back(host(t));
  for (const Tensor& t : gparams)
    if (t.defined()) r.grad_params.push_back(host(t));
  for (const Param& p : op.params()) r.params.push_back(host(p.value));
  return r;
}

// Random inputs for a variant and random gradients for its outputs.
void random_training_data(const Op& op, const Variant& v, RandomEngine& rng,
                          std::vector<Tensor>& inputs, std::vector<Tensor>& grads) {
  std::vector<TensorSpec> specs;
  for (const Shape& s : v.inputs) {
    inputs.push_back(random_tensor(s, rng, -4.0f, 4.0f));
    specs.push_back({s, DType::f32});
  }
  for (const TensorSpec& o : op.infer_shapes(specs, v.num_outputs))
    grads.push_back(random_tensor(o.shape, rng, -1.0f, 1.0f));
}

// Every variant's training forward and backward on CUDA (native bodies, or the CPU bodies on host
// copies for the ops without one) against the CPU's, which tests/ops and tests/train check
// against PyTorch's autograd; the op's parameters held on the device as a Trainer holds them.
TEST_F(CudaOps, EveryVariantTrainsAsOnTheCpu) {
  RandomEngine rng(4321);
  int compared = 0;
  for (const Variant& v : variants()) {
    try {
      std::shared_ptr<Op> cpu_op = make_op(parse_call(v.call));
      cpu_op->check_arity(int(v.inputs.size()), v.num_outputs);
      randomise_params(*cpu_op, rng);
      std::shared_ptr<Op> gpu_op = make_op(parse_call(v.call));
      for (const Param& p : cpu_op->params()) gpu_op->set_param(p.name, p.value.clone());
      gpu_op->place_params(Device::cuda(0));
      for (const Param& p : gpu_op->params())
        EXPECT_TRUE(p.value.device().is_cuda()) << v.call << ": " << p.name << " not placed";
      std::vector<Tensor> inputs, grads;
      random_training_data(*cpu_op, v, rng, inputs, grads);
      TrainPass cpu;
      try {
        cpu = train_pass(*cpu_op, inputs, grads, Device::cpu(), 99);
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::unsupported) continue;  // no backward on the CPU either
        throw;
      }
      const TrainPass gpu = train_pass(*gpu_op, inputs, grads, Device::cuda(0), 99);
      const std::string failures =
          compare(gpu.outputs, cpu.outputs, kCpuTolerance, "CPU (outputs)") +
          compare(gpu.grad_inputs, cpu.grad_inputs, kCpuTolerance, "CPU (input gradients)") +
          compare(gpu.grad_params, cpu.grad_params, kCpuTolerance, "CPU (parameter gradients)") +
          compare(gpu.params, cpu.params, kCpuTolerance, "CPU (parameters after)");
      EXPECT_TRUE(failures.empty()) << v.call << ":" << failures;
      ++compared;
    } catch (const std::exception& e) {
      ADD_FAILURE() << v.call << ": " << e.what();
    }
  }
  EXPECT_GT(compared, 60);
}

// Without a device: the training pass above runs for the variants on the CPU (the harness's own
// check), with the op's parameters held where the CPU body reads them.
TEST(CudaOpVariants, EveryVariantTrainsOnTheCpu) {
  RandomEngine rng(4321);
  int trained = 0;
  for (const Variant& v : variants()) {
    try {
      std::shared_ptr<Op> op = make_op(parse_call(v.call));
      op->check_arity(int(v.inputs.size()), v.num_outputs);
      randomise_params(*op, rng);
      std::vector<Tensor> inputs, grads;
      random_training_data(*op, v, rng, inputs, grads);
      const TrainPass r = train_pass(*op, inputs, grads, Device::cpu(), 99);
      EXPECT_EQ(r.grad_inputs.size(), inputs.size()) << v.call;
      ++trained;
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::unsupported) ADD_FAILURE() << v.call << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << v.call << ": " << e.what();
    }
  }
  EXPECT_GT(trained, 60);
}

// The same parameters and gradients on the CPU and on the device: every optimizer's steps agree,
// and a state file written from the device's state resumes on the CPU where it left off.
TEST_F(CudaOps, OptimizersUpdateOnTheDeviceAsOnTheCpu) {
  RandomEngine rng(55);
  struct Setting {
    const char* name;
    OptimizerOptions options;
  };
  std::vector<Setting> settings;
  {
    OptimizerOptions o;
    o.lr = 0.05;
    settings.push_back({"sgd", o});
    o.momentum = 0.9;
    o.weight_decay = 1e-3;
    o.nesterov = true;
    settings.push_back({"sgd", o});
    o.nesterov = false;
    o.dampening = 0.1;
    o.maximize = true;
    settings.push_back({"sgd", o});
    OptimizerOptions a;
    a.lr = 0.01;
    a.weight_decay = 1e-2;
    settings.push_back({"adam", a});
    settings.push_back({"adamw", a});
    a.amsgrad = true;
    settings.push_back({"adamw", a});
  }
  const fs::path dir = fs::temp_directory_path() / "nnx_cuda_optim_test";
  fs::create_directories(dir);
  for (const Setting& s : settings) {
    std::vector<Parameter> host(2), device(2);
    const Shape shapes[2] = {Shape{37, 5}, Shape{1000}};
    for (size_t k = 0; k < 2; ++k) {
      host[k].name = device[k].name = "p" + std::to_string(k);
      host[k].value = random_tensor(shapes[k], rng, -1, 1);
      device[k].value = host[k].value.to(Device::cuda(0));
    }
    auto on_cpu = make_optimizer(s.name, s.options);
    auto on_gpu = make_optimizer(s.name, s.options);
    auto step_both = [&] {
      for (size_t k = 0; k < 2; ++k) {
        host[k].grad = random_tensor(shapes[k], rng, -1, 1);
        device[k].grad = host[k].grad.to(Device::cuda(0));
      }
      on_cpu->step(host);
      on_gpu->step(device);
    };
    for (int i = 0; i < 3; ++i) step_both();
    for (size_t k = 0; k < 2; ++k)
      EXPECT_LE(relative_error(device[k].value.to(Device::cpu()), host[k].value), 1e-6)
          << s.name << " parameter " << k;
    const std::string file = (dir / "state.pth").string();
    on_gpu->save_state(file, device);
    auto resumed = make_optimizer(s.name, s.options);
    std::vector<Parameter> copy = host;
    for (size_t k = 0; k < 2; ++k) copy[k].value = device[k].value.to(Device::cpu());
    resumed->load_state(file, copy);
    for (size_t k = 0; k < 2; ++k) copy[k].grad = random_tensor(shapes[k], rng, -1, 1);
    for (size_t k = 0; k < 2; ++k) host[k].grad = copy[k].grad;
    resumed->step(copy);
    on_cpu->step(host);
    for (size_t k = 0; k < 2; ++k)
      EXPECT_LE(relative_error(copy[k].value, host[k].value), 1e-6)
          << s.name << ": resumed from the device's state, parameter " << k;
  }
  fs::remove_all(dir);
}

TEST_F(CudaOps, GradientClippingOnTheDeviceAsOnTheCpu) {
  RandomEngine rng(8);
  for (double norm_type : {2.0, 1.0, double(INFINITY)}) {
    std::vector<Parameter> host(3), device(3);
    for (size_t k = 0; k < 3; ++k) {
      host[k].value = random_tensor(Shape{int64_t(100 + 300 * k)}, rng, -1, 1);
      host[k].grad = random_tensor(host[k].value.shape(), rng, -2, 2);
      device[k].value = host[k].value.to(Device::cuda(0));
      device[k].grad = host[k].grad.to(Device::cuda(0));
    }
    const double a = clip_grad_norm(host, 0.5, norm_type);
    const double b = clip_grad_norm(device, 0.5, norm_type);
    EXPECT_NEAR(a, b, 1e-9 * a) << "norm " << norm_type;
    for (size_t k = 0; k < 3; ++k)
      EXPECT_LE(relative_error(device[k].grad.to(Device::cpu()), host[k].grad), 1e-6)
          << "norm " << norm_type << " grad " << k;
  }
}

// Every loss and option on a device prediction (its target on the host or the device) against
// the same loss on the CPU: the value within 1e-9, the gradient (left on the device) within
// 1e-6; an out-of-range class index is the CPU's error.
TEST_F(CudaOps, LossesOnTheDeviceAsOnTheCpu) {
  RandomEngine rng(21);
  const Device gpu = Device::cuda(0);
  auto labels = [&](const Shape& shape, int64_t classes, int64_t ignore_every) {
    Tensor t = Tensor::empty(shape, DType::i64);
    std::uniform_int_distribution<int64_t> dist(0, classes - 1);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<int64_t>()[i] = ignore_every > 0 && i % ignore_every == 3 ? -100 : dist(rng);
    return t;
  };
  auto check = [&](const std::string& what, const Tensor& prediction, const Tensor& target,
                   const LossOptions& o) {
    SCOPED_TRACE(what);
    const LossResult ref = compute_loss(prediction, target, o);
    for (bool target_on_device : {false, true}) {
      const LossResult got =
          compute_loss(prediction.to(gpu), target_on_device ? target.to(gpu) : target, o);
      ASSERT_EQ(got.grad.device(), gpu);
      if (std::isnan(ref.value)) {
        EXPECT_TRUE(std::isnan(got.value)) << got.value;
      } else {
        EXPECT_NEAR(got.value, ref.value, 1e-9 * std::max(1.0, std::abs(ref.value)));
      }
      EXPECT_LE(relative_error(got.grad.to(Device::cpu()), ref.grad), 1e-6)
          << "target on the " << (target_on_device ? "device" : "host");
    }
  };
  for (Reduction reduction : {Reduction::mean, Reduction::sum}) {
    const std::string r = reduction == Reduction::mean ? " mean" : " sum";
    for (const Shape& shape : {Shape{7}, Shape{16, 64, 8, 10}, Shape{600001}}) {
      const Tensor x = random_tensor(shape, rng, -3, 3), y = random_tensor(shape, rng, -3, 3);
      for (LossKind kind : {LossKind::mse, LossKind::l1, LossKind::smooth_l1}) {
        LossOptions o;
        o.kind = kind;
        o.reduction = reduction;
        for (double beta :
             kind == LossKind::smooth_l1 ? std::vector<double>{0.5, 0} : std::vector<double>{1}) {
          o.beta = beta;
          check(std::string(loss_name(kind)) + r + " " + shape.str() + " beta " +
                    std::to_string(beta),
                x, y, o);
        }
      }
      LossOptions o;
      o.kind = LossKind::bce_with_logits;
      o.reduction = reduction;
      const Tensor probabilities = random_tensor(shape, rng, 0, 1);
      check("bce_with_logits" + r + " " + shape.str(), x, probabilities, o);
      o.pos_weight = random_tensor(Shape{shape[shape.size() - 1]}, rng, 0.5, 2);
      o.weight = random_tensor(Shape{1}, rng, 0.5, 2);
      check("bce_with_logits, weight and pos_weight" + r + " " + shape.str(), x, probabilities, o);
    }
    for (const Shape& shape : {Shape{32, 10}, Shape{4, 21, 9, 11}, Shape{5}}) {
      const Tensor x = random_tensor(shape, rng, -4, 4);
      const int64_t classes = shape.size() == 1 ? shape[0] : shape[1];
      Shape label_shape = shape;
      if (shape.size() == 1)
        label_shape = Shape{};
      else
        label_shape.erase(1);
      LossOptions o;
      o.reduction = reduction;
      const Tensor y = labels(label_shape, classes, 0), ignored = labels(label_shape, classes, 5);
      const std::string name = "cross_entropy" + r + " " + shape.str();
      check(name, x, y, o);
      check(name + " int32 labels", x, y.to(DType::i32), o);
      check(name + " ignored positions", x, ignored, o);
      o.weight = random_tensor(Shape{classes}, rng, 0.2, 3);
      o.label_smoothing = 0.1;
      check(name + " weight, smoothing", x, ignored, o);
      Tensor q = random_tensor(shape, rng, 0, 1);
      check(name + " probabilities, weight, smoothing", x, q, o);
      o.weight = Tensor();
      o.label_smoothing = 0;
      check(name + " probabilities", x, q, o);
      o.ignore_index = y.numel() == 1 ? y.data<int64_t>()[0] : -100;
      if (y.numel() == 1) check(name + " every position ignored", x, y, o);
    }
  }
  const Tensor x = random_tensor(Shape{6, 4}, rng, -1, 1);
  Tensor y = labels(Shape{6}, 4, 0);
  y.data<int64_t>()[2] = 4;
  y.data<int64_t>()[4] = -1;
  std::string on_cpu, on_gpu;
  try {
    compute_loss(x, y);
  } catch (const Error& e) {
    on_cpu = e.what();
  }
  try {
    compute_loss(x.to(gpu), y);
  } catch (const Error& e) {
    on_gpu = e.what();
  }
  EXPECT_NE(on_cpu.find("class index 4 at position 2"), std::string::npos) << on_cpu;
  EXPECT_EQ(on_gpu, on_cpu);
}

TEST_F(CudaOps, InputsOnAnotherDeviceAreNamed) {
  std::shared_ptr<Op> op = make_op(parse_call("ReLU()"));
  ExecContext ctx;
  ctx.device = Device::cuda(0);
  std::vector<Tensor> in{Tensor::full({4}, 1.0)};
  std::vector<Tensor> out{Tensor::empty({4}, DType::f32, Device::cuda(0))};
  testing_util::expect_error([&] { op->forward(ctx, in, out); }, "expected an input on cuda:0",
                             ErrorKind::usage);
}

// ---- the cuDNN algorithm choice: heuristic, timed search, and its file

#ifdef NNX_WITH_CUDA
// A convolution problem (kernel, stride, padding, dilation as (h, w)), groups 1.
struct IgemmProblem {
  int64_t batch, in_c, h, w, out_c, kh, kw, sh, sw, ph, pw, dh, dw;
};

// Its parameters, with the output size PyTorch gives it.
cuda::Conv2dParams problem_params(const IgemmProblem& q) {
  return cuda_conv_params(test::shape_of(
      {q.batch, q.in_c, q.out_c, q.h, q.w, q.kh, q.kw, q.sh, q.sw, q.ph, q.pw, q.dh, q.dw}));
}

// A convolution problem with square kernel, stride, padding and dilation.
cuda::Conv2dParams conv_problem(int64_t batch, int64_t in_c, int64_t h, int64_t w, int64_t out_c,
                                int64_t k, int64_t stride, int64_t pad, int64_t dilation,
                                int64_t groups) {
  cuda::Conv2dParams p = problem_params(
      {batch, in_c, h, w, out_c, k, k, stride, stride, pad, pad, dilation, dilation});
  p.groups = groups;
  return p;
}

// Without a device: the cache's memory and file logic with a stand-in for cuDNN.
TEST(ConvAlgoCache, KeepsChoicesAndPersistsSearchedOnes) {
  testing_util::TempDir dir;
  const std::string file = dir.file("algos.txt");
  auto& cache = cuda::ConvAlgoCache::instance();
  cache.clear();
  int calls = 0;
  auto choose = [&] {
    ++calls;
    return 5;
  };
  EXPECT_EQ(cache.get("k1;search", true, file, choose), 5);
  EXPECT_EQ(cache.get("k1;search", true, file, choose), 5);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(cache.get("k2;heuristic", false, "", [] { return 1; }), 1);
  EXPECT_EQ(testing_util::read_file(file), "# nnx cuDNN convolution algorithms v1\nk1;search 5\n");
  cache.clear();
  EXPECT_EQ(cache.get("k1;search", true, file, choose), 5);
  EXPECT_EQ(calls, 1) << "a restarted process searched again";
  EXPECT_EQ(cache.stats().file_entries, 1u);
  // A foreign file is not read (and not appended to as if it were a cache).
  const std::string foreign = dir.file("foreign.txt");
  testing_util::write_file(foreign, "hello\nk3 2\n");
  cache.clear();
  EXPECT_EQ(cache.get("k3", true, foreign, [] { return 7; }), 7);
  EXPECT_EQ(testing_util::read_file(foreign), "hello\nk3 2\n");
  cache.clear();
}

TEST_F(CudaOps, ConvolutionSearchIsCachedInMemoryAndInItsFile) {
  testing_util::TempDir dir;
  const std::string file = dir.file("cudnn_algos.txt");
  std::shared_ptr<Op> op = make_op(parse_call("Conv2d(8, 16, 3, padding=1)"));
  RandomEngine rng(3);
  randomise_params(*op, rng);
  const Tensor x = random_tensor({2, 8, 24, 24}, rng, -1, 1);
  const auto on_cpu = forward_on(*op, {x}, 1, Device::cpu());
  auto& cache = cuda::ConvAlgoCache::instance();

  ::setenv("NNX_CUDNN_SEARCH", "1", 1);
  ::setenv("NNX_CUDNN_CACHE", file.c_str(), 1);
  cache.clear();
  auto searched = forward_on(*op, {x}, 1, Device::cuda(0));
  EXPECT_EQ(cache.stats().chosen, 1u);
  EXPECT_TRUE(compare(searched, on_cpu, kCpuTolerance, "CPU").empty());
  forward_on(*op, {x}, 1, Device::cuda(0));
  EXPECT_EQ(cache.stats().chosen, 1u) << "searched again for the same problem";
  EXPECT_GE(cache.stats().memory_hits, 1u);
  const std::string text = testing_util::read_file(file);
  EXPECT_EQ(text.rfind("# nnx cuDNN convolution algorithms v1\n", 0), 0u) << text;
  EXPECT_NE(text.find(";search "), std::string::npos) << text;

  // A restarted process (a cleared cache) reads the file instead of searching.
  cache.clear();
  searched = forward_on(*op, {x}, 1, Device::cuda(0));
  EXPECT_EQ(cache.stats().chosen, 0u);
  EXPECT_EQ(cache.stats().file_entries, 1u);
  EXPECT_TRUE(compare(searched, on_cpu, kCpuTolerance, "CPU").empty());

  // Heuristic choices are kept in memory only.
  ::unsetenv("NNX_CUDNN_SEARCH");
  cache.clear();
  forward_on(*op, {x}, 1, Device::cuda(0));
  forward_on(*op, {x}, 1, Device::cuda(0));
  EXPECT_EQ(cache.stats().chosen, 1u);
  ::unsetenv("NNX_CUDNN_CACHE");
  cache.clear();
}

// cuDNN's graph API (NNX_CUDNN_API=graph) against its legacy API, pass by pass, for the problem
// shapes the networks have: strided, grouped, depthwise, dilated, 1x1 and the 7x7 stem over 3
// channels, an operand only 4-byte aligned, TF32 allowed and not; then through the env switch
// and a timed search.
TEST_F(CudaOps, ConvolutionGraphApiMatchesTheLegacyApi) {
  ::unsetenv("NNX_CUDNN_API");
  RandomEngine rng(17);
  const Device gpu = Device::cuda(0);
#ifdef NNX_CUDA_EMULATOR
  {
    // The CUDA emulator has no graph API (its cuDNN answers NOT_SUPPORTED): a convolution under
    // NNX_CUDNN_API=graph falls back to the legacy API, heuristic and searched.
    std::shared_ptr<Op> op = make_op(parse_call("Conv2d(8, 16, 3, padding=1, bias=True)"));
    randomise_params(*op, rng);
    const Tensor x = random_tensor({2, 8, 24, 24}, rng, -1, 1);
    const auto on_cpu = forward_on(*op, {x}, 1, Device::cpu());
    for (const char* search : {"0", "1"}) {
      ::setenv("NNX_CUDNN_API", "graph", 1);
      ::setenv("NNX_CUDNN_SEARCH", search, 1);
      EXPECT_TRUE(compare(forward_on(*op, {x}, 1, gpu), on_cpu, kCpuTolerance, "CPU").empty())
          << "NNX_CUDNN_SEARCH=" << search;
    }
    ::unsetenv("NNX_CUDNN_SEARCH");
    ::unsetenv("NNX_CUDNN_API");
    cuda::ConvAlgoCache::instance().clear();
  }
  GTEST_SKIP() << "the CUDA emulator has no cuDNN graph API: checked only that it falls back";
#endif
  std::vector<cuda::Conv2dParams> problems = {
      conv_problem(2, 8, 24, 24, 16, 3, 1, 1, 1, 1),
      conv_problem(2, 3, 32, 40, 64, 7, 2, 3, 1, 1),
      conv_problem(1, 8, 17, 19, 16, 3, 1, 2, 2, 4),
      conv_problem(2, 16, 14, 14, 16, 3, 2, 1, 1, 16),
      conv_problem(4, 64, 7, 7, 32, 1, 1, 0, 1, 1),
      conv_problem(1, 128, 30, 40, 256, 3, 1, 1, 1, 1),
  };
  cuda::Conv2dParams tf32 = problems[0];
  tf32.allow_tf32 = true;
  problems.push_back(tf32);
  for (size_t i = 0; i < problems.size(); ++i) {
    const cuda::Conv2dParams& p = problems[i];
    SCOPED_TRACE("problem " + std::to_string(i));
    const Shape x_shape{p.batch, p.in_channels, p.in_h, p.in_w};
    const Shape w_shape{p.out_channels, p.in_channels / p.groups, p.kernel_h, p.kernel_w};
    const Shape y_shape{p.batch, p.out_channels, p.out_h, p.out_w};
    // The last problem's input starts one float into its buffer: 4-byte alignment.
    const int64_t skew = i + 1 == problems.size() ? 1 : 0;
    const Tensor x_buffer = random_tensor({x_shape.numel() + skew}, rng, -1, 1).to(gpu);
    const Tensor x = x_buffer.slice(0, skew, skew + x_shape.numel()).view(x_shape);
    const Tensor w = random_tensor(w_shape, rng, -1, 1).to(gpu);
    const Tensor dy = random_tensor(y_shape, rng, -1, 1).to(gpu);
    auto f = [](const Tensor& t) { return const_cast<float*>(t.data<float>()); };
    Tensor y_legacy = Tensor::empty(y_shape, DType::f32, gpu), y_graph = y_legacy.clone();
    Tensor dx_legacy = Tensor::empty(x_shape, DType::f32, gpu), dx_graph = dx_legacy.clone();
    Tensor dw_legacy = Tensor::empty(w_shape, DType::f32, gpu), dw_graph = dw_legacy.clone();
    cuda::conv2d_forward(p, f(x), f(w), nullptr, f(y_legacy), 0, nullptr);
    cuda::conv2d_backward(p, f(x), f(w), f(dy), f(dx_legacy), f(dw_legacy), nullptr, 0, nullptr);
    EXPECT_TRUE(
        cuda::conv_graph_run(cuda::ConvPass::forward, p, f(x), f(w), f(y_graph), 0, nullptr));
    EXPECT_TRUE(cuda::conv_graph_run(cuda::ConvPass::backward_data, p, f(dx_graph), f(w), f(dy), 0,
                                     nullptr));
    EXPECT_TRUE(cuda::conv_graph_run(cuda::ConvPass::backward_filter, p, f(x), f(dw_graph), f(dy),
                                     0, nullptr));
    const double tol = p.allow_tf32 ? 5e-3 : 1e-5;
    EXPECT_LE(relative_error(y_graph.to(Device::cpu()), y_legacy.to(Device::cpu())), tol);
    EXPECT_LE(relative_error(dx_graph.to(Device::cpu()), dx_legacy.to(Device::cpu())), tol);
    EXPECT_LE(relative_error(dw_graph.to(Device::cpu()), dw_legacy.to(Device::cpu())), tol);

    // fp16 and bf16 operands (tensor cores, fp32 sums) against the legacy reduced path.
    if (!p.allow_tf32 && skew == 0) {
      for (cuda::ConvIo io : {cuda::ConvIo::f16, cuda::ConvIo::bf16}) {
        const DType type = io == cuda::ConvIo::f16 ? DType::f16 : DType::bf16;
        Tensor x_io = Tensor::empty(x_shape, type, gpu), w_io = Tensor::empty(w_shape, type, gpu);
        Tensor y_io = Tensor::empty(y_shape, type, gpu);
        cuda::round_to(io, f(x), x_io.raw_data(), x_shape.numel(), nullptr);
        cuda::round_to(io, f(w), w_io.raw_data(), w_shape.numel(), nullptr);
        Tensor y_reduced = Tensor::empty(y_shape, DType::f32, gpu);
        cuda::conv2d_forward_reduced(p, io, f(x), w_io.raw_data(), nullptr, f(y_reduced), 0,
                                     nullptr);
        EXPECT_TRUE(cuda::conv_graph_run(cuda::ConvPass::forward, p, x_io.raw_data(),
                                         w_io.raw_data(), y_io.raw_data(), 0, nullptr, io));
        EXPECT_LE(
            relative_error(y_io.to(Device::cpu()).to(DType::f32), y_reduced.to(Device::cpu())),
            io == cuda::ConvIo::f16 ? 2e-3 : 1.6e-2)
            << (io == cuda::ConvIo::f16 ? "fp16" : "bf16");
      }
    }

    // The fused convolution + bias (+ residual) + ReLU, under each API.
    const Tensor bias = random_tensor({p.out_channels}, rng, -1, 1).to(gpu);
    const Tensor z = random_tensor(y_shape, rng, -1, 1).to(gpu);
    for (bool residual : {false, true}) {
      Tensor fused_legacy = Tensor::empty(y_shape, DType::f32, gpu), fused_graph = y_graph.clone();
      const bool legacy_ran = cuda::conv2d_bias_relu_forward(
          p, f(x), f(w), f(bias), residual ? f(z) : nullptr, f(fused_legacy), 0, nullptr);
      ::setenv("NNX_CUDNN_API", "graph", 1);
      EXPECT_TRUE(cuda::conv2d_bias_relu_forward(p, f(x), f(w), f(bias), residual ? f(z) : nullptr,
                                                 f(fused_graph), 0, nullptr));
      ::unsetenv("NNX_CUDNN_API");
      if (legacy_ran) {
        EXPECT_LE(relative_error(fused_graph.to(Device::cpu()), fused_legacy.to(Device::cpu())),
                  tol)
            << (residual ? "with" : "without") << " the residual";
      }
    }
  }

  // Through the switch, as the ops call it, heuristic and searched.
  std::shared_ptr<Op> op = make_op(parse_call("Conv2d(8, 16, 3, padding=1, bias=True)"));
  randomise_params(*op, rng);
  const Tensor x = random_tensor({2, 8, 24, 24}, rng, -1, 1);
  const auto on_cpu = forward_on(*op, {x}, 1, Device::cpu());
  ::setenv("NNX_CUDNN_API", "graph", 1);
  EXPECT_TRUE(compare(forward_on(*op, {x}, 1, gpu), on_cpu, kCpuTolerance, "CPU").empty());
  ::setenv("NNX_CUDNN_SEARCH", "1", 1);
  cuda::ConvAlgoCache::instance().clear();
  EXPECT_TRUE(compare(forward_on(*op, {x}, 1, gpu), on_cpu, kCpuTolerance, "CPU").empty());
  EXPECT_EQ(cuda::ConvAlgoCache::instance().stats().chosen, 1u) << "one timed search";
  ::unsetenv("NNX_CUDNN_SEARCH");
  ::unsetenv("NNX_CUDNN_API");
  cuda::ConvAlgoCache::instance().clear();
}
#endif

// ---- whole networks: every node on the device, against the CPU executor and PyTorch

std::vector<fs::path> model_case_folders() {
  std::vector<fs::path> folders;
  const fs::path root = fixture_dir() / "models";
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::directory_iterator(root))
    if (fs::exists(entry.path() / "case.json")) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

// Runs the model's graph node by node on cuda:0 in the planner's order, each output in a
// tensor of its own. A node whose op has no CUDA body (a user op such as the seed network's
// YOLO head) runs on the CPU, its inputs copied over and its outputs back; their names are
// added to `on_cpu`.
std::vector<Tensor> run_graph_on_cuda(const Model& model, const std::vector<Tensor>& inputs,
                                      std::vector<std::string>& on_cpu) {
  const Graph& graph = model.graph();
  const Device device = Device::cuda(0);
  std::vector<TensorSpec> specs;
  std::vector<Tensor> bound;
  for (const Tensor& t : inputs) {
    Tensor x = t.dim() == 3 ? t.unsqueeze(0) : t;
    x = x.to(DType::f32).contiguous();
    specs.push_back({x.shape(), x.dtype()});
    bound.push_back(x.to(device));
  }
  const Plan plan = make_plan(graph, specs);
  std::vector<std::vector<Tensor>> values(graph.nodes.size());
  values[0] = bound;
  ExecContext ctx;
  ctx.device = device;
  for (int v : plan.steps) {
    const Node& node = graph.nodes[size_t(v)];
    const Op& op = *graph.layer_of(v).op;
    std::vector<Tensor> args;
    for (const PortRef& in : node.inputs) args.push_back(values[size_t(in.node)][size_t(in.port)]);
    auto& outs = values[size_t(v)];
    outs.assign(plan.specs[size_t(v)].size(), Tensor());
    for (size_t p = 0; p < outs.size(); ++p)
      if (!op.output_view_of(int(p)))
        outs[p] =
            Tensor::empty(plan.specs[size_t(v)][p].shape, plan.specs[size_t(v)][p].dtype, device);
    try {
      op.forward(ctx, args, outs);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::unsupported ||
          e.message().find("has no CUDA kernel") == std::string::npos)
        throw Error(e.kind(), graph.describe_node(v) + ": " + e.message());
      on_cpu.push_back(graph.describe_node(v));
      ExecContext cpu_ctx;
      std::vector<Tensor> cpu_args, cpu_outs(outs.size());
      for (const Tensor& a : args) cpu_args.push_back(a.to(Device::cpu()));
      for (size_t p = 0; p < outs.size(); ++p)
        if (!op.output_view_of(int(p)))
          cpu_outs[p] =
              Tensor::empty(plan.specs[size_t(v)][p].shape, plan.specs[size_t(v)][p].dtype);
      op.forward(cpu_ctx, cpu_args, cpu_outs);
      for (size_t p = 0; p < outs.size(); ++p) outs[p] = cpu_outs[p].contiguous().to(device);
    }
  }
  std::vector<Tensor> outputs;
  for (const PortRef& o : graph.outputs)
    outputs.push_back(values[size_t(o.node)][size_t(o.port)].contiguous().to(Device::cpu()));
  return outputs;
}

struct NetworkCase {
  Model model;
  std::vector<Tensor> inputs, refs;
  double tol = 1e-4;
};

NetworkCase load_network_case(const fs::path& folder) {
  json::Value meta = json::parse_file((folder / "case.json").string());
  example::register_yolo_head();
  std::string weights;
  if (const json::Value* w = meta.find("weights"); w && w->is_string())
    weights = (folder / w->str).string();
  LoadOptions options;
  if (const json::Value* s = meta.find("strict"); s && s->kind == json::Value::Kind::boolean)
    options.strict = s->b;
  NetworkCase c;
  c.model = load((folder / meta.find("arch")->str).string(), weights, options);
  for (auto& in : meta.find("inputs")->array)
    c.inputs.push_back(read_npy((folder / in.str).string()));
  for (auto& r : meta.find("refs")->array) c.refs.push_back(read_npy((folder / r.str).string()));
  if (const json::Value* t = meta.find("tol")) c.tol = t->number;
  return c;
}

// A network fixture that comes with weights, into c, and its model loaded onto cuda:0 into
// on_device; false (nothing loaded) for a case without weights.
bool load_case_on_device(const fs::path& folder, NetworkCase& c, Model& on_device) {
  json::Value meta = json::parse_file((folder / "case.json").string());
  const json::Value* w = meta.find("weights");
  if (w == nullptr || !w->is_string()) return false;
  c = load_network_case(folder);
  on_device = load((folder / meta.find("arch")->str).string(), (folder / w->str).string(),
                   {.device = Device::cuda(0), .strict = false});
  return true;
}

// body(name, c, on_device, index) for each network fixture that comes with weights, its model
// loaded onto cuda:0; index counts the networks body finished before. An exception fails the
// test, naming the network. Returns how many networks body finished.
int on_each_network(
    const std::vector<fs::path>& folders,
    const std::function<void(const std::string&, NetworkCase&, Model&, int)>& body) {
  int finished = 0;
  for (const fs::path& folder : folders) {
    const std::string name = folder.filename().string();
    try {
      NetworkCase c;
      Model on_device;
      if (!load_case_on_device(folder, c, on_device)) continue;
      body(name, c, on_device, finished);
      ++finished;
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": " << e.what();
    }
  }
  return finished;
}

TEST_F(CudaOps, EveryNetworkMatchesTheCpuAndPyTorchNodeByNode) {
  const auto folders = model_case_folders();
  if (folders.empty() && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  ASSERT_FALSE(folders.empty()) << "no network cases under " << fixture_dir().string() << "/models";
  bool saw_seed = false;
  for (auto& folder : folders) {
    const std::string name = folder.filename().string();
    saw_seed = saw_seed || name == "seed";
    try {
      NetworkCase c = load_network_case(folder);
      Executor cpu(c.model, {.threads = 2});
      const std::vector<Tensor> on_cpu = cpu(c.inputs);
      std::vector<std::string> fell_back;
      const std::vector<Tensor> on_cuda = run_graph_on_cuda(c.model, c.inputs, fell_back);
      const std::string failures = compare(on_cuda, c.refs, c.tol, "PyTorch") +
                                   compare(on_cuda, on_cpu, kCpuTolerance, "CPU");
      EXPECT_TRUE(failures.empty()) << name << ":" << failures;
      for (const std::string& node : fell_back)
        std::printf("[ cuda ops ] %s: %s ran on the CPU (no CUDA body)\n", name.c_str(),
                    node.c_str());
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": " << e.what();
    }
  }
  EXPECT_TRUE(saw_seed) << "the seed network's fixture is missing";
}

// The executor itself on CUDA: the seed network loaded for cuda:0, its arena on the device, its
// own stream, the YOLO user op (no CUDA body) run on the CPU through Op::forward_cuda's copies.
TEST_F(CudaOps, ExecutorRunsTheSeedNetworkOnCuda) {
  const fs::path folder = fixture_dir() / "models" / "seed";
  if (!fs::exists(folder) && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  ASSERT_TRUE(fs::exists(folder / "case.json")) << "no seed fixture under " << folder;
  NetworkCase c = load_network_case(folder);
  json::Value meta = json::parse_file((folder / "case.json").string());
  std::string weights = (folder / meta.find("weights")->str).string();
  Model on_device = load((folder / meta.find("arch")->str).string(), weights,
                         {.device = Device::cuda(0), .strict = true});
  Executor cpu(c.model, {.threads = 2});
  const std::vector<Tensor> on_cpu = cpu(c.inputs);
  Executor gpu(on_device);
  std::vector<Tensor> on_cuda = gpu(c.inputs);
  for (Tensor& t : on_cuda) t = t.to(Device::cpu());
  EXPECT_EQ(
      compare(on_cuda, c.refs, c.tol, "PyTorch") + compare(on_cuda, on_cpu, kCpuTolerance, "CPU"),
      "");
}

// Every network fixture through Executors on CUDA, fused (BatchNorm folded, the chains of
// find_cuda_fusion: cuDNN's convolution + bias + residual + ReLU) and not, against the CPU and
// PyTorch.
TEST_F(CudaOps, FusedAndUnfusedExecutorsMatchTheCpuAndPyTorch) {
  const auto folders = model_case_folders();
  if (folders.empty() && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  const int compared = on_each_network(folders, [&](const std::string& name, NetworkCase& c,
                                                    Model& on_device, int) {
    Executor cpu(c.model, {.threads = 2});
    const std::vector<Tensor> on_cpu = cpu(c.inputs);
    for (bool fuse : {true, false}) {
      Executor gpu(on_device, {.fuse = fuse});
      for (int run = 0; run < 2; ++run) {  // the second reuses the folded weights' copies
        std::vector<Tensor> got = gpu(c.inputs);
        for (Tensor& t : got) t = t.to(Device::cpu());
        EXPECT_EQ(
            compare(got, c.refs, c.tol, "PyTorch") + compare(got, on_cpu, kCpuTolerance, "CPU"), "")
            << name << (fuse ? " fused" : " unfused") << ", run " << run;
      }
    }
  });
  EXPECT_GT(compared, 0);
}

// CUDA graphs: an Executor that captures (the default) gives what one running kernel by kernel
// gives, run after run on new inputs (host or device tensors: the graphs read a copy), through
// a change of batch (a new plan, captured anew) and back. A network with a host node (the seed
// network's YOLO head) is captured whole, the host node a host task inside the graph.
TEST_F(CudaOps, CudaGraphReplaysMatchKernelByKernelRunsOnNewInputs) {
  const auto folders = model_case_folders();
  if (folders.empty() && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  bool saw_host_node = false;
  RandomEngine rng(31);
  const int compared = on_each_network(
      folders, [&](const std::string& name, NetworkCase& c, Model& on_device, int index) {
        Executor eager(on_device, {.cuda_graph = false});
        Executor graphed(on_device);
        EXPECT_EQ(eager.cuda_graph_state(), "off");
        // A copy whose weights may change is never captured.
        Executor on_copy(on_device.clone());
        on_copy(c.inputs);
        on_copy(c.inputs);
        EXPECT_EQ(on_copy.cuda_graph_state().rfind("off: the model's weights may change", 0), 0u)
            << on_copy.cuda_graph_state();
        // Batches: the fixture's, then one more (another plan), then the fixture's again.
        const int64_t batch = c.inputs[0].dim() == 4 ? c.inputs[0].size(0) : 1;
        for (int64_t n : {batch, batch, batch, batch + 1, batch + 1, batch + 1, batch, batch}) {
          std::vector<Tensor> inputs;
          for (const Tensor& t : c.inputs) {
            Tensor x = t.dim() == 3 ? t.unsqueeze(0) : t;
            Shape shape = x.shape();
            shape[0] = n;
            Tensor fresh = random_tensor(shape, rng, -2.0f, 2.0f);
            inputs.push_back(index % 2 == 0 ? fresh : fresh.to(Device::cuda(0)));
          }
          std::vector<Tensor> want = eager(inputs), got = graphed(inputs);
          for (Tensor& t : want) t = t.to(Device::cpu());
          for (Tensor& t : got) t = t.to(Device::cpu());
          EXPECT_EQ(compare(got, want, kCpuTolerance, "kernel by kernel"), "")
              << name << ", batch " << n << ": " << graphed.cuda_graph_state();
        }
        const std::string& state = graphed.cuda_graph_state();
        EXPECT_EQ(state.rfind("captured: ", 0), 0u) << name << ": " << state;
        // A host node (the seed network's YOLO head, no parameters) is a host task of the one
        // graph.
        if (state.find("on the host") != std::string::npos) {
          saw_host_node = true;
          EXPECT_EQ(state.rfind("captured: 1 graph of ", 0), 0u) << name << ": " << state;
          EXPECT_NE(state.find("host tasks inside it"), std::string::npos) << name << ": " << state;
        }
      });
  EXPECT_GT(compared, 0);
  EXPECT_TRUE(saw_host_node) << "no network with a host node (the seed network's YOLO head)";
}

// User ops without a CUDA body, for HostStepsInAnExecutorsGraph: y = 2x (throws while
// `host_op_failing`), and y = x * (1 + scale) with a parameter (so its host body cannot be a
// node of a graph).
std::atomic<bool> host_op_failing{false};

class HostDoubler final : public Op {
 public:
  std::string type() const override { return "test_ops.HostDoubler"; }
  std::string python_module() const override { return "test_ops"; }
  std::string repr() const override { return "HostDoubler()"; }
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> in, int) const override {
    return {in[0]};
  }
  void forward_cpu(const ExecContext&, std::span<const Tensor> in,
                   std::span<Tensor> out) const override {
    NNX_CHECK(!host_op_failing, ErrorKind::usage, "HostDoubler refuses this input");
    for (int64_t i = 0; i < in[0].numel(); ++i)
      out[0].data<float>()[i] = 2 * in[0].data<float>()[i];
  }
};

class HostScaler final : public Op {
 public:
  HostScaler() { add_param("scale", {1}); }
  std::string type() const override { return "test_ops.HostScaler"; }
  std::string python_module() const override { return "test_ops"; }
  std::string repr() const override { return "HostScaler()"; }
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec> in, int) const override {
    return {in[0]};
  }
  void forward_cpu(const ExecContext&, std::span<const Tensor> in,
                   std::span<Tensor> out) const override {
    const float k = 1 + params()[0].value.data<float>()[0];
    for (int64_t i = 0; i < in[0].numel(); ++i)
      out[0].data<float>()[i] = k * in[0].data<float>()[i];
  }
};

// An Executor's CUDA graph with a user op that runs on the host: without parameters it is a host
// task inside the one graph (results as kernel by kernel, run after run); when its body throws in
// a replay, run() (synchronize) says so, naming the op's message, and the next run is right
// again. With a parameter it stays outside, between two graphs.
TEST_F(CudaOps, HostStepsInAnExecutorsGraph) {
  register_op("test_ops.HostDoubler", [](const Call&) { return std::make_shared<HostDoubler>(); });
  register_op("test_ops.HostScaler", [](const Call&) { return std::make_shared<HostScaler>(); });
  struct Unregister {
    ~Unregister() {
      host_op_failing = false;
      unregister_op("test_ops.HostDoubler");
      unregister_op("test_ops.HostScaler");
    }
  } unregister;
  RandomEngine rng(12);
  const Tensor x = random_tensor({2, 1, 8, 8}, rng, -1, 1);
  for (const std::string op : {"HostDoubler", "HostScaler"}) {
    const std::string arch = R"json({"outputs": [[-1, 0, 0]], "inputs_channels": [1],
      "outputs_channels": [2], "layers": [
      ["torch.nn.Conv2d(1, 4, 3, padding=1)", [[1], [4]], [[-1, 0]]],
      ["test_ops.)json" + op +
                             R"json(()", [[4], [4]], [[-1, 0]]],
      ["torch.nn.Conv2d(4, 2, 1)", [[4], [2]], [[-1, 0]]]]})json";
    Model model = load_memory(arch, "", {.device = Device::cuda(0)});
    Executor eager(model, {.cuda_graph = false}), graphed(model);
    const std::vector<Tensor> want = {eager({x})[0].to(Device::cpu())};
    for (int run = 0; run < 4; ++run)
      EXPECT_EQ(compare({graphed({x})[0].to(Device::cpu())}, want, kCpuTolerance, "eager"), "")
          << op << ", run " << run << ": " << graphed.cuda_graph_state();
    const std::string& state = graphed.cuda_graph_state();
    if (op == "HostScaler") {
      EXPECT_EQ(state.rfind("captured: 2 graphs of 2 nodes, 1 on the host between them", 0), 0u)
          << state;
      continue;
    }
    EXPECT_EQ(state.rfind("captured: 1 graph of 3 nodes, 1 of them on the host as host tasks", 0),
              0u)
        << state;
    host_op_failing = true;
    try {
      graphed({x});
      ADD_FAILURE() << "a failed host task went unnoticed";
    } catch (const Error& e) {
      EXPECT_NE(e.message().find("HostDoubler refuses this input"), std::string::npos)
          << e.message();
    }
    host_op_failing = false;
    EXPECT_EQ(compare({graphed({x})[0].to(Device::cpu())}, want, kCpuTolerance, "eager"), "")
        << "after the failed run";
  }
}

// The seed network's fixture (into c), and its model loaded onto cuda:0.
Model seed_on_device(NetworkCase& c) {
  const fs::path folder = fixture_dir() / "models" / "seed";
  c = load_network_case(folder);
  json::Value meta = json::parse_file((folder / "case.json").string());
  return load((folder / meta.find("arch")->str).string(),
              (folder / meta.find("weights")->str).string(), {.device = Device::cuda(0)});
}

// An input's shape with a batch dimension (a CHW input is a batch of one).
Shape batched_shape(const Tensor& input) {
  return input.dim() == 3 ? input.unsqueeze(0).shape() : input.shape();
}

// run_async returns device tensors whose values are there after synchronize(), the same as
// run()'s; several runs may be queued before one synchronize, and the inputs changed at once.
TEST_F(CudaOps, AsyncRunsGiveRunsOutputsAfterSynchronize) {
  const fs::path folder = fixture_dir() / "models" / "seed";
  if (!fs::exists(folder) && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  NetworkCase c;
  Model on_device = seed_on_device(c);
  Executor sync(on_device), async(on_device);
  RandomEngine rng(5);
  std::vector<std::vector<Tensor>> inputs, queued;
  for (int run = 0; run < 4; ++run) {
    Tensor x = random_tensor(batched_shape(c.inputs[0]), rng, -2.0f, 2.0f);
    Tensor on_gpu = x.to(Device::cuda(0));
    queued.push_back(async.run_async(std::span(&on_gpu, 1)));
    on_gpu = Tensor();  // the caller's copy goes at once: the queued run still reads it
    inputs.push_back({x});
  }
  async.synchronize();
  for (size_t run = 0; run < inputs.size(); ++run) {
    std::vector<Tensor> want = sync(inputs[run]);
    for (Tensor& t : want) t = t.to(Device::cpu());
    for (Tensor& t : queued[run]) t = t.to(Device::cpu());
    EXPECT_EQ(compare(queued[run], want, 1e-6, "run()"), "") << "run " << run;
  }
}

// Several Executors of one model on several threads at once (each its stream, its arena, its
// CUDA graphs captured in thread-local mode) give what one Executor gives.
TEST_F(CudaOps, ExecutorsOnSeveralThreadsMatchOneExecutor) {
  const fs::path folder = fixture_dir() / "models" / "seed";
  if (!fs::exists(folder) && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  NetworkCase c;
  Model on_device = seed_on_device(c);
#ifdef NNX_CUDA_EMULATOR
  constexpr int kThreads = 4, kRuns = 3;  // the host emulator (CI's ASan pass) is slow
#else
  constexpr int kThreads = 4, kRuns = 6;
#endif
  RandomEngine rng(7);
  std::vector<std::vector<Tensor>> inputs(kThreads * kRuns), want(kThreads * kRuns);
  Executor reference(on_device, {.cuda_graph = false});
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = {random_tensor(batched_shape(c.inputs[0]), rng, -2.0f, 2.0f)};
    want[i] = reference(inputs[i]);
    for (Tensor& t : want[i]) t = t.to(Device::cpu());
  }
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k)
    threads.emplace_back([&, k] {
      try {
        Executor mine(on_device);
        for (int r = 0; r < kRuns; ++r) {
          const size_t i = size_t(k * kRuns + r);
          std::vector<Tensor> got = mine(inputs[i]);
          for (Tensor& t : got) t = t.to(Device::cpu());
          failures[size_t(k)] += compare(got, want[i], kCpuTolerance, "one Executor");
        }
        if (mine.cuda_graph_state().rfind("captured", 0) != 0)
          failures[size_t(k)] += " " + mine.cuda_graph_state();
      } catch (const std::exception& e) {
        failures[size_t(k)] += e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  for (int k = 0; k < kThreads; ++k) EXPECT_EQ(failures[size_t(k)], "") << "thread " << k;
}

// Without a device: the CUDA chains of ResNet-18 take in every BatchNorm2d (folded), every
// residual Add and every ReLU; each chain starts at a convolution.
TEST(CudaFusion, ResNetChainsTakeEveryBatchNormAddAndReLU) {
#ifdef NNX_WITH_CUDA
  Model model = load(std::string(NNX_SOURCE_DIR) + "/bench/models/resnet18.json");
  const Graph& g = model.graph();
  auto fusion = find_cuda_fusion(g, true);
  int convs = 0;
  for (int v : g.schedule) {
    const std::string type = g.layer_of(v).op->type();
    if (type == "BatchNorm2d" || type == "Add" || type == "ReLU") {
      EXPECT_GE(fusion->alias_of[size_t(v)], 0) << g.describe_node(v) << " not in a chain";
    }
    if (type == "Conv2d") {
      ++convs;
      EXPECT_TRUE(fusion->is_head(v)) << g.describe_node(v);
    }
  }
  EXPECT_EQ(convs, 20);
  EXPECT_EQ(fusion->chains.size(), 20u);
  // Without folding (weights that may change) BatchNorm stays a node of its own.
  auto unfolded = find_cuda_fusion(g, false);
  for (int v : g.schedule)
    if (g.layer_of(v).op->type() == "BatchNorm2d") {
      EXPECT_LT(unfolded->alias_of[size_t(v)], 0) << g.describe_node(v);
    }
#else
  GTEST_SKIP() << "this build has no CUDA backend";
#endif
}

// TF32 (ExecutorOptions::precision): the seed network and ResNet-18's fixture on CUDA within
// 1e-2 of fp32 (TF32 keeps 10 bits of each product's inputs; sums stay fp32).
constexpr double kTf32Tolerance = 1e-2;

TEST_F(CudaOps, Tf32RunsStayNearFp32) {
  const auto folders = model_case_folders();
  if (folders.empty() && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  const int compared =
      on_each_network(folders, [&](const std::string& name, NetworkCase& c, Model& on_device, int) {
        Executor fp32(on_device), tf32(on_device, {.precision = Precision::tf32});
        std::vector<Tensor> a = fp32(c.inputs), b = tf32(c.inputs);
        for (Tensor& t : a) t = t.to(Device::cpu());
        for (Tensor& t : b) t = t.to(Device::cpu());
        EXPECT_EQ(compare(b, a, kTf32Tolerance, "fp32"), "") << name;
      });
  EXPECT_GT(compared, 0);
}

// fp16 and bf16 (ExecutorOptions::precision): convolutions on tensor cores with rounded inputs
// and weights and fp32 accumulation, everything else fp32. fp16 keeps 11 significant bits as
// TF32 does: the same 1e-2; bf16 keeps 8: 5e-2. Each must differ from fp32 somewhere (else the
// reduced path did not run).
TEST_F(CudaOps, Fp16AndBf16RunsStayNearFp32) {
  const auto folders = model_case_folders();
  if (folders.empty() && std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  for (auto [precision, tol] :
       {std::pair{Precision::fp16, 1e-2}, std::pair{Precision::bf16, 5e-2}}) {
    double largest = 0;
    const int compared = on_each_network(
        folders, [&](const std::string& name, NetworkCase& c, Model& on_device, int) {
          Executor fp32(on_device), reduced(on_device, {.precision = precision});
          for (int run = 0; run < 2; ++run) {  // the second from the CUDA graph
            std::vector<Tensor> a = fp32(c.inputs), b = reduced(c.inputs);
            for (Tensor& t : a) t = t.to(Device::cpu());
            for (Tensor& t : b) t = t.to(Device::cpu());
            EXPECT_EQ(compare(b, a, tol, "fp32"), "")
                << name << " " << precision_name(precision) << ", run " << run;
            for (size_t k = 0; k < a.size(); ++k)
              if (a[k].dtype() == DType::f32)
                largest = std::max(largest, relative_error(b[k], a[k]));
          }
        });
    EXPECT_GT(compared, 0);
    EXPECT_GT(largest, 0.0) << precision_name(precision) << " gave exactly fp32's outputs";
    std::printf("[ cuda ops ] %s: largest relative difference to fp32 %.2e\n",
                precision_name(precision), largest);
  }
}

// Without a device: what precision does not apply to is refused by name.
TEST(CudaPrecision, RefusedWhereItDoesNotApply) {
  EXPECT_EQ(parse_precision("tf32"), Precision::tf32);
  testing_util::expect_error([] { parse_precision("fp64"); }, "fp32, tf32, fp16 or bf16",
                             ErrorKind::usage);
  example::register_yolo_head();
  Model model = load(std::string(NNX_SOURCE_DIR) + "/examples/seed/seed.json");
  testing_util::expect_error([&] { Executor e(model, {.precision = Precision::tf32}); },
                             "is for CUDA", ErrorKind::unsupported);
}

#ifdef NNX_WITH_CUDA
// Convolution problems for the implicit-GEMM kernels (kernel, stride, padding, dilation as
// (h, w)): batch 1 at 7x7 and 14x14 (split reductions on a GPU), 1 tile of 144 chunks (split on
// the emulator's 2 multiprocessors too), a strided 1x1, a 7x7 stem, dilation 2, 136 output
// channels over 480 positions (partial tiles in both directions for every tile size), paddings
// past the window (1x1 padded 1, 3x3 padded 3: the input gradient's padding negative), and
// rectangular kernels with unequal strides and dilations.
const IgemmProblem kIgemmProblems[] = {
    {1, 256, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1},  {1, 64, 14, 14, 65, 3, 3, 1, 1, 1, 1, 1, 1},
    {1, 256, 4, 4, 32, 3, 3, 1, 1, 1, 1, 1, 1},   {2, 32, 9, 11, 48, 1, 1, 2, 2, 0, 0, 1, 1},
    {1, 3, 40, 44, 16, 7, 7, 2, 2, 3, 3, 1, 1},   {2, 8, 12, 13, 24, 3, 3, 1, 1, 2, 2, 2, 2},
    {1, 16, 20, 24, 136, 3, 3, 1, 1, 1, 1, 1, 1}, {2, 8, 12, 13, 24, 1, 1, 1, 1, 1, 1, 1, 1},
    {1, 8, 10, 11, 16, 3, 3, 1, 1, 3, 3, 1, 1},   {2, 6, 15, 17, 20, 3, 5, 2, 1, 1, 2, 2, 3},
    {1, 6, 13, 16, 20, 3, 5, 1, 1, 2, 1, 1, 2}};

std::string pair(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

std::string describe(const IgemmProblem& q) {
  return "batch " + std::to_string(q.batch) + ", " + std::to_string(q.in_c) + "x" +
         std::to_string(q.h) + "x" + std::to_string(q.w) + " -> " + std::to_string(q.out_c) +
         ", kernel " + pair(q.kh, q.kw) + ", stride " + pair(q.sh, q.sw) + ", padding " +
         pair(q.ph, q.pw) + ", dilation " + pair(q.dh, q.dw);
}

// The problem as a Conv2d layer without bias (the CPU's reference).
std::shared_ptr<Op> problem_conv(const IgemmProblem& q) {
  return make_op(parse_call("Conv2d(" + std::to_string(q.in_c) + ", " + std::to_string(q.out_c) +
                            ", " + pair(q.kh, q.kw) + ", stride=" + pair(q.sh, q.sw) +
                            ", padding=" + pair(q.ph, q.pw) + ", dilation=" + pair(q.dh, q.dw) +
                            ", bias=False)"));
}

// The implicit-GEMM float32 convolution (kernels/cuda/conv_igemm.h), forced on with each FFMA
// tile: every PyTorch Conv2d op case and the Conv2d variants against PyTorch and the CPU; the
// fused bias + residual + ReLU form and the gradients (input gradient at stride 1, filter
// gradient) against cuDNN's, on problems whose reduction it splits and not, with NaN kept by
// the ReLU; every Conv2d variant's training pass against the CPU; and the network fixtures
// through fused Executors against PyTorch.
TEST_F(CudaOps, ImplicitGemmConvolutionMatchesPyTorchAndTheCpu) {
  struct Restore {
    ~Restore() { cuda::reset_igemm_mode(); }
  } restore;
  RandomEngine rng(99);
  for (cuda::IgemmTile tile :
       {cuda::IgemmTile::m64n64, cuda::IgemmTile::m128n64, cuda::IgemmTile::m128n128}) {
    const std::string name = cuda::igemm_tile_name(tile);
    cuda::set_igemm_mode(cuda::IgemmMode::on, tile);
    int cases = 0;
    for (auto& folder : op_case_folders()) {
      const std::string op_case = fs::relative(folder, fixture_dir() / "ops").string();
      if (op_case.rfind("layers/conv", 0) != 0) continue;
      EXPECT_EQ(run_op_case(folder, nullptr), "") << op_case << ", tile " << name;
      ++cases;
    }
    if (!std::string(NNX_PYTHON).empty()) {
      EXPECT_GT(cases, 20);
    }
    for (const Variant& v : variants()) {
      if (v.call.rfind("Conv2d", 0) != 0) continue;
      std::shared_ptr<Op> op = make_op(parse_call(v.call));
      randomise_params(*op, rng);
      std::vector<Tensor> inputs;
      for (const Shape& s : v.inputs) inputs.push_back(random_tensor(s, rng, -1, 1));
      EXPECT_EQ(compare(forward_on(*op, inputs, 1, Device::cuda(0)),
                        forward_on(*op, inputs, 1, Device::cpu()), kCpuTolerance, "CPU"),
                "")
          << v.call << ", tile " << name;
    }
    // Fused, against cuDNN's fused call.
    for (const IgemmProblem& q : kIgemmProblems) {
      const cuda::Conv2dParams p = problem_params(q);
      const Device gpu = Device::cuda(0);
      const Tensor x = random_tensor({q.batch, q.in_c, q.h, q.w}, rng, -1, 1).to(gpu);
      const Tensor w = random_tensor({q.out_c, q.in_c, q.kh, q.kw}, rng, -0.2f, 0.2f).to(gpu);
      const Tensor b = random_tensor({q.out_c}, rng, -1, 1).to(gpu);
      Tensor z_host = random_tensor({q.batch, q.out_c, p.out_h, p.out_w}, rng, -1, 1);
      z_host.data<float>()[3] = NAN;  // kept by the ReLU
      const Tensor z = z_host.to(gpu);
      const Shape out{q.batch, q.out_c, p.out_h, p.out_w};
      std::vector<Tensor> got, want;
      for (cuda::IgemmMode mode : {cuda::IgemmMode::on, cuda::IgemmMode::off}) {
        cuda::set_igemm_mode(mode, tile);
        Tensor y = Tensor::empty(out, DType::f32, gpu);
        ASSERT_TRUE(cuda::conv2d_bias_relu_forward(p, x.data<float>(), w.data<float>(),
                                                   b.data<float>(), z.data<float>(),
                                                   y.data<float>(), 0, nullptr));
        Tensor plain = Tensor::empty(out, DType::f32, gpu);
        cuda::conv2d_forward(p, x.data<float>(), w.data<float>(), nullptr, plain.data<float>(), 0,
                             nullptr);
        (mode == cuda::IgemmMode::on ? got : want) = {y.to(Device::cpu()), plain.to(Device::cpu())};
      }
      EXPECT_TRUE(std::isnan(got[0].data<float>()[3]));
      got[0].data<float>()[3] = want[0].data<float>()[3] = 0;
      EXPECT_EQ(compare(got, want, kCpuTolerance, "cuDNN"), "") << describe(q) << ", tile " << name;
      // The output and the residual one float past an allocation's start (not 16-byte aligned:
      // the epilogue's scalar path): the same values.
      {
        cuda::set_igemm_mode(cuda::IgemmMode::on, tile);
        const int64_t n = got[0].numel();
        Tensor z_shifted = Tensor::empty({n + 1});
        z_shifted.data<float>()[0] = 0;
        std::copy(z_host.data<float>(), z_host.data<float>() + n, z_shifted.data<float>() + 1);
        const Tensor zd = z_shifted.to(gpu);
        Tensor yd = Tensor::empty({n + 1}, DType::f32, gpu);
        ASSERT_TRUE(cuda::conv2d_bias_relu_forward(p, x.data<float>(), w.data<float>(),
                                                   b.data<float>(), zd.data<float>() + 1,
                                                   yd.data<float>() + 1, 0, nullptr));
        const Tensor yh = yd.to(Device::cpu());
        Tensor unaligned = Tensor::empty(out);
        std::copy(yh.data<float>() + 1, yh.data<float>() + 1 + n, unaligned.data<float>());
        unaligned.data<float>()[3] = 0;
        EXPECT_EQ(compare({unaligned}, {got[0]}, 0.0, "aligned"), "")
            << describe(q) << ", tile " << name << ", unaligned";
      }
      // The gradients (ours: the input gradient at stride 1, the filter gradient), against
      // cuDNN's.
      const Tensor dy = random_tensor(out, rng, -1, 1).to(gpu);
      std::vector<Tensor> grads[2];
      for (cuda::IgemmMode mode : {cuda::IgemmMode::on, cuda::IgemmMode::off}) {
        cuda::set_igemm_mode(mode, tile);
        Tensor dx = Tensor::empty(x.shape(), DType::f32, gpu);
        Tensor dw = Tensor::empty(w.shape(), DType::f32, gpu);
        cuda::conv2d_backward(p, x.data<float>(), w.data<float>(), dy.data<float>(),
                              dx.data<float>(), dw.data<float>(), nullptr, 0, nullptr);
        grads[mode == cuda::IgemmMode::on ? 0 : 1] = {dx.to(Device::cpu()), dw.to(Device::cpu())};
      }
      EXPECT_EQ(compare(grads[0], grads[1], kCpuTolerance, "cuDNN"), "")
          << describe(q) << ", tile " << name << ", gradients";
    }
    // Every Conv2d variant's training pass against the CPU's (the gradients through ours where
    // they apply).
    for (const Variant& v : variants()) {
      if (v.call.rfind("Conv2d", 0) != 0) continue;
      std::shared_ptr<Op> cpu_op = make_op(parse_call(v.call));
      randomise_params(*cpu_op, rng);
      std::shared_ptr<Op> gpu_op = make_op(parse_call(v.call));
      for (const Param& prm : cpu_op->params()) gpu_op->set_param(prm.name, prm.value.clone());
      gpu_op->place_params(Device::cuda(0));
      std::vector<Tensor> inputs, grads;
      random_training_data(*cpu_op, v, rng, inputs, grads);
      const TrainPass cpu = train_pass(*cpu_op, inputs, grads, Device::cpu(), 99);
      const TrainPass gpu = train_pass(*gpu_op, inputs, grads, Device::cuda(0), 99);
      EXPECT_EQ(
          compare(gpu.grad_inputs, cpu.grad_inputs, kCpuTolerance, "CPU (input gradients)") +
              compare(gpu.grad_params, cpu.grad_params, kCpuTolerance, "CPU (parameter gradients)"),
          "")
          << v.call << ", tile " << name;
    }
  }
  // Automatic: the first run of a problem times cuDNN and each tile (outside a capture) and keeps
  // the fastest; either way the result is the convolution's, run after run.
  cuda::set_igemm_mode(cuda::IgemmMode::automatic);
  {
    std::shared_ptr<Op> op = make_op(parse_call("Conv2d(16, 72, 3, padding=1)"));
    randomise_params(*op, rng);
    const std::vector<Tensor> x = {random_tensor({1, 16, 9, 9}, rng, -1, 1)};
    const std::vector<Tensor> want = forward_on(*op, x, 1, Device::cpu());
    for (int run = 0; run < 2; ++run)
      EXPECT_EQ(compare(forward_on(*op, x, 1, Device::cuda(0)), want, kCpuTolerance, "CPU"), "")
          << "automatic, run " << run;
  }
  // Automatic for the gradients too: the first call times cuDNN and each tile; the gradients are
  // cuDNN's either way, call after call.
  for (const IgemmProblem& q : {kIgemmProblems[1], kIgemmProblems[2]}) {
    const cuda::Conv2dParams p = problem_params(q);
    const Device gpu = Device::cuda(0);
    const Tensor x = random_tensor({q.batch, q.in_c, q.h, q.w}, rng, -1, 1).to(gpu);
    const Tensor w = random_tensor({q.out_c, q.in_c, q.kh, q.kw}, rng, -0.2f, 0.2f).to(gpu);
    const Tensor dy = random_tensor({q.batch, q.out_c, p.out_h, p.out_w}, rng, -1, 1).to(gpu);
    std::vector<Tensor> want;
    for (int run = 0; run < 3; ++run) {
      // Run 1 and 2 each start undecided (set_igemm_mode forgets the choices): timed anew.
      cuda::set_igemm_mode(run == 0 ? cuda::IgemmMode::off : cuda::IgemmMode::automatic);
      Tensor dx = Tensor::empty(x.shape(), DType::f32, gpu);
      Tensor dw = Tensor::empty(w.shape(), DType::f32, gpu);
      for (int call = 0; call < 2; ++call) {
        cuda::conv2d_backward(p, x.data<float>(), w.data<float>(), dy.data<float>(),
                              dx.data<float>(), dw.data<float>(), nullptr, 0, nullptr);
        const std::vector<Tensor> got = {dx.to(Device::cpu()), dw.to(Device::cpu())};
        if (run == 0) {
          want = got;
        } else {
          EXPECT_EQ(compare(got, want, kCpuTolerance, "cuDNN"), "")
              << describe(q) << ", automatic, run " << run << ", call " << call;
        }
      }
    }
  }
  // Whole networks, fused and folded, against PyTorch (each problem's default tile), run and
  // replayed from the CUDA graph (split reductions' workspaces in the graph's pool).
  cuda::set_igemm_mode(cuda::IgemmMode::on);
  const int compared = on_each_network(
      model_case_folders(), [&](const std::string& name, NetworkCase& c, Model& on_device, int) {
        Executor gpu(on_device, {});
        for (int run = 0; run < 3; ++run) {
          std::vector<Tensor> got = gpu(c.inputs);
          for (Tensor& t : got) t = t.to(Device::cpu());
          EXPECT_EQ(compare(got, c.refs, c.tol, "PyTorch"), "") << name << ", run " << run;
        }
        EXPECT_EQ(gpu.cuda_graph_state().rfind("captured", 0), 0u) << gpu.cuda_graph_state();
      });
  if (!std::string(NNX_PYTHON).empty()) {
    EXPECT_GT(compared, 0);
  }
}

// A float rounded as the tensor-core kernel rounds its operands (fp32 widened back): TF32 to
// nearest, ties away from zero (cvt.rna.tf32.f32); fp16 and bf16 to nearest even.
float round_operand(Precision precision, float v) {
  switch (precision) {
    case Precision::tf32: {
      if (!std::isfinite(v)) return v;
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      bits = (bits + 0x1000u) & 0xffffe000u;
      std::memcpy(&v, &bits, 4);
      return v;
    }
    case Precision::fp16:
      return half_to_float(float_to_half(v));
    case Precision::bf16:
      return bf16_to_float(float_to_bf16(v));
    default:
      return v;
  }
}

Tensor rounded(const Tensor& t, Precision precision) {
  Tensor out = t.clone();
  float* v = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) v[i] = round_operand(precision, v[i]);
  return out;
}

// The tensor-core implicit-GEMM convolution (kernels/cuda/conv_mma.cuh), forced on, in TF32, fp16
// and bf16: on every problem of kIgemmProblems, with bias, a residual (one NaN, kept) and ReLU,
// against the CPU's convolution of the same rounded operands, its sum rounded as the operand
// format has it (fp16, bf16) before the bias is added, as cuDNN's reduced-precision path does:
// within 5e-5 in TF32 (room for the tensor cores' own summation; an unrounded input is 2e-4
// off) and one rounding step of the output format in fp16 (1e-3) and bf16 (8e-3),
// and without a bias every fp16/bf16 output a value of that format.
// Then the reduced path's plain form against cuDNN's (the emulator's cuDNN rounds the same way),
// and every network fixture through Executors in fp16 within the documented distance of fp32
// (Fp16AndBf16RunsStayNearFp32).
TEST_F(CudaOps, TensorCoreConvolutionMatchesTheCpuOnRoundedOperands) {
  struct Restore {
    ~Restore() { cuda::reset_igemm_mode(); }
  } restore;
  RandomEngine rng(7);
  const Device gpu = Device::cuda(0);
  for (auto [precision, tol] : {std::pair{Precision::tf32, 5e-5}, std::pair{Precision::fp16, 1e-3},
                                std::pair{Precision::bf16, 8e-3}}) {
    const std::string pname = precision_name(precision);
    const cuda::ConvIo io = precision == Precision::bf16 ? cuda::ConvIo::bf16 : cuda::ConvIo::f16;
    for (const IgemmProblem& q : kIgemmProblems) {
      cuda::Conv2dParams p = problem_params(q);
      p.allow_tf32 = precision == Precision::tf32;
      const Tensor x = random_tensor({q.batch, q.in_c, q.h, q.w}, rng, -1, 1);
      const Tensor w = random_tensor({q.out_c, q.in_c, q.kh, q.kw}, rng, -0.2f, 0.2f);
      const Tensor b = random_tensor({q.out_c}, rng, -1, 1);
      const Shape out{q.batch, q.out_c, p.out_h, p.out_w};
      Tensor z = random_tensor(out, rng, -1, 1);
      z.data<float>()[3] = NAN;
      // The reference: the CPU's convolution of the rounded operands, then the epilogue.
      std::shared_ptr<Op> conv = problem_conv(q);
      conv->set_param("weight", rounded(w, precision));
      Tensor want = forward_on(*conv, {rounded(x, precision)}, 1, Device::cpu())[0];
      Tensor want_plain = want.clone();
      {
        const int64_t plane = p.out_h * p.out_w;
        float* r = want.data<float>();
        float* plain = want_plain.data<float>();
        const float* bv = b.data<float>();
        const float* zv = z.data<float>();
        for (int64_t i = 0; i < want.numel(); ++i) {
          const float s = (precision == Precision::tf32 ? r[i] : round_operand(precision, r[i])) +
                          bv[(i / plane) % q.out_c];
          plain[i] = s;
          const float v = s + zv[i];
          r[i] = v < 0.0f ? 0.0f : v;
        }
      }
      cuda::set_igemm_mode(cuda::IgemmMode::on);
      const Tensor xd = x.to(gpu), bd = b.to(gpu), zd = z.to(gpu);
      Tensor y = Tensor::empty(out, DType::f32, gpu);
      Tensor y_plain = Tensor::empty(out, DType::f32, gpu);
      if (precision == Precision::tf32) {
        const Tensor wd = w.to(gpu);
        ASSERT_TRUE(cuda::conv2d_bias_relu_forward(p, xd.data<float>(), wd.data<float>(),
                                                   bd.data<float>(), zd.data<float>(),
                                                   y.data<float>(), 0, nullptr));
        cuda::conv2d_forward(p, xd.data<float>(), wd.data<float>(), bd.data<float>(),
                             y_plain.data<float>(), 0, nullptr);
      } else {
        Tensor w_io =
            Tensor::empty(w.shape(), precision == Precision::fp16 ? DType::f16 : DType::bf16);
        auto* bits = static_cast<uint16_t*>(w_io.raw_data());
        for (int64_t i = 0; i < w.numel(); ++i)
          bits[i] = precision == Precision::fp16 ? float_to_half(w.data<float>()[i])
                                                 : float_to_bf16(w.data<float>()[i]);
        const Tensor wd = w_io.to(gpu);
        ASSERT_TRUE(cuda::conv2d_bias_relu_forward_reduced(p, io, xd.data<float>(), wd.raw_data(),
                                                           bd.data<float>(), zd.data<float>(),
                                                           y.data<float>(), 0, nullptr));
        cuda::conv2d_forward_reduced(p, io, xd.data<float>(), wd.raw_data(), bd.data<float>(),
                                     y_plain.data<float>(), 0, nullptr);
        // Without a bias, every output is a value of the operand format (the sum was rounded).
        Tensor no_bias = Tensor::empty(out, DType::f32, gpu);
        cuda::conv2d_forward_reduced(p, io, xd.data<float>(), wd.raw_data(), nullptr,
                                     no_bias.data<float>(), 0, nullptr);
        const Tensor nb = no_bias.to(Device::cpu());
        int64_t unrounded = 0;
        for (int64_t i = 0; i < nb.numel(); ++i)
          unrounded += round_operand(precision, nb.data<float>()[i]) != nb.data<float>()[i];
        EXPECT_EQ(unrounded, 0) << describe(q) << ", " << pname;
        // The plain form against cuDNN's reduced path.
        cuda::set_igemm_mode(cuda::IgemmMode::off);
        Tensor by_cudnn = Tensor::empty(out, DType::f32, gpu);
        cuda::conv2d_forward_reduced(p, io, xd.data<float>(), wd.raw_data(), bd.data<float>(),
                                     by_cudnn.data<float>(), 0, nullptr);
        EXPECT_EQ(compare({y_plain.to(Device::cpu())}, {by_cudnn.to(Device::cpu())}, tol, "cuDNN"),
                  "")
            << describe(q) << ", " << pname;
      }
      std::vector<Tensor> got = {y.to(Device::cpu()), y_plain.to(Device::cpu())};
      EXPECT_TRUE(std::isnan(got[0].data<float>()[3])) << describe(q) << ", " << pname;
      got[0].data<float>()[3] = want.data<float>()[3] = 0;
      EXPECT_EQ(compare(got, {want, want_plain}, tol, "CPU"), "") << describe(q) << ", " << pname;
    }
  }
  // Automatic (cuDNN's path and ours timed on the first call) in fp16: the plain form as either
  // gives it, and the fused form, where taken, the reference's.
  {
    const IgemmProblem q = kIgemmProblems[1];
    const cuda::Conv2dParams p = problem_params(q);
    const Tensor x = random_tensor({q.batch, q.in_c, q.h, q.w}, rng, -1, 1).to(gpu);
    Tensor w_io = Tensor::empty({q.out_c, q.in_c, q.kh, q.kw}, DType::f16);
    auto* bits = static_cast<uint16_t*>(w_io.raw_data());
    for (int64_t i = 0; i < w_io.numel(); ++i)
      bits[i] = float_to_half(std::uniform_real_distribution<float>(-0.2f, 0.2f)(rng));
    const Tensor wd = w_io.to(gpu);
    const Tensor b = random_tensor({q.out_c}, rng, -1, 1).to(gpu);
    const Shape out{q.batch, q.out_c, p.out_h, p.out_w};
    const Tensor z = random_tensor(out, rng, -1, 1).to(gpu);
    auto plain = [&] {
      Tensor y = Tensor::empty(out, DType::f32, gpu);
      cuda::conv2d_forward_reduced(p, cuda::ConvIo::f16, x.data<float>(), wd.raw_data(),
                                   b.data<float>(), y.data<float>(), 0, nullptr);
      return y.to(Device::cpu());
    };
    cuda::set_igemm_mode(cuda::IgemmMode::off);
    const Tensor want = plain();
    Tensor want_fused = want.clone();
    const Tensor zh = z.to(Device::cpu());
    for (int64_t i = 0; i < want.numel(); ++i)
      want_fused.data<float>()[i] = std::max(0.0f, want.data<float>()[i] + zh.data<float>()[i]);
    cuda::set_igemm_mode(cuda::IgemmMode::automatic);
    for (int call = 0; call < 2; ++call) {
      EXPECT_EQ(compare({plain()}, {want}, 1e-3, "cuDNN"), "") << "automatic, call " << call;
      Tensor y = Tensor::empty(out, DType::f32, gpu);
      if (cuda::conv2d_bias_relu_forward_reduced(p, cuda::ConvIo::f16, x.data<float>(),
                                                 wd.raw_data(), b.data<float>(), z.data<float>(),
                                                 y.data<float>(), 0, nullptr)) {
        EXPECT_EQ(compare({y.to(Device::cpu())}, {want_fused}, 1e-3, "the pieces"), "")
            << "automatic, fused, call " << call;
      }
    }
  }
  // Whole networks in fp16 (the chains' fused reduced-precision path; TF32's fused path is
  // conv2d_bias_relu_forward's, checked above, and bf16 takes fp16's), every eligible
  // convolution on the tensor-core kernel, run and replayed from the CUDA graph.
  cuda::set_igemm_mode(cuda::IgemmMode::on);
  const int compared = on_each_network(
      model_case_folders(), [&](const std::string& name, NetworkCase& c, Model& on_device, int) {
        Executor fp32(on_device), reduced(on_device, {.precision = Precision::fp16});
        for (int run = 0; run < 2; ++run) {
          std::vector<Tensor> a = fp32(c.inputs), b = reduced(c.inputs);
          for (Tensor& t : a) t = t.to(Device::cpu());
          for (Tensor& t : b) t = t.to(Device::cpu());
          EXPECT_EQ(compare(b, a, 1e-2, "fp32"), "") << name << " fp16, run " << run;
        }
      });
  if (!std::string(NNX_PYTHON).empty()) {
    EXPECT_GT(compared, 0);
  }
}

#endif  // NNX_WITH_CUDA

}  // namespace
}  // namespace nnx
