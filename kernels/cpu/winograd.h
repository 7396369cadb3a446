// Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3, stride-1, undilated, ungrouped convolutions
// with enough channels: 16 (36) GEMMs over channels instead of one over channels x taps, 2.25x
// (4x) fewer multiplies. Float32 rounding differs from the direct sum by about 1e-6 (a few 1e-6)
// relative, within PyTorch parity.
#pragma once

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

// The transformed weights conv2d_winograd takes as `prepared` (ConvPrepared keeps them), for
// output tiles of `tile` x `tile` (2: F(2x2, 3x3); 4: F(4x4, 3x3), AVX-512 and AVX2 builds): their
// size in floats, and the transform, split over `pool`'s threads when given.
int64_t winograd_weights_floats(const Conv2dShape& shape, int tile);
void winograd_transform_weights(const Conv2dShape& shape, const float* weight, float* out, int tile,
                                ThreadPool* pool = nullptr);
// The tile prepared weights for `shape` are transformed for: 4 on AVX-512 and AVX2 builds where the
// image's 4x4 tiles fill at least one 16-wide GEMM panel (a 7x7 plane's 4 would leave it three
// quarters empty: twice F(2x2)'s time), else 2. F(4x4, 3x3) makes 36 products of the 144
// multiplies of a direct 4x4 block (4x fewer; F(2x2, 3x3) 2.25x); its float32 rounding differs
// from the direct sum by a few 1e-6 relative, within PyTorch parity.
int winograd_prepared_tile(const Conv2dShape& shape);
// The tile weights transformed per call (conv2d_winograd without `prepared`) are transformed
// for: 4 where each image's 4x4 tiles fill a 16-wide panel (AVX-512 builds; AVX2 builds: more
// than 16 of them) and the batch has 256 of them to amortise the larger transform over
// (AVX-512: ResNet-18's 16x16 layers in training at batch 32: 1.17 -> 0.89 ms; its 8x8 ones, 4
// tiles an image, took twice F(2x2)'s time; AVX2: the seed network's 64x80 and 32x40 layers
// 0.63-0.66x F(2x2)'s time, 16x16 planes 1.12x), else 2.
int winograd_unprepared_tile(const Conv2dShape& shape);

// Whether `shape` is one this path serves (and pays off for); `prepared`: with weights
// transformed beforehand (ConvPrepared).
bool winograd_suitable(const Conv2dShape& shape, bool prepared);

// As conv2d (see conv2d.h), for a shape that winograd_suitable accepts. `prepared` is null (the
// weights transformed here, for winograd_unprepared_tile's tile) or winograd_transform_weights's
// result for this weight and `prepared_tile`.
void conv2d_winograd(const Conv2dShape& shape, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue = {}, const float* prepared = nullptr,
                     int prepared_tile = 2);

}  // namespace nnx::cpu
