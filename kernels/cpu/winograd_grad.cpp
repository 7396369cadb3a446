// The Winograd weight gradient (see winograd_grad.h). A 2x2 block of the output gradient dy and
// the 4x4 patch x of the padded input under it add dy[a][b] * x[a + kh][b + kw] to the kernel's
// gradient at (kh, kw): a correlation F(3, 2) in each direction, which with
// B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]] (the forward F(2x2, 3x3)'s input
// transform), G = [[1,0], [1/2,1/2], [1/2,-1/2], [0,-1]] and A^T = [[1,1,1,0], [0,1,-1,0],
// [0,1,1,1]] is A^T [(G dy G^T) . (B^T x B)] A. Summed over the blocks, the 16 products per
// (output, input) channel pair are 16 GEMMs over the blocks, M[xi] = U[xi] V[xi]^T, and one
// transform of M gives the gradient.
//
// The transforms take a vector of blocks along a row of them at a time, straight from the
// NCHW tensors (two loads per patch row, split into even and odd columns), into U[xi]
// ([out][blocks]) and V[xi] ([in][blocks]), the GEMMs' operands as they are, a batch of whole
// block rows (about kBlockTiles blocks) at a time. Work split: each thread takes whole rows of
// the 4x4 points (two threads: rows 0-1 and 2-3), transforms only those rows and runs their
// GEMMs over every block of the batch, so no transformed data crosses between cores and no
// thread waits for another until the end; with more than 4 threads, the blocks are split as
// well and the sums added.
#include "kernels/cpu/winograd_grad.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/env_switch.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/int_math.h"
#include "nnx/thread_pool.h"

