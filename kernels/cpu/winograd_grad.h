// The weight gradient of a 3x3, stride-1 convolution by Winograd F(3x3, 2x2) (AVX-512 and AVX2
// builds): each 2x2 block of the output gradient and the 4x4 input patch under it give the block's
// share of the 3x3 kernel's gradient as A^T [(G dy G^T) . (B^T x B)] A, 16 products where the
// direct sums take 36, and the products of all blocks are 16 GEMMs over the batch's blocks:
// M[xi] (out x in) = U[xi] (out x blocks) * V[xi]^T. 2.25x fewer multiplies; float32 rounding
// differs from the direct sum by about 1e-6 relative.
#pragma once

#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define NNX_WINOGRAD_WEIGHT_GRAD 1
// Whether conv2d_winograd_weight_grad serves `shape` (and pays off for it): 3x3, stride 1,
// undilated, ungrouped, at least 16 input and output channels (a 3-channel image's layer stays
// an im2col GEMM), output planes of at least 4x4 (AVX-512: 4 rows of 8). NNX_WINOGRAD_GRAD=0 in
// the environment turns it off.
bool winograd_weight_grad_suitable(const Conv2dShape& shape);

// grad_weight ([out][in][3][3], overwritten) of convolution `shape` with `input` and the output
// gradient `grad_output` (both NCHW), on `pool`'s threads when given.
void conv2d_winograd_weight_grad(const Conv2dShape& shape, const float* input,
                                 const float* grad_output, float* grad_weight, ThreadPool* pool);
#endif

}  // namespace nnx::cpu
