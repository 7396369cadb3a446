// The CUDA emulator's one matrix product (host_gemm.cpp), shared by its stand-ins for cuDNN's
// convolutions and cuBLAS's SGEMM (libraries.cpp).
#pragma once

#include <cstdint>

namespace nnx::emu {

// c = op(a) op(b), or c += op(a) op(b) when accumulate: row-major, c [m, n] with leading
// dimension ldc, op(a) [m, k] and op(b) [k, n], each stored transposed where ta / tb.
//
// Compiled without the sanitizers' instrumentation, in sanitizer builds too: an instrumented
// Eigen GEMM was half the time of the emulated training tests under ASan. The callers check the
// ranges it reads and writes: their own host copies, or device memory whose extent they checked.
void host_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);

}  // namespace nnx::emu
