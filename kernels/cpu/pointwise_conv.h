// 1x1 convolutions without packing their input (AVX-512 builds; AVX2 + FMA builds with tiles of
// 6 output channels x 16 pixels, a 12-row weight panel in two halves). In NCHW a row of the GEMM's
// right-hand side, one input channel's pixels, is already contiguous: each tile of 12 output
// channels x 32 pixels reads its 32 pixels of every input channel straight from the image (row
// stride: the plane), the weights broadcast from the 12-row panels prepared at load
// (ConvPrepared::panels), and sums over all input channels in registers, so the output is
// written once, bias, ReLU-like clamp and residual applied in the store. The panel path copies
// each block of the input into 32-wide panels first, a pass as long as the multiply on layers
// with few output channels per input channel (ResNet-50's 512 -> 128 at 28x28). (AVX2 builds do
// copy the input of planes of up to 64 pixels into contiguous tiles, once per image and thread,
// where the weights outweigh it: pointwise_packs.)
#pragma once

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define NNX_POINTWISE_CONV 1
// Whether conv2d_pointwise serves `shape`: ungrouped 1x1 layers of stride 1 without padding
// (conv2d samples a strided one's pixels into such a layer's input first).
bool pointwise_suitable(const Conv2dShape& shape);

// Whether conv2d_pointwise packs each image's input into contiguous pixel tiles first (AVX2
// builds: small planes where the weights outweigh the input; see pointwise_conv.cpp).
bool pointwise_packs(const Conv2dShape& shape);

// As conv2d (see conv2d.h) for a shape that pointwise_suitable accepts; `panels` is the weight
// as pack_row_panels lays out an [out_channels x in_channels] matrix.
void conv2d_pointwise(const Conv2dShape& shape, const float* input, const float* panels,
                      const float* bias, float* output, ThreadPool* pool,
                      const Epilogue& epilogue = {});

// The same for a strided 1x1 layer without padding (`strided`; `shape` is the dense layer of its
// output's size that conv2d runs on the sampled pixels): each thread samples the images it
// convolves into a buffer of its own just before their tiles, rather than the batch being
// sampled in one pass first. `input` is the strided layer's input.
void conv2d_pointwise_sampled(const Conv2dShape& strided, const Conv2dShape& shape,
                              const float* input, const float* panels, const float* bias,
                              float* output, ThreadPool* pool, const Epilogue& epilogue = {});
#endif

}  // namespace nnx::cpu