namespace nnx::cpu {

#if defined(NNX_WINOGRAD_WEIGHT_GRAD)
namespace {

constexpr int64_t kPoints = 16;  // 4x4 transformed points per block
constexpr int64_t W = vec::kWidth;
// Blocks per GEMM (its depth): whole rows of blocks, about this many.
constexpr int64_t kBlockTiles = 64;

bool grad_enabled() {
  static const bool on = env_switch("NNX_WINOGRAD_GRAD");
  return on;
}

struct Tiling {
  int64_t rows, cols;  // 2x2 blocks of an image
  int64_t block_rows;  // of the batch: batch * rows
  int64_t rows_per_batch, batches;
  int64_t ld;  // floats from one channel's row of a point's matrix to the next
};

Tiling tiling_of(const Conv2dShape& s) {
  Tiling t;
  t.rows = ceil_div(s.out_h, 2);
  t.cols = ceil_div(s.out_w, 2);
  t.block_rows = s.batch * t.rows;
  t.rows_per_batch = std::clamp<int64_t>(kBlockTiles / t.cols, 1, t.block_rows);
  t.batches = ceil_div(t.block_rows, t.rows_per_batch);
  // Whole vectors are stored, the last one of a batch up to W - 1 floats past its blocks.
  t.ld = ceil_div(t.rows_per_batch * t.cols + W, 16) * 16;
  return t;
}

// Row y of W blocks' 4x4 patches from column x on: d[c] lane i = plane[y][x + 2i + c], zero
// outside the plane.
inline void patch_row(const float* plane, int64_t h, int64_t w, int64_t y, int64_t x,
                      vec::V (&d)[4]) {
  if (y < 0 || y >= h) {
    for (vec::V& v : d) v = vec::zero();
    return;
  }
  const float* row = plane + y * w;
  if (x >= 0 && x + 2 + 2 * W <= w) {  // inside the row: no masks
    vec::deinterleave(vec::loadu(row + x), vec::loadu(row + x + W), d[0], d[1]);
    vec::deinterleave(vec::loadu(row + x + 2), vec::loadu(row + x + 2 + W), d[2], d[3]);
    return;
  }
  for (int64_t c = 0; c < 4; c += 2) {
    const int64_t at = x + c;
    vec::deinterleave(vec::load_range(row + at, at, 0, w),
                      vec::load_range(row + at + W, at + W, 0, w), d[c], d[c + 1]);
  }
}

// Point row R of V = B^T d B for W blocks whose patches start at row y, column x of `plane`:
// out[j] = V[R][j]. (B^T's row R reads patch rows 0 and 2, 1 and 2, 1 and 2, 1 and 3.)
template <int R>
inline void input_points(const float* plane, const Conv2dShape& s, int64_t y, int64_t x,
                         vec::V (&out)[4]) {
  constexpr int kA = R == 0 ? 0 : 1, kB = R == 3 ? 3 : 2;
  vec::V da[4], db[4], e[4];
  patch_row(plane, s.in_h, s.in_w, y + kA, x, da);
  patch_row(plane, s.in_h, s.in_w, y + kB, x, db);
  for (int c = 0; c < 4; ++c)
    e[c] = R == 0   ? vec::sub(da[c], db[c])
           : R == 1 ? vec::add(da[c], db[c])
           : R == 2 ? vec::sub(db[c], da[c])
                    : vec::sub(da[c], db[c]);
  out[0] = vec::sub(e[0], e[2]);
  out[1] = vec::add(e[1], e[2]);
  out[2] = vec::sub(e[2], e[1]);
  out[3] = vec::sub(e[1], e[3]);
}

// Point row R of U = G g G^T for W 2x2 blocks of `plane` (the output gradient) from row y,
// column x on (zero past its edges): out[j] = U[R][j].
template <int R>
inline void grad_points(const float* plane, const Conv2dShape& s, int64_t y, int64_t x,
                        vec::V (&out)[4]) {
  vec::V g[2][2];
  for (int a = 0; a < 2; ++a) {
    if ((R == 0 && a == 1) || (R == 3 && a == 0) || y + a >= s.out_h) {
      g[a][0] = g[a][1] = vec::zero();
      continue;
    }
    const float* row = plane + (y + a) * s.out_w;
    if (x + 2 * W <= s.out_w)
      vec::deinterleave(vec::loadu(row + x), vec::loadu(row + x + W), g[a][0], g[a][1]);
    else
      vec::deinterleave(vec::load_range(row + x, x, 0, s.out_w),
                        vec::load_range(row + x + W, x + W, 0, s.out_w), g[a][0], g[a][1]);
  }
  const vec::V half = vec::splat(0.5f), none = vec::zero();
  vec::V e[2];
  for (int b = 0; b < 2; ++b)
    e[b] = R == 0   ? g[0][b]
           : R == 1 ? vec::mul(vec::add(g[0][b], g[1][b]), half)
           : R == 2 ? vec::mul(vec::sub(g[0][b], g[1][b]), half)
                    : vec::sub(none, g[1][b]);
  out[0] = e[0];
  out[1] = vec::mul(vec::add(e[0], e[1]), half);
  out[2] = vec::mul(vec::sub(e[0], e[1]), half);
  out[3] = vec::sub(none, e[1]);
}

// Point row R of U and V for one batch of block rows [row0, row1) into u ([j][out][ld] with
// u_point floats per j) and v ([j][in][ld]). Whole vectors in order: lanes past a row's blocks
// are overwritten by the next row's, or lie past the batch's blocks.
template <int R>
void transform_row(const Conv2dShape& s, const Tiling& t, const float* input,
                   const float* grad_output, int64_t row0, int64_t row1, float* u, int64_t u_point,
                   float* v, int64_t v_point) {
  const int64_t in = s.in_channels, outs = s.out_channels;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t n = row / t.rows, ty = row % t.rows, at = (row - row0) * t.cols;
    vec::V out[4];
    for (int64_t c = 0; c < in; ++c) {
      const float* plane = input + (n * in + c) * in_plane;
      float* dst = v + c * t.ld + at;
      for (int64_t tx = 0; tx < t.cols; tx += W) {
        input_points<R>(plane, s, 2 * ty - s.pad_top, 2 * tx - s.pad_left, out);
        for (int j = 0; j < 4; ++j) vec::storeu(dst + j * v_point + tx, out[j]);
      }
    }
    for (int64_t o = 0; o < outs; ++o) {
      const float* plane = grad_output + (n * outs + o) * out_plane;
      float* dst = u + o * t.ld + at;
      for (int64_t tx = 0; tx < t.cols; tx += W) {
        grad_points<R>(plane, s, 2 * ty, 2 * tx, out);
        for (int j = 0; j < 4; ++j) vec::storeu(dst + j * u_point + tx, out[j]);
      }
    }
  }
}

}  // namespace

bool winograd_weight_grad_suitable(const Conv2dShape& s) {
  // From 4x4 output planes up (16 products for 4 pixels against the direct sums' 6.25 taps a
  // pixel that read inside the input there); on 2x2 ones (one block an image, 16 products
  // against 4 taps) the indirect convolution's direct sums are faster. The transforms fill a
  // vector from one row of blocks: on AVX2 a 4x4 plane's 2 blocks fill a quarter of its lanes
  // and still won (0.83x the indirect convolution's time); AVX-512 builds (not measured) take
  // planes whose rows fill at least a quarter of theirs, 8 pixels wide.
#if defined(__AVX512F__)
  constexpr int64_t kMinWidth = 8;
#else
  constexpr int64_t kMinWidth = 4;
#endif
  return grad_enabled() && s.kernel_h == 3 && s.kernel_w == 3 && s.stride_h == 1 &&
         s.stride_w == 1 && s.dilation_h == 1 && s.dilation_w == 1 && s.groups == 1 &&
         s.in_channels >= 16 && s.out_channels >= 16 && s.out_h >= 4 && s.out_w >= kMinWidth;
}

