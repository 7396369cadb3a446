// Winograd F(2x2, 3x3) for 3x3, stride-1, undilated, ungrouped convolutions with enough
// channels: 16 GEMMs over channels instead of one over channels x taps, 2.25x fewer multiplies.
// Float32 rounding differs from the direct sum by about 1e-6 relative, within PyTorch parity.
#pragma once

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

// Whether `shape` is one this path serves (and pays off for).
bool winograd_suitable(const Conv2dShape& shape);

// As conv2d (see conv2d.h), for a shape that winograd_suitable accepts.
void conv2d_winograd(const Conv2dShape& shape, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue = {});

}  // namespace nnx::cpu
