// Winograd F(2x2, 3x3) for 3x3, stride-1, undilated, ungrouped convolutions with enough
// channels: 16 GEMMs over channels instead of one over channels x taps, 2.25x fewer multiplies.
// Float32 rounding differs from the direct sum by about 1e-6 relative, within PyTorch parity.
#pragma once

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

// The transformed weights conv2d_winograd takes as `prepared` (ConvPrepared keeps them): their
// size in floats, and the transform.
int64_t winograd_weights_floats(const Conv2dShape& shape);
// Split over `pool`'s threads when given.
void winograd_transform_weights(const Conv2dShape& shape, const float* weight, float* out,
                                ThreadPool* pool = nullptr);

// Whether `shape` is one this path serves (and pays off for); `prepared`: with weights
// transformed beforehand (ConvPrepared).
bool winograd_suitable(const Conv2dShape& shape, bool prepared);

// As conv2d (see conv2d.h), for a shape that winograd_suitable accepts. `prepared` is null or
// winograd_transform_weights's result for this weight.
void conv2d_winograd(const Conv2dShape& shape, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue = {}, const float* prepared = nullptr);

}  // namespace nnx::cpu
