// Winograd F(2x2, 3x3) for 3x3, stride-1, undilated, ungrouped convolutions with enough
// channels: 16 GEMMs over channels instead of one over channels x taps, 2.25x fewer multiplies.
// Float32 rounding differs from the direct sum by about 1e-6 relative, within PyTorch parity.
#pragma once

#include <mutex>
#include <vector>

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

// Weights transformed once for a layer whose weights no longer change (inference): the
// per-call transform then disappears, which makes the path pay off on small planes too.
// Thread-safe; the transform is made on the first call that needs it.
class WinogradWeights {
 public:
  // The transformed form of `weight` (whose shape `s` gives), made on the first call.
  const float* get(const Conv2dShape& s, const float* weight);

 private:
  std::once_flag once_;
  std::vector<float> u_;
};

// Whether `shape` is one this path serves (and pays off for); `prepared`: with weights
// transformed beforehand (WinogradWeights).
bool winograd_suitable(const Conv2dShape& shape, bool prepared);

// As conv2d (see conv2d.h), for a shape that winograd_suitable accepts. `prepared` is null or
// WinogradWeights::get's result for this weight.
void conv2d_winograd(const Conv2dShape& shape, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue = {}, const float* prepared = nullptr);

}  // namespace nnx::cpu
