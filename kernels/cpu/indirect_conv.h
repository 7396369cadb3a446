// Convolution without im2col for small output planes (AVX-512 and AVX2 builds): the input is copied
// once channels-last with its padding written out, and each tile of 7 output pixels reads its
// receptive fields in place through one pointer per pixel (an indirect convolution), the
// output channels in the vector lanes, 48 at a time, so neither im2col columns nor a packed copy
// of them is made. The pixels of a tile may come from different rows and images: a 2x2 plane in
// a batch fills the tile as well as a 56x56 one.
#pragma once

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define NNX_INDIRECT_CONV 1  // AVX-512: 7-pixel x 48-channel tiles; AVX2: 6 x 16 micro-tiles
// Whether conv2d_indirect serves `shape` (and pays off for it); `prepared`: with the weights
// packed beforehand (ConvPrepared), which decides for every plane size alike.
bool indirect_suitable(const Conv2dShape& shape, bool prepared = false);

// The weights as this path's panels: their size in floats, and the packing (on `pool`'s
// threads when given), for a caller that keeps them (ConvPrepared).
int64_t indirect_weights_floats(const Conv2dShape& shape);
void indirect_pack_weights(const Conv2dShape& shape, const float* weight, float* out,
                           ThreadPool* pool = nullptr);

// As conv2d (see conv2d.h) for a shape that indirect_suitable accepts; zero padding. `packed`:
// indirect_pack_weights's result for `weight`, or null to pack them here.
void conv2d_indirect(const Conv2dShape& shape, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool,
                     const Epilogue& epilogue = {}, const float* packed = nullptr);

// The input gradient of a stride-1 convolution `shape` whose transposed convolution (output
// gradient in, kernels flipped) this path serves, the flipped weights packed from `weight` in
// place: returns false, doing nothing, for any other.
bool conv2d_indirect_input_grad(const Conv2dShape& shape, const float* weight,
                                const float* grad_output, float* grad_input, ThreadPool* pool);

// Whether conv2d_indirect_weight_grad serves `shape` (and pays off for it).
bool indirect_weight_grad_suitable(const Conv2dShape& shape);

// The weight gradient of such a convolution, [out][in][kernel_h][kernel_w] (overwritten): per
// tile, up to 7 input channels of one tap against 48 or 64 output channels, summed over every
// output pixel of the batch as it reads the channels-last input in place (no im2col columns).
void conv2d_indirect_weight_grad(const Conv2dShape& shape, const float* input,
                                 const float* grad_output, float* grad_weight, ThreadPool* pool);
#endif

}  // namespace nnx::cpu
