// Per-op CPU timings for the shapes that dominate the example networks.
//   build/release/bench/nnx_bench_ops --benchmark_filter=Conv
#include <benchmark/benchmark.h>

#include <random>
#include <string>

#include "importer/call_parser.h"
#include "kernels/cpu/prepared.h"
#include "nnx/nnx.hpp"
#include "nnx/thread_pool.h"
#include "ops/conv2d.h"

namespace {

nnx::Tensor random_tensor(const nnx::Shape& shape) {
  nnx::Tensor t = nnx::Tensor::empty(shape);
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

void run_op(benchmark::State& state, const char* call_text, nnx::Shape input, int threads) {
  auto op = nnx::make_op(nnx::parse_call(call_text));
  nnx::RandomEngine rng(0);
  op->init_params(rng);
  std::vector<nnx::Tensor> inputs = {random_tensor(input)};
  std::vector<nnx::TensorSpec> specs = {{input, nnx::DType::f32}};
  auto out_specs = op->infer_shapes(specs, 1);
  std::vector<nnx::Tensor> outputs = {nnx::Tensor::empty(out_specs[0].shape)};
  nnx::ThreadPool pool(threads);
  nnx::ExecContext ctx;
  ctx.pool = &pool;
  for (auto _ : state) op->forward(ctx, inputs, outputs);
  state.counters["GFLOP/s"] =
      benchmark::Counter(double(op->flops(specs, out_specs)) * double(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void BM_Conv3x3_64(benchmark::State& s) {
  run_op(s, "Conv2d(64, 64, 3, padding=1)", {1, 64, 56, 56}, int(s.range(0)));
}
void BM_Conv3x3_seed(benchmark::State& s) {
  run_op(s, "Conv2d(3, 64, 3, padding=1)", {1, 3, 480, 640}, int(s.range(0)));
}
void BM_Conv7x7_seed(benchmark::State& s) {
  run_op(s, "Conv2d(3, 128, 7, padding=3)", {1, 3, 480, 640}, int(s.range(0)));
}
void BM_Conv1x1_256(benchmark::State& s) {
  run_op(s, "Conv2d(256, 256, 1)", {1, 256, 28, 28}, int(s.range(0)));
}
void BM_Depthwise(benchmark::State& s) {
  run_op(s, "Conv2d(96, 96, 3, padding=1, groups=96)", {1, 96, 56, 56}, int(s.range(0)));
}
// ResNet-18's 3x3 layers at batch 1, one per stage (the same FLOPs on shrinking planes).
void BM_ResNetConv3x3(benchmark::State& s) {
  const int64_t channels = s.range(0), size = s.range(1);
  const std::string call = "Conv2d(" + std::to_string(channels) + ", " + std::to_string(channels) +
                           ", 3, padding=1, bias=False)";
  run_op(s, call.c_str(), {1, channels, size, size}, int(s.range(2)));
}
// A convolution as an inference model runs it: weights frozen, their prepared form (Winograd
// transform or 12-row panels) made once (the fusion chain's ConvPrepared), so only the per-call
// work is timed.
void run_prepared(benchmark::State& state, const std::string& call, const nnx::Shape& input_shape,
                  int threads) {
  auto op = nnx::make_op(nnx::parse_call(call));
  auto* conv = dynamic_cast<nnx::Conv2d*>(op.get());
  nnx::RandomEngine rng(0);
  op->init_params(rng);
  nnx::Tensor input = random_tensor(input_shape);
  const std::vector<nnx::TensorSpec> specs = {{input_shape, nnx::DType::f32}};
  const std::vector<nnx::TensorSpec> out_specs = op->infer_shapes(specs, 1);
  nnx::Tensor output = nnx::Tensor::empty(out_specs[0].shape);
  nnx::ThreadPool pool(threads);
  nnx::ExecContext ctx;
  ctx.pool = &pool;
  nnx::cpu::ConvPrepared prepared;
  const nnx::Tensor weight = op->params()[0].value;
  for (auto _ : state)
    conv->forward_fused(ctx, input, weight.data<float>(), nullptr, {}, output, &prepared);
  state.counters["GFLOP/s"] =
      benchmark::Counter(double(op->flops(specs, out_specs)) * double(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
void BM_ResNetConv3x3Prepared(benchmark::State& state) {
  const int64_t channels = state.range(0), size = state.range(1);
  run_prepared(state,
               "Conv2d(" + std::to_string(channels) + ", " + std::to_string(channels) +
                   ", 3, padding=1, bias=False)",
               {1, channels, size, size}, int(state.range(2)));
}
// SqueezeNet 1.1's expand 3x3 layers at batch 1 (input channels, output channels, size,
// threads): few input channels against the output's, on 55x55 down to 13x13 planes.
void BM_SqueezeConv3x3Prepared(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1), size = state.range(2);
  run_prepared(state,
               "Conv2d(" + std::to_string(in) + ", " + std::to_string(out) + ", 3, padding=1)",
               {1, in, size, size}, int(state.range(3)));
}
// 1x1 layers of EfficientNet-B0 and MobileNetV2 at batch 1 (input channels, output channels,
// size, threads): few input channels on large planes (where the tiles' input prefetch must stay
// within the input), and 14x14 and 7x7 planes, whose last 4 and 1 pixels are a tail.
void BM_PointwisePrepared(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1), size = state.range(2);
  run_prepared(state,
               "Conv2d(" + std::to_string(in) + ", " + std::to_string(out) + ", 1, bias=False)",
               {1, in, size, size}, int(state.range(3)));
}
void BM_MaxPool(benchmark::State& s) {
  run_op(s, "MaxPool2d(2, 2)", {1, 64, 480, 640}, int(s.range(0)));
}

// Backward passes (input, weight and bias gradients) of a training batch of 8; compare with
// bench/train_ops_torch.py (PyTorch autograd on the same shapes).
// `which`: 3 both gradients, 1 the input's alone, 2 the parameters' alone.
void run_backward(benchmark::State& state, const char* call_text, nnx::Shape input, int threads,
                  int which = 3) {
  auto op = nnx::make_op(nnx::parse_call(call_text));
  nnx::RandomEngine rng(0);
  op->init_params(rng);
  std::vector<nnx::Tensor> inputs = {random_tensor(input)};
  std::vector<nnx::TensorSpec> specs = {{input, nnx::DType::f32}};
  auto out_specs = op->infer_shapes(specs, 1);
  std::vector<nnx::Tensor> outputs = {nnx::Tensor::empty(out_specs[0].shape)};
  std::vector<nnx::Tensor> grad_outputs = {random_tensor(out_specs[0].shape)};
  std::vector<nnx::Tensor> grad_inputs = {(which & 1) ? nnx::Tensor::empty(input) : nnx::Tensor()};
  std::vector<nnx::Tensor> grad_params;
  for (const auto& p : op->params())
    grad_params.push_back(p.trainable && (which & 2) ? nnx::Tensor::empty(p.value.shape())
                                                     : nnx::Tensor());
  nnx::ThreadPool pool(threads);
  nnx::ExecContext ctx;
  ctx.pool = &pool;
  op->forward(ctx, inputs, outputs);
  for (auto _ : state) op->backward(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
  // Input and weight gradients: two products the size of the forward.
  const double products = which == 3 ? 2.0 : 1.0;
  state.counters["GFLOP/s"] = benchmark::Counter(
      products * double(op->flops(specs, out_specs)) * double(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void BM_Conv3x3_64_Backward(benchmark::State& s) {
  run_backward(s, "Conv2d(64, 64, 3, padding=1)", {8, 64, 56, 56}, int(s.range(0)));
}
void BM_Conv1x1_64_256_Backward(benchmark::State& s) {
  run_backward(s, "Conv2d(64, 256, 1)", {8, 64, 56, 56}, int(s.range(0)));
}
void BM_Conv3x3_128_s2_Backward(benchmark::State& s) {
  run_backward(s, "Conv2d(128, 128, 3, stride=2, padding=1)", {8, 128, 28, 28}, int(s.range(0)));
}
void BM_Depthwise_Backward(benchmark::State& s) {
  run_backward(s, "Conv2d(96, 96, 3, padding=1, groups=96)", {8, 96, 56, 56}, int(s.range(0)));
}

// The convolutions of ResNet-18's training step at batch 32 x 3x64x64 (issue 13's goal figure),
// 2 threads: args in, out, kernel, stride, input size. Forward and backward (input and weight
// gradients; the stem's input gradient too, which a training step skips).
std::string resnet18_train_call(const benchmark::State& s) {
  const int64_t kernel = s.range(2);
  return "Conv2d(" + std::to_string(s.range(0)) + ", " + std::to_string(s.range(1)) + ", " +
         std::to_string(kernel) + ", stride=" + std::to_string(s.range(3)) +
         ", padding=" + std::to_string(kernel / 2) + ", bias=False)";
}
void BM_ResNet18TrainForward(benchmark::State& s) {
  const std::string call = resnet18_train_call(s);
  run_op(s, call.c_str(), {32, s.range(0), s.range(4), s.range(4)}, 2);
}
void BM_ResNet18TrainBackward(benchmark::State& s) {
  const std::string call = resnet18_train_call(s);
  run_backward(s, call.c_str(), {32, s.range(0), s.range(4), s.range(4)}, 2);
}
void BM_ResNet18TrainInputGrad(benchmark::State& s) {
  const std::string call = resnet18_train_call(s);
  run_backward(s, call.c_str(), {32, s.range(0), s.range(4), s.range(4)}, 2, 1);
}
void BM_ResNet18TrainWeightGrad(benchmark::State& s) {
  const std::string call = resnet18_train_call(s);
  run_backward(s, call.c_str(), {32, s.range(0), s.range(4), s.range(4)}, 2, 2);
}
void resnet18_train_shapes(benchmark::internal::Benchmark* b) {
  b->Args({3, 64, 7, 2, 64})
      ->Args({64, 64, 3, 1, 16})
      ->Args({64, 128, 3, 2, 16})
      ->Args({64, 128, 1, 2, 16})
      ->Args({128, 128, 3, 1, 8})
      ->Args({128, 256, 3, 2, 8})
      ->Args({128, 256, 1, 2, 8})
      ->Args({256, 256, 3, 1, 4})
      ->Args({256, 512, 3, 2, 4})
      ->Args({256, 512, 1, 2, 4})
      ->Args({512, 512, 3, 1, 2})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Conv3x3_64)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv3x3_seed)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv7x7_seed)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv1x1_256)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Depthwise)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ResNetConv3x3)
    ->ArgsProduct({{64}, {56}, {1, 2}})
    ->Args({128, 28, 1})
    ->Args({128, 28, 2})
    ->Args({256, 14, 1})
    ->Args({256, 14, 2})
    ->Args({512, 7, 1})
    ->Args({512, 7, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ResNetConv3x3Prepared)
    ->ArgsProduct({{64}, {56}, {1, 2}})
    ->Args({128, 28, 1})
    ->Args({128, 28, 2})
    ->Args({256, 14, 1})
    ->Args({256, 14, 2})
    ->Args({512, 7, 1})
    ->Args({512, 7, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SqueezeConv3x3Prepared)
    ->Args({16, 64, 55, 2})
    ->Args({32, 128, 27, 2})
    ->Args({48, 192, 13, 2})
    ->Args({64, 256, 13, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PointwisePrepared)
    ->ArgsProduct({{16}, {96}, {112}, {1, 2}})
    ->Args({32, 16, 112, 2})
    ->Args({24, 144, 56, 2})
    ->Args({672, 112, 14, 2})
    ->Args({1152, 320, 7, 1})
    ->Args({1152, 320, 7, 2})
    ->Args({320, 1280, 7, 2})
    ->ArgsProduct({{512}, {2048}, {7}, {1, 2}})
    ->ArgsProduct({{2048}, {512}, {7}, {1, 2}})
    ->ArgsProduct({{256}, {64}, {56}, {1, 2}})
    ->Args({64, 256, 56, 2})
    ->Args({1024, 256, 14, 2})
    ->Args({512, 1000, 13, 1})
    ->Args({512, 1000, 13, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MaxPool)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv3x3_64_Backward)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv1x1_64_256_Backward)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv3x3_128_s2_Backward)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Depthwise_Backward)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ResNet18TrainForward)->Apply(resnet18_train_shapes);
BENCHMARK(BM_ResNet18TrainBackward)->Apply(resnet18_train_shapes);
BENCHMARK(BM_ResNet18TrainInputGrad)->Apply(resnet18_train_shapes);
BENCHMARK(BM_ResNet18TrainWeightGrad)->Apply(resnet18_train_shapes);

}  // namespace