void conv2d_winograd_weight_grad(const Conv2dShape& s, const float* input, const float* grad_output,
                                 float* grad_weight, ThreadPool* pool) {
  const Tiling t = tiling_of(s);
  const int64_t in = s.in_channels, outs = s.out_channels;
  const int64_t threads = pool ? pool->size() : 1;
  const int64_t splits = std::min(ceil_div(threads, 4), t.batches);
  const int64_t point_floats = outs * in;  // M[xi], [out][in]
  thread_local AlignedBuffer m_buffer;
  float* m = m_buffer.get(splits * kPoints * point_floats);
  // Task 4 * split + r: point row r over the split's batches of blocks. A thread's rows one at
  // a time per batch: a row's U and V (a quarter of all 16 points') stay in L2 for its GEMMs,
  // where all 16 points' went out to L3 and back (their transforms took a third of the time).
  parallel_for(pool, splits * 4, 1, [&](int64_t k0, int64_t k1) {
    thread_local AlignedBuffer u_buffer, v_buffer;
    // A cache line between one point's matrix and the next, so that a transform's 4 stores do
    // not all fall into one L1 set.
    const int64_t v_point = in * t.ld + 16, u_point = outs * t.ld + 16;
    float* v = v_buffer.get(4 * v_point);
    float* u = u_buffer.get(4 * u_point);
    for (int64_t split = k0 / 4; split * 4 < k1; ++split) {
      const int r0 = int(std::max(k0, split * 4) - split * 4);
      const int r1 = int(std::min(k1, split * 4 + 4) - split * 4);
      const int64_t first = t.batches * split / splits, last = t.batches * (split + 1) / splits;
      for (int64_t batch = first; batch < last; ++batch) {
        const int64_t row0 = batch * t.rows_per_batch;
        const int64_t row1 = std::min(t.block_rows, row0 + t.rows_per_batch);
        const int64_t blocks = (row1 - row0) * t.cols;
        for (int r = r0; r < r1; ++r) {
          switch (r) {
            case 0:
              transform_row<0>(s, t, input, grad_output, row0, row1, u, u_point, v, v_point);
              break;
            case 1:
              transform_row<1>(s, t, input, grad_output, row0, row1, u, u_point, v, v_point);
              break;
            case 2:
              transform_row<2>(s, t, input, grad_output, row0, row1, u, u_point, v, v_point);
              break;
            default:
              transform_row<3>(s, t, input, grad_output, row0, row1, u, u_point, v, v_point);
          }
          float* sums = m + (split * kPoints + r * 4) * point_floats;
          for (int j = 0; j < 4; ++j)
            gemm(outs, in, blocks, u + j * u_point, t.ld, v + j * v_point, t.ld, true,
                 sums + j * point_floats, in, batch > first);
        }
      }
    }
  });
  // grad_weight = A^T M A, the splits' M summed first; W input channels at a time, their 9
  // values each stored as one run.
  parallel_for(pool, outs, 1, [&](int64_t o0, int64_t o1) {
    alignas(64) float values[9][W];
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t c0 = 0; c0 < in; c0 += W) {
        vec::V x[kPoints];
        for (int64_t p = 0; p < kPoints; ++p) {
          const int64_t at = p * point_floats + o * in + c0;
          x[p] = vec::load_range(m + at, c0, 0, in);
          for (int64_t split = 1; split < splits; ++split)
            x[p] =
                vec::add(x[p], vec::load_range(m + split * kPoints * point_floats + at, c0, 0, in));
        }
        vec::V q[3][4];  // A^T's rows over the point rows
        for (int j = 0; j < 4; ++j) {
          q[0][j] = vec::add(vec::add(x[j], x[4 + j]), x[8 + j]);
          q[1][j] = vec::sub(x[4 + j], x[8 + j]);
          q[2][j] = vec::add(vec::add(x[4 + j], x[8 + j]), x[12 + j]);
        }
        for (int kh = 0; kh < 3; ++kh) {
          vec::store(values[kh * 3 + 0], vec::add(vec::add(q[kh][0], q[kh][1]), q[kh][2]));
          vec::store(values[kh * 3 + 1], vec::sub(q[kh][1], q[kh][2]));
          vec::store(values[kh * 3 + 2], vec::add(vec::add(q[kh][1], q[kh][2]), q[kh][3]));
        }
        float* dst = grad_weight + (o * in + c0) * 9;
        for (int64_t i = 0; i < std::min<int64_t>(W, in - c0); ++i)
          for (int k = 0; k < 9; ++k) dst[i * 9 + k] = values[k][i];
      }
  });
}
#endif

}  // namespace nnx::cpu
