// A GEMM for 1x1 convolutions on planes of few pixels (AVX-512 and AVX2 builds): the pixels are
// the rows of its tiles and the output channels the vector lanes, 7 pixels by 48 channels a tile
// (AVX2: 6 by 16), so no lane idles on 7x7 and 14x14 planes (the 32-pixel panels of conv2d fill
// them to 77% and 94%).
// The right-hand side is the weight transposed and packed in panels of 48 output channels (the
// last one 16 or 32 wide), each [input channel][panel width], so that a tile's weights stream
// from memory in order.
#pragma once

#include <cstdint>

namespace nnx::cpu {

inline constexpr int64_t kClPanel = 48;

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define NNX_CL_GEMM 1  // cl_gemm below is built (AVX-512: 7 x 48 tiles; AVX2: 6 x 16)
#endif

// The panels of B for a weight [m][k] (a 1x1 convolution's [out][in]): B[i][j] = weight[j][i],
// zero for j >= m; round_up(m, 16) * k floats at `out` (64-byte aligned for cl_gemm).
void pack_cl_panels(const float* weight, int64_t m, int64_t k, float* out);

// Pixels [0, pixels) x output channels [16 * g0, 16 * g1) of C = A * B + bias, clamped to
// [lo, hi] (NaN kept), where A[p][k] = a[p * a_ps + k * a_ks] (a channels-first image has a_ps 1
// and a_ks its plane size; a channels-last one the reverse) and B is `b` as pack_cl_panels lays
// it out for ld = round_up(m, 16) columns; bias has ld entries, 64-byte aligned. Stored
// channels-last, C[p][j] at c[p * ldc + j] (64-byte aligned, ldc a multiple of 16), or with
// `channels_first`, channels-first, C[p][j] at c[j * ldc + p] for j < columns (the rest dropped).
// With `tiled` (AVX2 builds only), A is laid out as cl_tile_rows deals the pixels out: tile i,
// pixels [p, p + mr), is [k][mr] at a + p * k (a_ps and a_ks unused); see cl_tile_rows.
#if defined(NNX_CL_GEMM)
void cl_gemm(int64_t pixels, int64_t k, const float* a, int64_t a_ps, int64_t a_ks, const float* b,
             int64_t ld, const float* bias, float lo, float hi, int64_t g0, int64_t g1, float* c,
             int64_t ldc, bool channels_first = false, int64_t columns = 0, bool tiled = false);

#if !defined(__AVX512F__)
// AVX2: copies rows [r0, r1) of a channels-first A ([k][pixels]; `src` holds those rows, row
// r0 first, `pixels` floats apart) into the tiled layout that cl_gemm(..., tiled = true) reads,
// each tile's pixels of a row contiguous: a small plane's rows (7x7: 196 bytes) put a tile's 6
// pixels of a row across two cache lines half the time, 49 floats from the next row's.
void cl_tile_rows(const float* src, int64_t pixels, int64_t k, int64_t r0, int64_t r1, float* a);
#endif
#endif

}  // namespace nnx::cpu
