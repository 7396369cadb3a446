// Convolution of few input channels (a network's first layer: 3 colour planes, 7x7 or 3x3
// kernels) without im2col (AVX-512 and AVX2 builds). The input is copied once with its padding
// written out and, for a stride s > 1, its columns split into s phases, so that the taps of 32
// consecutive output pixels of one row read 32 consecutive floats of one phase row. Each tile of
// 12 output channels x 32 pixels sums over the taps with the weights broadcast from 12-row
// panels (gemm.h) and is stored channels-first. im2col would copy every input value
// kernel_h x kernel_w times (49 for a 7x7 kernel) and the GEMM read the copies back. AVX2
// builds: tiles of 6 channels x 16 pixels, a panel in two halves.
#pragma once

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define NNX_STEM_CONV 1
// Whether conv2d_stem serves `shape` (and pays off for it).
bool stem_suitable(const Conv2dShape& shape);

// As conv2d (see conv2d.h) for a shape that stem_suitable accepts; zero padding. `panels` is
// the weight as pack_row_panels lays out an [out_channels x in_channels * kernel_h * kernel_w]
// matrix (ConvPrepared::panels), or null to pack `weight` here. With `in_plane_stride`, the
// input's channel planes (in_h x in_w each) lie that many floats apart instead of back to back
// (rows of a larger image, read in place); each image's then in_channels times that.
void conv2d_stem(const Conv2dShape& shape, const float* input, const float* weight,
                 const float* panels, const float* bias, float* output, ThreadPool* pool,
                 const Epilogue& epilogue = {}, int64_t in_plane_stride = 0);
#endif

}  // namespace nnx::cpu
