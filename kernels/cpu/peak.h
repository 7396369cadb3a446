// The machine's float32 FMA peak, measured: chains of independent fused multiply-adds in the
// widest vectors this build targets (AVX-512 where the compiler targets it, else AVX2 + FMA,
// else scalar), enough chains to cover the FMA latency on every port. Achieved GFLOP/s
// (nnx bench --profile, bench/) are reported against it.
#pragma once

#include <cstdint>

namespace nnx::cpu {

// Runs `iterations` rounds of the FMA chains; the result only keeps the work from being elided.
float fma_chains(int64_t iterations, float seed);
// FLOPs of one fma_chains(iterations) call.
double fma_chains_flops(int64_t iterations);
// Width of the vectors fma_chains uses, in bits.
int fma_vector_bits();
// `threads` threads each run FMA chains for about `seconds`; returns the total GFLOP/s.
double measure_peak_gflops(int threads, double seconds = 0.03);

}  // namespace nnx::cpu
