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

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace {

// FLOPs of one call of fma_chains(iterations): chains x lanes x 2 per iteration.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 1;
#endif
constexpr int kChains = 12;

float fma_chains(int64_t iterations, float seed) {
#if defined(__AVX512F__)
  __m512 acc[kChains];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(seed + float(i));
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  // Through memory: GCC 12 warns inside _mm512_reduce_add_ps (its bug 105593).
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc[kChains];
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(seed + float(i));
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
#else
  float acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = seed + float(i);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float total = 0;
  for (float v : acc) total += v;
  return total;
#endif
}

void BM_PeakFma(benchmark::State& state) {
  const int threads = int(state.range(0));
  constexpr int64_t kIterations = 1 << 20;
  std::atomic<float> sink{0};
  for (auto _ : state) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { sink = sink + fma_chains(kIterations, float(t)); });
    for (auto& th : pool) th.join();
  }
  benchmark::DoNotOptimize(sink.load());
  const double flops = double(kIterations) * kChains * kLanes * 2 * threads;
  state.counters["GFLOP/s"] = benchmark::Counter(
      flops * double(state.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::to_string(kLanes * 32) + "-bit FMA");
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
