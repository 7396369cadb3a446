// FMA peak probe (see peak.h).
#include "kernels/cpu/peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace nnx::cpu {

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

}  // namespace

// Not inlined: inlined into measure_peak_gflops, GCC 12 spilled the chains to the stack.
__attribute__((noinline)) float fma_chains(int64_t iterations, float seed) {
#if defined(__AVX512F__)
  __m512 acc[kChains];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(seed + float(i));
  for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12  // the chains must stay in registers
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
#pragma GCC unroll 12  // the chains must stay in registers
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
#pragma GCC unroll 12  // the chains must stay in registers
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float total = 0;
  for (float v : acc) total += v;
  return total;
#endif
}

double fma_chains_flops(int64_t iterations) {
  return double(iterations) * kChains * kLanes * 2;
}

int fma_vector_bits() {
  return kLanes * 32;
}

double measure_peak_gflops(int threads, double seconds) {
  threads = std::max(threads, 1);
  // Calibrate one thread's rounds to about a tenth of the time, then time all threads.
  int64_t iterations = 1 << 14;
  using Clock = std::chrono::steady_clock;
  std::atomic<float> sink{0};
  while (true) {
    const auto start = Clock::now();
    sink = sink + fma_chains(iterations, 1.f);
    const double took = std::chrono::duration<double>(Clock::now() - start).count();
    if (took > seconds / 10 || iterations > (int64_t(1) << 30)) {
      iterations =
          std::max<int64_t>(1, int64_t(double(iterations) * seconds / std::max(took, 1e-9)));
      break;
    }
    iterations *= 4;
  }
  // The best of three timings: a peak is a maximum, and a thread that starts late or a
  // neighbour on the machine only ever lowers one.
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t)
      pool.emplace_back([&, t] { sink = sink + fma_chains(iterations / 3, float(t)); });
    sink = sink + fma_chains(iterations / 3, 0.f);
    for (auto& th : pool) th.join();
    const double took = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, fma_chains_flops(iterations / 3) * threads / std::max(took, 1e-9) / 1e9);
  }
  return best;
}

}  // namespace nnx::cpu
