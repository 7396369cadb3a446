// The machine's float32 peak, measured, and the GEMM's share of it.
//   build/release/bench/nnx_bench_peak
//
// BM_PeakFma/T: T threads each run chains of independent fused multiply-adds in the widest
// vectors this build targets (AVX-512 where the compiler targets it, else AVX2 + FMA, else
// scalar), enough chains to cover the FMA latency on every port. Its GFLOP/s is the peak that
// achieved figures (nnx bench --profile, the GEMM below) are compared against.
// BM_Gemm/M/N/K: the single-threaded GEMM of kernels/cpu/gemm.h at shapes of real layers.
#include <benchmark/benchmark.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/peak.h"

namespace {

void BM_PeakFma(benchmark::State& state) {
  const int threads = int(state.range(0));
  constexpr int64_t kIterations = 1 << 20;
  std::atomic<float> sink{0};
  for (auto _ : state) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { sink = sink + nnx::cpu::fma_chains(kIterations, float(t)); });
    for (auto& th : pool) th.join();
  }
  benchmark::DoNotOptimize(sink.load());
  const double flops = nnx::cpu::fma_chains_flops(kIterations) * threads;
  state.counters["GFLOP/s"] = benchmark::Counter(
      flops * double(state.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::to_string(nnx::cpu::fma_vector_bits()) + "-bit FMA");
}
BENCHMARK(BM_PeakFma)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a(size_t(m * k)), b(size_t(k * n)), c(size_t(m * n));
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : a) v = u(rng);
  for (float& v : b) v = u(rng);
  for (auto _ : state) {
    nnx::cpu::gemm(m, n, k, a.data(), k, b.data(), n, false, c.data(), n, false);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(m * n * k) * double(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
// C = A * B^T with B^T given as rows: the weight gradient of a convolution, grad_output
// [out channels x pixels] times the im2col columns [(in channels x taps) x pixels] transposed.
void BM_GemmTransposedB(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a(size_t(m * k)), bt(size_t(n * k)), c(size_t(m * n));
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : a) v = u(rng);
  for (float& v : bt) v = u(rng);
  for (auto _ : state) {
    nnx::cpu::gemm(m, n, k, a.data(), k, bt.data(), k, true, c.data(), n, false);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(m * n * k) * double(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GemmTransposedB)
    ->Args({64, 576, 3136})
    ->Args({128, 1152, 784})
    ->Args({256, 64, 3136})
    ->Unit(benchmark::kMillisecond);

// out channels x output pixels x (in channels x taps): 3x3 and 1x1 layers of ResNet-50 and of
// the seed network, and a square reference.
BENCHMARK(BM_Gemm)
    ->Args({64, 3136, 576})
    ->Args({128, 784, 1152})
    ->Args({256, 196, 2304})
    ->Args({256, 3136, 64})
    ->Args({512, 784, 128})
    ->Args({128, 4800, 1152})
    ->Args({512, 512, 512})
    ->Unit(benchmark::kMillisecond);

}  // namespace
