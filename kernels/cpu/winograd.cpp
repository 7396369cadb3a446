// Winograd F(2x2, 3x3) convolution (see winograd.h). Each 2x2 block of outputs comes from a 4x4
// input tile d and the 3x3 kernel g as Y = A^T [(G g G^T) . (B^T d B)] A, so the 36 multiplies
// of a direct 2x2 block become 16, and the 16 products of all tiles are 16 GEMMs over channels:
// M[xi] (out x tiles) = U[xi] (out x in) * V[xi] (in x tiles).
//
// U and V are laid out as the GEMM's register kernel reads them (gemm.h, panel_gemm), so nothing
// is packed per call: U[xi] as panels of 12 output channels ([in][12] each), V[xi] as panels of
// `width` tiles ([in][width] each); M[xi] is row-major [out][ldm]. The transforms take up to 16
// tiles at a time, one vector lane each: of one tile row, or on AVX-512 builds, where a row has
// at most 8 tiles, whole tile rows stacked (a 14x14 plane's F(4x4) rows of 4 fill 16 lanes).
//
// Work split: with at least a block of tiles per thread, blocks of tiles, each a task that
// transforms its inputs, runs the 16 products and transforms back while all of it is in cache;
// with fewer (small planes at batch 1), all tiles at once, the output channels split over the
// threads, each of which transforms the whole input for itself, so that every thread has work on
// every layer and no transformed data crosses between cores. (On ResNet-50's 28x28 layers, two
// blocks, an earlier split of all tiles over channels made two threads 1.1-1.3x faster than one;
// a block each, about 1.5x: hence blocks wherever each thread has one.)
#include "kernels/cpu/winograd.h"

#include "kernels/cpu/avx512.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <unistd.h>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/env_switch.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/int_math.h"
#include "nnx/thread_pool.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define NNX_WINOGRAD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define NNX_WINOGRAD_AVX2 1
#endif
#if defined(NNX_WINOGRAD_AVX512) || defined(NNX_WINOGRAD_AVX2)
#define NNX_WINOGRAD_F4 1  // F(4x4, 3x3) for prepared weights
#endif

namespace nnx::cpu {

namespace {

constexpr int64_t kPoints = 16;  // 4x4 transformed points per tile
constexpr int64_t kLanes = 16;   // tiles per transform step

struct Tiling {
  int64_t rows, cols, per_image;  // tiles of 2x2 outputs
};

// V's layout for a block of tiles: panels of `width` tiles.
struct Panels {
  int64_t width, count;
  int64_t columns() const { return width * count; }
};

Panels panels_for(int64_t tiles) {
  const int64_t width = tiles > 16 ? 32 : 16;
  return {width, ceil_div(tiles, width)};
}

// Up to kLanes consecutive tiles: of one tile row (rows == 1) from image n, tile row ty, first
// tile column tx; or, where `stack` is asked and a row has at most kLanes / 2 tiles, `rows` whole
// tile rows ty, ty + 1, ... of image n (tx == 0), lane i on tile row ty + i / tiling.cols, so
// that small planes (14x14 has 4 tiles of 4x4 a row) fill the vectors. `at` is the first tile's
// index within the block. In V (one channel's row of panels), its first `head` tiles go to
// offset `v_at` and the rest to the start of the next panel, `v_next`.
struct Run {
  int64_t n, ty, tx, count, at;
  int64_t v_at, head, v_next;
  int64_t rows;
};

void find_runs(const Tiling& tiling, int64_t t0, int64_t t1, const Panels& panels,
               int64_t in_channels, std::vector<Run>& runs, bool stack = false) {
  runs.clear();
  const int64_t panel_stride = in_channels * panels.width;
  for (int64_t t = t0; t < t1;) {
    const int64_t n = t / tiling.per_image, within = t % tiling.per_image;
    const int64_t ty = within / tiling.cols, tx = within % tiling.cols;
    int64_t rows = 1, count = std::min({kLanes, tiling.cols - tx, t1 - t});
    if (stack && tx == 0 && 2 * tiling.cols <= kLanes) {
      const int64_t whole =
          std::min({kLanes / tiling.cols, tiling.rows - ty, (t1 - t) / tiling.cols});
      if (whole >= 2) rows = whole, count = whole * tiling.cols;
    }
    const int64_t at = t - t0, panel = at / panels.width, lane = at % panels.width;
    runs.push_back({n, ty, tx, count, at, panel * panel_stride + lane,
                    std::min(count, panels.width - lane), (panel + 1) * panel_stride, rows});
    t += count;
  }
}

int64_t out_panels(const Conv2dShape& s) {
  return ceil_div(s.out_channels, kPanelRows);
}

// Floats from one transformed point's matrix of V (of M) to the next's: a cache line more than
// its size, so that the 16 points of a tile, written (read) together, do not all fall into
// one L1 set, as they would with a size that is a multiple of 4 KiB.
int64_t v_point_floats(const Conv2dShape& s, const Panels& panels) {
  return panels.count * s.in_channels * panels.width + 16;
}
int64_t m_point_floats(int64_t rows, const Panels& panels) {
  return rows * panels.columns() + 16;
}

// A block's M, for all output channels or one thread's share of them: output channel oc's row of
// point xi at data + xi * point + (oc - first) * ldm.
struct MBlock {
  float* data;
  int64_t first, point;
  // Room for `rows` output channels of `points` points.
  static MBlock in(AlignedBuffer& buffer, int64_t points, int64_t first, int64_t rows,
                   const Panels& panels) {
    const int64_t point = m_point_floats(rows, panels);
    return {buffer.get(points * point), first, point};
  }
};

int64_t u_point_floats(const Conv2dShape& s) {
  return out_panels(s) * kPanelRows * s.in_channels;
}

#ifdef NNX_WINOGRAD_AVX512
// The weight transforms' frame: for each panel of 12 outputs within [oc0, oc1) and each input
// channel, the 3x3 kernels as rows transposed in registers (g[k]: tap k, lane j: the panel's
// output j; zeros outside [oc0, oc1)), handed to points(g, store), store(i, v) writing point i's
// run of the panel's row (a float at a time, the points far apart, took a third of a 64-channel
// 16x16 layer's time in training, where the weights are transformed every call).
template <typename Points>
void transform_kernels(const Conv2dShape& s, const float* weight, int64_t oc0, int64_t oc1,
                       float* u, const Points& points) {
  const int64_t panel = s.in_channels * kPanelRows, point = u_point_floats(s);
  for (int64_t q = oc0 / kPanelRows; q * kPanelRows < oc1; ++q) {
    const int64_t first = q * kPanelRows;
    const int64_t lo = std::max(oc0, first) - first, hi = std::min(oc1, first + kPanelRows) - first;
    const __mmask16 live = __mmask16(lanes_below(hi) & ~lanes_below(lo));
    float* base = u + q * panel;
    for (int64_t ic = 0; ic < s.in_channels; ++ic) {
      __m512 g[16];
      for (int64_t j = 0; j < 16; ++j)
        g[j] = j >= lo && j < hi
                   ? _mm512_maskz_loadu_ps(0x1ff, weight + ((first + j) * s.in_channels + ic) * 9)
                   : _mm512_setzero_ps();
      transpose16(g);
      points(g, [&](int64_t i, __m512 v) {
        _mm512_mask_storeu_ps(base + i * point + ic * kPanelRows, live, v);
      });
    }
  }
}
#endif

// U[xi] = (G g G^T)[xi] for output channels [oc0, oc1), G = [[1,0,0], [1/2,1/2,1/2],
// [1/2,-1/2,1/2], [0,0,1]], into panels of 12 output channels.
void transform_weights(const Conv2dShape& s, const float* weight, int64_t oc0, int64_t oc1,
                       float* u) {
#ifdef NNX_WINOGRAD_AVX512
  // A panel's outputs in the lanes: the same sums in the same order as below.
  const __m512 half = _mm512_set1_ps(0.5f);
  transform_kernels(s, weight, oc0, oc1, u, [&](const __m512(&g)[16], auto store) {
    __m512 gg[4][3];
    for (int c = 0; c < 3; ++c) {
      gg[0][c] = g[c];
      gg[1][c] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(g[c], g[3 + c]), g[6 + c]));
      gg[2][c] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(g[c], g[3 + c]), g[6 + c]));
      gg[3][c] = g[6 + c];
    }
    for (int r = 0; r < 4; ++r) {
      const __m512 v[4] = {
          gg[r][0], _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(gg[r][0], gg[r][1]), gg[r][2])),
          _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(gg[r][0], gg[r][1]), gg[r][2])),
          gg[r][2]};
      for (int c = 0; c < 4; ++c) store(r * 4 + c, v[c]);
    }
  });
#else
  const int64_t panel = s.in_channels * kPanelRows, point = u_point_floats(s);
  for (int64_t oc = oc0; oc < oc1; ++oc) {
    float* base = u + (oc / kPanelRows) * panel + oc % kPanelRows;
    for (int64_t ic = 0; ic < s.in_channels; ++ic) {
      const float* g = weight + (oc * s.in_channels + ic) * 9;
      float gg[4][3];  // G g: the rows of g combined
      for (int c = 0; c < 3; ++c) {
        gg[0][c] = g[c];
        gg[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
        gg[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
        gg[3][c] = g[6 + c];
      }
      for (int r = 0; r < 4; ++r) {
        const float v[4] = {gg[r][0], 0.5f * (gg[r][0] + gg[r][1] + gg[r][2]),
                            0.5f * (gg[r][0] - gg[r][1] + gg[r][2]), gg[r][2]};
        for (int c = 0; c < 4; ++c) base[(r * 4 + c) * point + ic * kPanelRows] = v[c];
      }
    }
  }
#endif
}

// B^T d B with B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]], on any lane type.
template <typename T, typename Sub, typename Add>
inline void input_points(const T (&d)[4][4], T (&out)[kPoints], Sub sub, Add add) {
  T e[4][4];  // B^T d
  for (int c = 0; c < 4; ++c) {
    e[0][c] = sub(d[0][c], d[2][c]);
    e[1][c] = add(d[1][c], d[2][c]);
    e[2][c] = sub(d[2][c], d[1][c]);
    e[3][c] = sub(d[1][c], d[3][c]);
  }
  for (int r = 0; r < 4; ++r) {
    out[r * 4 + 0] = sub(e[r][0], e[r][2]);
    out[r * 4 + 1] = add(e[r][1], e[r][2]);
    out[r * 4 + 2] = sub(e[r][2], e[r][1]);
    out[r * 4 + 3] = sub(e[r][1], e[r][3]);
  }
}

#ifdef NNX_WINOGRAD_AVX512

inline __mmask16 first_lanes(int64_t n) {
  return range_mask(0, 0, n);
}

alignas(64) constexpr int32_t kEvenLanes[16] = {0,  2,  4,  6,  8,  10, 12, 14,
                                                16, 18, 20, 22, 24, 26, 28, 30};
alignas(64) constexpr int32_t kOddLanes[16] = {1,  3,  5,  7,  9,  11, 13, 15,
                                               17, 19, 21, 23, 25, 27, 29, 31};

// Lane i of a stacked run (Run::rows > 1, `cols` tiles a row, tiles `step` columns apart):
// tile row i / cols, column step * (i % cols) + c of its rows' first 32 floats (F(4x4): c < 4;
// c = 4, 5 from the 32 at the fifth), and the lanes of each tile row.
struct StackedLanes {
  __m512i index[4];
  __mmask16 row_lanes[kLanes];
  StackedLanes(int64_t cols, int step) {
    alignas(64) int32_t at[4][16];
    for (int c = 0; c < 4; ++c)
      for (int64_t i = 0; i < kLanes; ++i) at[c][i] = int32_t(step * (i % cols) + c);
    for (int c = 0; c < 4; ++c) index[c] = _mm512_load_si512(at[c]);
    for (int64_t k = 0; k < kLanes; ++k) row_lanes[k] = range_mask(0, k * cols, (k + 1) * cols);
  }
};
#elif defined(NNX_WINOGRAD_AVX2)
// AVX2 builds transform 8 tiles of a run at a time, one per lane.
constexpr int64_t kLanes8 = 8;

// Transformed point `at` (the offset of its matrix in V) of the run's tiles [i0, i0 + n), lane
// i - i0 holding tile i: into the run's panel, or the next one's start; a chunk across the two
// a lane at a time.
inline void store_tiles8(float* row_base, const Run& run, int64_t i0, int64_t n, int64_t at,
                         __m256 values) {
  if (i0 + n <= run.head || i0 >= run.head) {
    float* dst = row_base + at + (i0 < run.head ? run.v_at + i0 : run.v_next + i0 - run.head);
    store_lanes8(dst, values, n);
    return;
  }
  alignas(32) float lane[kLanes8];
  _mm256_store_ps(lane, values);
  for (int64_t i = i0; i < i0 + n; ++i)
    row_base[at + (i < run.head ? run.v_at + i : run.v_next + i - run.head)] = lane[i - i0];
}
#endif

#if defined(NNX_WINOGRAD_AVX512) || defined(NNX_WINOGRAD_AVX2)
// F(2x2)'s transforms on a vector of tiles (16 or 8), written once for both widths. Input
// (B^T d B): row r's columns d0..d3 give t[r]; then out[4i + c] from column c of t.
inline void input_row2(vec::V d0, vec::V d1, vec::V d2, vec::V d3, vec::V (&t)[4]) {
  t[0] = vec::sub(d0, d2);
  t[1] = vec::add(d1, d2);
  t[2] = vec::sub(d2, d1);
  t[3] = vec::sub(d1, d3);
}
inline void input_columns2(const vec::V (&t)[4][4], vec::V (&out)[16]) {
  for (int c = 0; c < 4; ++c) {
    out[0 * 4 + c] = vec::sub(t[0][c], t[2][c]);
    out[1 * 4 + c] = vec::add(t[1][c], t[2][c]);
    out[2 * 4 + c] = vec::sub(t[2][c], t[1][c]);
    out[3 * 4 + c] = vec::sub(t[1][c], t[3][c]);
  }
}
// Output (A^T m A): output row r (0 or 1) of the 16 products x, plus bias.
inline void output_row2(const vec::V (&x)[16], int r, vec::V bias, vec::V& y0, vec::V& y1) {
  vec::V q[4];
  for (int c = 0; c < 4; ++c)
    q[c] = r == 0 ? vec::add(vec::add(x[c], x[4 + c]), x[8 + c])
                  : vec::sub(vec::sub(x[4 + c], x[8 + c]), x[12 + c]);
  y0 = vec::add(vec::add(vec::add(q[0], q[1]), q[2]), bias);
  y1 = vec::add(vec::sub(vec::sub(q[1], q[2]), q[3]), bias);
}
#endif

// V for every input channel of a block's runs.
void transform_input(const Conv2dShape& s, const Tiling& tiling, const std::vector<Run>& runs,
                     const float* input, const Panels& panels, float* v) {
  const int64_t plane = s.in_h * s.in_w;
  const int64_t point_stride = v_point_floats(s, panels);
#ifdef NNX_WINOGRAD_AVX512
  const __m512i even = _mm512_load_si512(kEvenLanes), odd = _mm512_load_si512(kOddLanes);
  const StackedLanes stacked(std::min(tiling.cols, kLanes), 2);
#endif
  for (int64_t ic = 0; ic < s.in_channels; ++ic) {
    float* row_base = v + ic * panels.width;
    for (const Run& run : runs) {
      const float* p = input + (run.n * s.in_channels + ic) * plane;
      const int64_t y0 = run.ty * 2 - s.pad_top, x0 = run.tx * 2 - s.pad_left;
#ifdef NNX_WINOGRAD_AVX512
      // Row r of the 16 tiles' patches: columns x0 + 2i + c for lane i; loaded as 32 (and 32
      // from x0 + 2) contiguous floats, zero outside the input, and split into even and odd.
      const __mmask16 m0 = range_mask(x0, 0, s.in_w), m1 = range_mask(x0 + 16, 0, s.in_w);
      const __mmask16 m2 = range_mask(x0 + 2, 0, s.in_w), m3 = range_mask(x0 + 18, 0, s.in_w);
      // d B row by row as each row is loaded (few registers live), then B^T (d B).
      __m512 t[4][4];
      for (int r = 0; r < 4; ++r) {
        __m512 d0, d1, d2, d3;
        if (run.rows == 1) {
          const int64_t y = y0 + r;
          if (y < 0 || y >= s.in_h) {
            for (int c = 0; c < 4; ++c) t[r][c] = _mm512_setzero_ps();
            continue;
          }
          const float* row = p + y * s.in_w + x0;
          const __m512 a = _mm512_maskz_loadu_ps(m0, row);
          const __m512 b = _mm512_maskz_loadu_ps(m1, row + 16);
          const __m512 e = _mm512_maskz_loadu_ps(m2, row + 2);
          const __m512 f = _mm512_maskz_loadu_ps(m3, row + 18);
          d0 = _mm512_permutex2var_ps(a, even, b);
          d1 = _mm512_permutex2var_ps(a, odd, b);
          d2 = _mm512_permutex2var_ps(e, even, f);
          d3 = _mm512_permutex2var_ps(e, odd, f);
        } else {
          // Tile row ty + k's lanes from its own input row (at most 8 tiles: 18 columns).
          d0 = d1 = d2 = d3 = _mm512_setzero_ps();
          for (int64_t k = 0; k < run.rows; ++k) {
            const int64_t y = y0 + 2 * k + r;
            if (y < 0 || y >= s.in_h) continue;
            const float* row = p + y * s.in_w + x0;
            const __m512 a = _mm512_maskz_loadu_ps(m0, row);
            const __m512 b = _mm512_maskz_loadu_ps(m1, row + 16);
            const __mmask16 lanes = stacked.row_lanes[k];
            d0 = _mm512_mask_blend_ps(lanes, d0, _mm512_permutex2var_ps(a, stacked.index[0], b));
            d1 = _mm512_mask_blend_ps(lanes, d1, _mm512_permutex2var_ps(a, stacked.index[1], b));
            d2 = _mm512_mask_blend_ps(lanes, d2, _mm512_permutex2var_ps(a, stacked.index[2], b));
            d3 = _mm512_mask_blend_ps(lanes, d3, _mm512_permutex2var_ps(a, stacked.index[3], b));
          }
        }
        input_row2(d0, d1, d2, d3, t[r]);
      }
      __m512 out[kPoints];
      input_columns2(t, out);
      // Into the run's panel; the tiles past the panel's end into the next one.
      const __mmask16 head = first_lanes(run.head);
      float* dst = row_base + run.v_at;
      for (int64_t xi = 0; xi < kPoints; ++xi)
        _mm512_mask_storeu_ps(dst + xi * point_stride, head, out[xi]);
      if (run.head < run.count) {
        const __mmask16 rest = __mmask16(first_lanes(run.count) & ~head);
        const __mmask16 tail = first_lanes(run.count - run.head);
        float* next = row_base + run.v_next;
        for (int64_t xi = 0; xi < kPoints; ++xi)
          _mm512_mask_storeu_ps(next + xi * point_stride, tail,
                                _mm512_maskz_compress_ps(rest, out[xi]));
      }
#elif defined(NNX_WINOGRAD_AVX2)
      for (int64_t i0 = 0; i0 < run.count; i0 += kLanes8) {
        const int64_t n = std::min(kLanes8, run.count - i0), x = x0 + 2 * i0;
        // Row r of the 8 tiles' patches: columns x + 2i + c for lane i, from 16 floats at x
        // (and at x + 2), zero outside the input, split into even and odd.
        const __m256i m0 = range_mask8(x, 0, s.in_w), m1 = range_mask8(x + 8, 0, s.in_w);
        const __m256i m2 = range_mask8(x + 2, 0, s.in_w), m3 = range_mask8(x + 10, 0, s.in_w);
        __m256 t[4][4];
        for (int r = 0; r < 4; ++r) {
          const int64_t y = y0 + r;
          if (y < 0 || y >= s.in_h) {
            for (int c = 0; c < 4; ++c) t[r][c] = _mm256_setzero_ps();
            continue;
          }
          const float* row = p + y * s.in_w + x;
          const __m256 a = _mm256_maskload_ps(row, m0), b = _mm256_maskload_ps(row + 8, m1);
          const __m256 e = _mm256_maskload_ps(row + 2, m2), f = _mm256_maskload_ps(row + 10, m3);
          const __m256 d0 = even_of(a, b), d1 = odd_of(a, b), d2 = even_of(e, f), d3 = odd_of(e, f);
          input_row2(d0, d1, d2, d3, t[r]);
        }
        __m256 out[kPoints];
        input_columns2(t, out);
        for (int64_t xi = 0; xi < kPoints; ++xi)
          store_tiles8(row_base, run, i0, n, xi * point_stride, out[xi]);
      }
#else
      for (int64_t i = 0; i < run.count; ++i) {
        float d[4][4];
        for (int r = 0; r < 4; ++r)
          for (int c = 0; c < 4; ++c) {
            const int64_t y = y0 + r, x = x0 + 2 * i + c;
            d[r][c] = y >= 0 && y < s.in_h && x >= 0 && x < s.in_w ? p[y * s.in_w + x] : 0.f;
          }
        float out[kPoints];
        input_points(
            d, out, [](float x, float y) { return x - y; }, [](float x, float y) { return x + y; });
        float* dst = row_base + (i < run.head ? run.v_at + i : run.v_next + i - run.head);
        for (int64_t xi = 0; xi < kPoints; ++xi) dst[xi * point_stride] = out[xi];
      }
#endif
    }
  }
}

// M[xi] rows for output-channel panels [p0, p1): U[xi] panels times V[xi] panels.
void multiply(const Conv2dShape& s, int64_t points, const float* u, const float* v,
              const Panels& panels, int64_t tiles, int64_t p0, int64_t p1, const MBlock& m) {
  const int64_t u_point = u_point_floats(s), v_point = v_point_floats(s, panels);
  const int64_t ldm = panels.columns();
  for (int64_t xi = 0; xi < points; ++xi)
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t rows = std::min(kPanelRows, s.out_channels - p * kPanelRows);
      const float* a = u + xi * u_point + p * kPanelRows * s.in_channels;
      float* c = m.data + xi * m.point + (p * kPanelRows - m.first) * ldm;
      for (int64_t j = 0; j < panels.count; ++j)
        panel_gemm(rows, std::min(panels.width, tiles - j * panels.width), s.in_channels, a,
                   v + xi * v_point + j * s.in_channels * panels.width, panels.width,
                   c + j * panels.width, ldm, false);
    }
}

// Y = A^T m A with A^T = [[1,1,1,0], [0,1,-1,-1]], plus the bias and the epilogue, for output
// channels [oc0, oc1) of a block's runs; outputs past the bottom and right edges are dropped.
// The output rows of one channel whose activation (other than a clamp, or after a residual)
// waits until all of the channel's tiles in this call are stored: applied straight after a
// row's masked stores, every load of it waited for them to reach the cache. Grown once per
// thread.
std::vector<std::pair<float*, int64_t>>& pending_rows() {
  static thread_local std::vector<std::pair<float*, int64_t>> rows;
  return rows;
}

void transform_output(const Conv2dShape& s, const std::vector<Run>& runs, const MBlock& m,
                      const Panels& panels, int64_t oc0, int64_t oc1, const float* bias,
                      const Epilogue& epilogue, float* output) {
  const int64_t plane = s.out_h * s.out_w, ldm = panels.columns();
  const int64_t point_stride = m.point;
#ifdef NNX_WINOGRAD_AVX512
  // ReLU and clamps (ReLU6, Hardtanh) are applied before the stores; other epilogues after.
  // (Not with a residual, which goes before the activation.)
  const bool relu = epilogue.active && epilogue.kind == Activation::relu;
  const bool clamp_in_registers =
      epilogue.residual == nullptr &&
      (relu || (epilogue.active && epilogue.kind == Activation::hardtanh));
  const __m512 lo_v = _mm512_set1_ps(relu ? 0.f : epilogue.args.lo);
  const __m512 hi_v = _mm512_set1_ps(relu ? INFINITY : epilogue.args.hi);
  alignas(64) static const int32_t low_lanes[16] = {0, 16, 1, 17, 2, 18, 3, 19,
                                                    4, 20, 5, 21, 6, 22, 7, 23};
  alignas(64) static const int32_t high_lanes[16] = {8,  24, 9,  25, 10, 26, 11, 27,
                                                     12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i low_index = _mm512_load_si512(low_lanes);
  const __m512i high_index = _mm512_load_si512(high_lanes);
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
#elif defined(NNX_WINOGRAD_AVX2)
  // As above: ReLU and clamps in registers where no residual comes first, other epilogues after.
  const bool relu = epilogue.active && epilogue.kind == Activation::relu;
  const bool clamp_in_registers =
      epilogue.residual == nullptr &&
      (relu || (epilogue.active && epilogue.kind == Activation::hardtanh));
  const __m256 lo_v = _mm256_set1_ps(relu ? 0.f : epilogue.args.lo);
  const __m256 hi_v = _mm256_set1_ps(relu ? INFINITY : epilogue.args.hi);
#endif
  std::vector<std::pair<float*, int64_t>>& pending = pending_rows();
  for (int64_t oc = oc0; oc < oc1; ++oc) {
    const float b = bias ? bias[oc] : 0.f;
    const float* in = m.data + (oc - m.first) * ldm;
    pending.clear();
    for (const Run& run : runs) {
      const int64_t y0 = run.ty * 2, x0 = run.tx * 2;
      float* o = output + (run.n * s.out_channels + oc) * plane;
      const int64_t columns = std::min(2 * run.count, s.out_w - x0);
#ifdef NNX_WINOGRAD_AVX512
      const __mmask16 lanes = first_lanes(run.count);
      __m512 x[kPoints];
      for (int64_t i = 0; i < kPoints; ++i)
        x[i] = _mm512_maskz_loadu_ps(lanes, in + i * point_stride + run.at);
      const __m512 bv = _mm512_set1_ps(b);
      for (int r = 0; r < 2 && (run.rows > 1 || y0 + r < s.out_h); ++r) {
        __m512 y_0, y_1;
        output_row2(x, r, bv, y_0, y_1);
        if (clamp_in_registers) {  // max(lo, y) then min(hi, y) keep NaN as clamp_nan does
          y_0 = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, y_0));
          y_1 = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, y_1));
        }
        // Row r of the 16 tiles' blocks, tile by tile: 32 outputs.
        const __m512 row[2] = {_mm512_permutex2var_ps(y_0, low_index, y_1),
                               _mm512_permutex2var_ps(y_0, high_index, y_1)};
        if (run.rows == 1) {
          float* dst = o + (y0 + r) * s.out_w + x0;
          _mm512_mask_storeu_ps(dst, first_lanes(columns), row[0]);
          _mm512_mask_storeu_ps(dst + 16, first_lanes(columns - 16), row[1]);
          if (!clamp_in_registers) pending.emplace_back(dst, columns);
          continue;
        }
        // A stacked run: tile row k's blocks are the 2 * cols outputs from 2 * cols * k on.
        const int64_t cols = run.count / run.rows, width = std::min(2 * cols, s.out_w);
        for (int64_t k = 0; k < run.rows && y0 + 2 * k + r < s.out_h; ++k) {
          float* dst = o + (y0 + 2 * k + r) * s.out_w;
          const int64_t start = 2 * cols * k, a = start / 16, off = start % 16;
          const __m512 part =
              off == 0 ? row[a]
                       : _mm512_permutex2var_ps(row[a],
                                                _mm512_add_epi32(iota, _mm512_set1_epi32(int(off))),
                                                row[std::min<int64_t>(a + 1, 1)]);
          _mm512_mask_storeu_ps(dst, first_lanes(width), part);
          if (!clamp_in_registers) pending.emplace_back(dst, width);
        }
      }
#elif defined(NNX_WINOGRAD_AVX2)
      for (int64_t i0 = 0; i0 < run.count; i0 += kLanes8) {
        const int64_t n = std::min(kLanes8, run.count - i0), xo = x0 + 2 * i0;
        const int64_t width = std::min(2 * n, s.out_w - xo);
        const __m256i lanes = lanes8(n);
        __m256 x[kPoints];
        for (int64_t i = 0; i < kPoints; ++i)
          x[i] = _mm256_maskload_ps(in + i * point_stride + run.at + i0, lanes);
        const __m256 bv = _mm256_set1_ps(b);
        for (int r = 0; r < 2 && y0 + r < s.out_h; ++r) {
          __m256 y_0, y_1;
          output_row2(x, r, bv, y_0, y_1);
          if (clamp_in_registers) {  // max(lo, y) then min(hi, y) keep NaN as clamp_nan does
            y_0 = _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, y_0));
            y_1 = _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, y_1));
          }
          // Row r of the 8 tiles' blocks, tile by tile: 16 outputs.
          const __m256 low = _mm256_unpacklo_ps(y_0, y_1), high = _mm256_unpackhi_ps(y_0, y_1);
          float* dst = o + (y0 + r) * s.out_w + xo;
          store_lanes8(dst, _mm256_permute2f128_ps(low, high, 0x20), width);
          store_lanes8(dst + 8, _mm256_permute2f128_ps(low, high, 0x31), width - 8);
          if (!clamp_in_registers) pending.emplace_back(dst, width);
        }
      }
      (void)columns;
#else
      for (int64_t i = 0; i < run.count; ++i) {
        float x[4][4];
        for (int64_t k = 0; k < kPoints; ++k) x[k / 4][k % 4] = in[k * point_stride + run.at + i];
        float q[2][4];  // A^T m
        for (int c = 0; c < 4; ++c) {
          q[0][c] = x[0][c] + x[1][c] + x[2][c];
          q[1][c] = x[1][c] - x[2][c] - x[3][c];
        }
        const int64_t xo = x0 + 2 * i;
        for (int r = 0; r < 2 && y0 + r < s.out_h; ++r) {
          float* dst = o + (y0 + r) * s.out_w + xo;
          dst[0] = q[r][0] + q[r][1] + q[r][2] + b;
          if (xo + 1 < s.out_w) dst[1] = q[r][1] - q[r][2] - q[r][3] + b;
          apply_epilogue(epilogue, dst, xo + 1 < s.out_w ? 2 : 1);
        }
      }
      (void)columns;
#endif
    }
    for (const auto& [dst, n] : pending) apply_epilogue(epilogue, dst, n);
  }
}

#if defined(NNX_WINOGRAD_AVX512) || defined(NNX_WINOGRAD_AVX2)

// F(4x4, 3x3), for prepared weights on AVX-512 and AVX2 builds: each 4x4 block of outputs from a
// 6x6 input tile, Y = A^T [(G g G^T) . (B^T d B)] A with the points 0, 1, -1, 2, -2 and infinity:
// 36 products for the 144 multiplies of a direct block (4x; F(2x2, 3x3) makes it 2.25x), the
// transforms' cost per output about the same. Float32 rounding differs from the direct sum by
// a few 1e-6 relative, within PyTorch parity (1e-4).

// U[xi] = (G g G^T)[xi] for output channels [oc0, oc1), G = [[1/4, 0, 0], [-1/6, -1/6, -1/6],
// [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6], [1/24, -1/12, 1/6], [0, 0, 1]], in float32.
constexpr float kG4[6][3] = {{1.f / 4, 0, 0},
                             {-1.f / 6, -1.f / 6, -1.f / 6},
                             {-1.f / 6, 1.f / 6, -1.f / 6},
                             {1.f / 24, 1.f / 12, 1.f / 6},
                             {1.f / 24, -1.f / 12, 1.f / 6},
                             {0, 0, 1}};

// The build's vector of tiles for the F(4x4) row transforms below: 16 lanes on AVX-512, 8 on AVX2.
using Lanes = vec::V;
using vec::add;
using vec::fmadd;
using vec::fnmadd;
using vec::splat;
using vec::sub;

// (d B)[j] for one row d of six, B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0],
// [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]].
inline void input_row4(const Lanes (&d)[6], Lanes (&t)[6]) {
  const Lanes four = splat(4.f), five = splat(5.f);
  const Lanes a = fnmadd(four, d[2], d[4]);  // d4 - 4 d2
  const Lanes b = fnmadd(four, d[1], d[3]);  // d3 - 4 d1
  const Lanes c = sub(d[4], d[2]);
  const Lanes e = add(sub(d[3], d[1]), sub(d[3], d[1]));
  t[0] = fmadd(four, d[0], fnmadd(five, d[2], d[4]));
  t[1] = add(a, b);
  t[2] = sub(a, b);
  t[3] = add(c, e);
  t[4] = sub(c, e);
  t[5] = fmadd(four, d[1], fnmadd(five, d[3], d[5]));
}

// (x A) for one row x of six, A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0],
// [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]].
inline void output_row4(const Lanes (&x)[6], Lanes (&y)[4]) {
  const Lanes s1 = add(x[1], x[2]), d1 = sub(x[1], x[2]);
  const Lanes s2 = add(x[3], x[4]), d2 = sub(x[3], x[4]);
  y[0] = add(add(x[0], s1), s2);
  y[1] = fmadd(splat(2.f), d2, d1);
  y[2] = fmadd(splat(4.f), s2, s1);
  y[3] = add(fmadd(splat(8.f), d2, d1), x[5]);
}

#ifdef NNX_WINOGRAD_AVX512
void transform_weights4(const Conv2dShape& s, const float* weight, int64_t oc0, int64_t oc1,
                        float* u) {
  // A panel's outputs in the vector lanes (transform_kernels).
  transform_kernels(s, weight, oc0, oc1, u, [](const __m512(&g)[16], auto store) {
    constexpr auto& G = kG4;
    __m512 gg[6][3];  // G g
    for (int r = 0; r < 6; ++r)
      for (int c = 0; c < 3; ++c)
        gg[r][c] =
            _mm512_fmadd_ps(_mm512_set1_ps(G[r][0]), g[c],
                            _mm512_fmadd_ps(_mm512_set1_ps(G[r][1]), g[3 + c],
                                            _mm512_mul_ps(_mm512_set1_ps(G[r][2]), g[6 + c])));
    for (int r = 0; r < 6; ++r)
      for (int c = 0; c < 6; ++c)
        store(r * 6 + c,
              _mm512_fmadd_ps(gg[r][0], _mm512_set1_ps(G[c][0]),
                              _mm512_fmadd_ps(gg[r][1], _mm512_set1_ps(G[c][1]),
                                              _mm512_mul_ps(gg[r][2], _mm512_set1_ps(G[c][2])))));
  });
}

// V for every input channel of a block's runs (as transform_input, 6x6 tiles 4 apart).
void transform_input4(const Conv2dShape& s, const Tiling& tiling, const std::vector<Run>& runs,
                      const float* input, const Panels& panels, float* v) {
  const int64_t plane = s.in_h * s.in_w;
  const int64_t point_stride = v_point_floats(s, panels);
  // Lane i of column c: input column x0 + 4i + c, from the 64 floats at x0 (c < 4) or at x0 + 4
  // (c = 4, 5: column c - 4 of the next tile): lanes 0-7 from the first 32, 8-15 the last 32.
  alignas(64) static const int32_t columns[4][16] = {
      {0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28},
      {1, 5, 9, 13, 17, 21, 25, 29, 1, 5, 9, 13, 17, 21, 25, 29},
      {2, 6, 10, 14, 18, 22, 26, 30, 2, 6, 10, 14, 18, 22, 26, 30},
      {3, 7, 11, 15, 19, 23, 27, 31, 3, 7, 11, 15, 19, 23, 27, 31}};
  __m512i index[4];
  for (int c = 0; c < 4; ++c) index[c] = _mm512_load_si512(columns[c]);
  const StackedLanes stacked(std::min(tiling.cols, kLanes), 4);
  for (int64_t ic = 0; ic < s.in_channels; ++ic) {
    float* row_base = v + ic * panels.width;
    for (const Run& run : runs) {
      const float* p = input + (run.n * s.in_channels + ic) * plane;
      const int64_t y0 = run.ty * 4 - s.pad_top, x0 = run.tx * 4 - s.pad_left;
      __mmask16 near[4], far[4];
      for (int j = 0; j < 4; ++j) {
        near[j] = range_mask(x0 + 16 * j, 0, s.in_w);
        far[j] = range_mask(x0 + 4 + 16 * j, 0, s.in_w);
      }
      __m512 t[6][6];  // d B, row by row
      for (int r = 0; r < 6; ++r) {
        __m512 d[6];
        if (run.rows == 1) {
          const int64_t y = y0 + r;
          if (y < 0 || y >= s.in_h) {
            for (int c = 0; c < 6; ++c) t[r][c] = _mm512_setzero_ps();
            continue;
          }
          const float* row = p + y * s.in_w + x0;
          __m512 a[4], b[4];
          for (int j = 0; j < 4; ++j) {
            a[j] = _mm512_maskz_loadu_ps(near[j], row + 16 * j);
            b[j] = _mm512_maskz_loadu_ps(far[j], row + 4 + 16 * j);
          }
          for (int c = 0; c < 6; ++c) {
            const __m512* src = c < 4 ? a : b;
            const __m512i at = index[c < 4 ? c : c - 4];
            d[c] =
                _mm512_mask_blend_ps(__mmask16(0xFF00), _mm512_permutex2var_ps(src[0], at, src[1]),
                                     _mm512_permutex2var_ps(src[2], at, src[3]));
          }
        } else {
          // Tile row ty + k's lanes from its own input row (at most 8 tiles: 34 columns).
          for (int c = 0; c < 6; ++c) d[c] = _mm512_setzero_ps();
          for (int64_t k = 0; k < run.rows; ++k) {
            const int64_t y = y0 + 4 * k + r;
            if (y < 0 || y >= s.in_h) continue;
            const float* row = p + y * s.in_w + x0;
            const __m512 a0 = _mm512_maskz_loadu_ps(near[0], row);
            const __m512 a1 = _mm512_maskz_loadu_ps(near[1], row + 16);
            const __m512 b0 = _mm512_maskz_loadu_ps(far[0], row + 4);
            const __m512 b1 = _mm512_maskz_loadu_ps(far[1], row + 20);
            const __mmask16 lanes = stacked.row_lanes[k];
            for (int c = 0; c < 6; ++c)
              d[c] = _mm512_mask_blend_ps(
                  lanes, d[c],
                  c < 4 ? _mm512_permutex2var_ps(a0, stacked.index[c], a1)
                        : _mm512_permutex2var_ps(b0, stacked.index[c - 4], b1));
          }
        }
        input_row4(d, t[r]);
      }
      // B^T (d B), column by column, into the run's panel (tiles past its end into the next).
      const __mmask16 head = first_lanes(run.head);
      const bool split = run.head < run.count;
      const __mmask16 rest = __mmask16(first_lanes(run.count) & ~head);
      const __mmask16 tail = first_lanes(run.count - run.head);
      float* dst = row_base + run.v_at;
      float* next = row_base + run.v_next;
      for (int c = 0; c < 6; ++c) {
        const __m512 column[6] = {t[0][c], t[1][c], t[2][c], t[3][c], t[4][c], t[5][c]};
        __m512 out[6];
        input_row4(column, out);
        for (int r = 0; r < 6; ++r) {
          const int64_t xi = r * 6 + c;
          _mm512_mask_storeu_ps(dst + xi * point_stride, head, out[r]);
          if (split)
            _mm512_mask_storeu_ps(next + xi * point_stride, tail,
                                  _mm512_maskz_compress_ps(rest, out[r]));
        }
      }
    }
  }
}

// Y = A^T m A plus the bias and the epilogue, for output channels [oc0, oc1) of a block's runs
// (as transform_output, 4x4 blocks).
void transform_output4(const Conv2dShape& s, const std::vector<Run>& runs, const MBlock& m,
                       const Panels& panels, int64_t oc0, int64_t oc1, const float* bias,
                       const Epilogue& epilogue, float* output) {
  const int64_t plane = s.out_h * s.out_w, ldm = panels.columns();
  const int64_t point_stride = m.point;
  const ClampEpilogue clamp = clamp_of(epilogue);
  const __m512 lo_v = _mm512_set1_ps(clamp.lo), hi_v = _mm512_set1_ps(clamp.hi);
  // Four vectors of 16 tiles' values y0..y3 to the 64 outputs of their row, in order: pairs
  // interleaved (y0 with y1, y2 with y3), then the pairs of pairs.
  alignas(64) static const int32_t pairs[2][16] = {
      {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23},
      {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31}};
  alignas(64) static const int32_t quads[2][16] = {
      {0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23},
      {8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31}};
  const __m512i pair_lo = _mm512_load_si512(pairs[0]), pair_hi = _mm512_load_si512(pairs[1]);
  const __m512i quad_lo = _mm512_load_si512(quads[0]), quad_hi = _mm512_load_si512(quads[1]);
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  std::vector<std::pair<float*, int64_t>>& pending = pending_rows();
  for (int64_t oc = oc0; oc < oc1; ++oc) {
    const __m512 bv = _mm512_set1_ps(bias ? bias[oc] : 0.f);
    const float* in = m.data + (oc - m.first) * ldm;
    pending.clear();
    for (const Run& run : runs) {
      const int64_t y0 = run.ty * 4, x0 = run.tx * 4;
      float* o = output + (run.n * s.out_channels + oc) * plane;
      const int64_t count = std::min(4 * run.count, s.out_w - x0);
      const __mmask16 lanes = first_lanes(run.count);
      __m512 q[4][6];  // A^T m, column by column
      for (int c = 0; c < 6; ++c) {
        __m512 x[6];
        for (int r = 0; r < 6; ++r)
          x[r] = _mm512_maskz_loadu_ps(lanes, in + (r * 6 + c) * point_stride + run.at);
        __m512 y[4];
        output_row4(x, y);
        for (int k = 0; k < 4; ++k) q[k][c] = y[k];
      }
      for (int k = 0; k < 4 && (run.rows > 1 || y0 + k < s.out_h); ++k) {
        __m512 y[4];
        output_row4(q[k], y);
        for (int j = 0; j < 4; ++j) {
          y[j] = _mm512_add_ps(y[j], bv);
          if (clamp.exact) y[j] = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, y[j]));
        }
        const __m512 p01[2] = {_mm512_permutex2var_ps(y[0], pair_lo, y[1]),
                               _mm512_permutex2var_ps(y[0], pair_hi, y[1])};
        const __m512 p23[2] = {_mm512_permutex2var_ps(y[2], pair_lo, y[3]),
                               _mm512_permutex2var_ps(y[2], pair_hi, y[3])};
        // Row k of the 16 tiles' blocks, tile by tile: 64 outputs.
        const __m512 row[4] = {_mm512_permutex2var_ps(p01[0], quad_lo, p23[0]),
                               _mm512_permutex2var_ps(p01[0], quad_hi, p23[0]),
                               _mm512_permutex2var_ps(p01[1], quad_lo, p23[1]),
                               _mm512_permutex2var_ps(p01[1], quad_hi, p23[1])};
        if (run.rows == 1) {
          float* dst = o + (y0 + k) * s.out_w + x0;
          for (int h = 0; h < 4; ++h)
            _mm512_mask_storeu_ps(dst + 16 * h, first_lanes(count - 16 * h), row[h]);
          if (!clamp.exact) pending.emplace_back(dst, count);
          continue;
        }
        // A stacked run: tile row r's blocks are the 4 * cols outputs from 4 * cols * r on.
        const int64_t cols = run.count / run.rows, width = std::min(4 * cols, s.out_w);
        for (int64_t r = 0; r < run.rows && y0 + 4 * r + k < s.out_h; ++r) {
          float* dst = o + (y0 + 4 * r + k) * s.out_w;
          for (int64_t h = 0; h < 2 && 16 * h < width; ++h) {
            const int64_t start = 4 * cols * r + 16 * h, a = start / 16, off = start % 16;
            const __m512 part =
                off == 0 ? row[a]
                         : _mm512_permutex2var_ps(
                               row[a], _mm512_add_epi32(iota, _mm512_set1_epi32(int(off))),
                               row[std::min<int64_t>(a + 1, 3)]);
            _mm512_mask_storeu_ps(dst + 16 * h, first_lanes(width - 16 * h), part);
          }
          if (!clamp.exact) pending.emplace_back(dst, width);
        }
      }
    }
    for (const auto& [dst, n] : pending) apply_epilogue(epilogue, dst, n);
  }
}

#else  // AVX2: 8 tiles of a run at a time, one per lane (no stacked tile rows)

// As the AVX-512 transform, one output channel at a time (the weights are prepared once).
void transform_weights4(const Conv2dShape& s, const float* weight, int64_t oc0, int64_t oc1,
                        float* u) {
  constexpr auto& G = kG4;
  const int64_t panel = s.in_channels * kPanelRows, point = u_point_floats(s);
  for (int64_t oc = oc0; oc < oc1; ++oc) {
    float* base = u + (oc / kPanelRows) * panel + oc % kPanelRows;
    for (int64_t ic = 0; ic < s.in_channels; ++ic) {
      const float* g = weight + (oc * s.in_channels + ic) * 9;
      float gg[6][3];  // G g
      for (int r = 0; r < 6; ++r)
        for (int c = 0; c < 3; ++c)
          gg[r][c] = std::fma(G[r][0], g[c], std::fma(G[r][1], g[3 + c], G[r][2] * g[6 + c]));
      for (int r = 0; r < 6; ++r)
        for (int c = 0; c < 6; ++c)
          base[(r * 6 + c) * point + ic * kPanelRows] =
              std::fma(gg[r][0], G[c][0], std::fma(gg[r][1], G[c][1], gg[r][2] * G[c][2]));
    }
  }
}

// Lanes i < 4 with lo <= start + i < hi, as a 128-bit maskload mask.
inline __m128i range_mask4(int64_t start, int64_t lo, int64_t hi) {
  const int32_t first = int32_t(std::clamp<int64_t>(lo - start, 0, 4));
  const int32_t end = int32_t(std::clamp<int64_t>(hi - start, 0, 4));
  const __m128i lane = _mm_setr_epi32(0, 1, 2, 3);
  return _mm_andnot_si128(_mm_cmpgt_epi32(_mm_set1_epi32(first), lane),
                          _mm_cmpgt_epi32(_mm_set1_epi32(end), lane));
}

// One row of 8 tiles' patches: a[k] = [g_k | g_k+4], b[k] = [g'_k | g'_k+4], g_i the row's
// columns 0-3 of tile i's patch and g'_i its columns 4-7 (g_i+1 where the tiles are neighbours).
// 4x4 transposes within the 128-bit halves give d[c], lane i column c of tile i's patch.
inline void patch_columns4(const __m256 (&a)[4], const __m256 (&b)[4], __m256 (&d)[6]) {
  const __m256 lo01 = _mm256_unpacklo_ps(a[0], a[1]), hi01 = _mm256_unpackhi_ps(a[0], a[1]);
  const __m256 lo23 = _mm256_unpacklo_ps(a[2], a[3]), hi23 = _mm256_unpackhi_ps(a[2], a[3]);
  const __m256 far01 = _mm256_unpacklo_ps(b[0], b[1]), far23 = _mm256_unpacklo_ps(b[2], b[3]);
  d[0] = _mm256_shuffle_ps(lo01, lo23, 0x44);
  d[1] = _mm256_shuffle_ps(lo01, lo23, 0xEE);
  d[2] = _mm256_shuffle_ps(hi01, hi23, 0x44);
  d[3] = _mm256_shuffle_ps(hi01, hi23, 0xEE);
  d[4] = _mm256_shuffle_ps(far01, far23, 0x44);
  d[5] = _mm256_shuffle_ps(far01, far23, 0xEE);
}

// B^T (d B) of 8 tiles (t: d B row by row), column by column, into V (store_tiles8).
inline void store_input4(const __m256 (&t)[6][6], float* row_base, const Run& run, int64_t i0,
                         int64_t n, int64_t point_stride) {
  for (int c = 0; c < 6; ++c) {
    const __m256 column[6] = {t[0][c], t[1][c], t[2][c], t[3][c], t[4][c], t[5][c]};
    __m256 out[6];
    input_row4(column, out);
    for (int r = 0; r < 6; ++r)
      store_tiles8(row_base, run, i0, n, (r * 6 + c) * point_stride, out[r]);
  }
}

// Stacked runs (whole tile rows of a plane at most 8 / cols tiles wide, cols dividing 8; see
// find_runs): each 8-lane step holds 8 / cols tile rows, lane i tile i % cols of tile row i / cols,
// so that 13x13 and 14x14 planes (4 tiles a row) fill the vectors instead of half of them. Each
// lane's 4-float groups (columns 0-3 and 4-7 of its 6x6 patch, row by row) are loaded on their
// own, then transposed as in the unstacked form.
void stacked_input4(const Conv2dShape& s, int64_t cols, const Run& run, const float* p, int64_t y0,
                    int64_t x0, float* row_base, int64_t point_stride) {
  const int shift = std::countr_zero(uint64_t(cols));  // cols is 1, 2 or 4: no divisions
  for (int64_t i0 = 0; i0 < run.count; i0 += kLanes8) {
    const int64_t n = std::min(kLanes8, run.count - i0);
    int64_t top[kLanes8], at[kLanes8];  // each lane's patch: first input row, its first float
    __m128i near[kLanes8], far[kLanes8];
    for (int64_t l = 0; l < kLanes8; ++l) {
      const int64_t tile = i0 + std::min(l, n - 1);
      const int64_t k = tile >> shift, x = x0 + 4 * (tile & (cols - 1));
      top[l] = l < n ? y0 + 4 * k : s.in_h;  // lanes past the run read nothing
      at[l] = top[l] * s.in_w + x;
      near[l] = range_mask4(x, 0, s.in_w);
      far[l] = range_mask4(x + 4, 0, s.in_w);
    }
    __m256 t[6][6];  // d B, row by row
    for (int r = 0; r < 6; ++r) {
      __m128 g[kLanes8], h[kLanes8];
      for (int64_t l = 0; l < kLanes8; ++l) {
        const int64_t y = top[l] + r;
        if (y < 0 || y >= s.in_h) {
          g[l] = h[l] = _mm_setzero_ps();
          continue;
        }
        const float* src = p + at[l] + r * s.in_w;
        g[l] = _mm_maskload_ps(src, near[l]);
        h[l] = _mm_maskload_ps(src + 4, far[l]);
      }
      __m256 a[4], b[4], d[6];
      for (int k = 0; k < 4; ++k) {
        a[k] = _mm256_insertf128_ps(_mm256_castps128_ps256(g[k]), g[k + 4], 1);
        b[k] = _mm256_insertf128_ps(_mm256_castps128_ps256(h[k]), h[k + 4], 1);
      }
      patch_columns4(a, b, d);
      input_row4(d, t[r]);
    }
    store_input4(t, row_base, run, i0, n, point_stride);
  }
}

// V for every input channel of a block's runs (6x6 tiles 4 apart). Row r of 8 tiles'
// patches: the 4-float groups g_j at x + 4j (j = 0..8, zero outside the input), paired as
// [g_k | g_k+4] and transposed, so that lane i gets column c of tile i (g_i, c < 4; g_i+1 for
// c = 4, 5).
void transform_input4(const Conv2dShape& s, const Tiling& tiling, const std::vector<Run>& runs,
                      const float* input, const Panels& panels, float* v) {
  const int64_t plane = s.in_h * s.in_w;
  const int64_t point_stride = v_point_floats(s, panels);
  for (int64_t ic = 0; ic < s.in_channels; ++ic) {
    float* row_base = v + ic * panels.width;
    for (const Run& run : runs) {
      const float* p = input + (run.n * s.in_channels + ic) * plane;
      const int64_t y0 = run.ty * 4 - s.pad_top, x0 = run.tx * 4 - s.pad_left;
      if (run.rows > 1) {
        stacked_input4(s, tiling.cols, run, p, y0, x0, row_base, point_stride);
        continue;
      }
      for (int64_t i0 = 0; i0 < run.count; i0 += kLanes8) {
        const int64_t n = std::min(kLanes8, run.count - i0), x = x0 + 4 * i0;
        __m128i mask[9];
        for (int j = 0; j < 9; ++j) mask[j] = range_mask4(x + 4 * j, 0, s.in_w);
        __m256 t[6][6];  // d B, row by row
        for (int r = 0; r < 6; ++r) {
          const int64_t y = y0 + r;
          if (y < 0 || y >= s.in_h) {
            for (int c = 0; c < 6; ++c) t[r][c] = _mm256_setzero_ps();
            continue;
          }
          const float* row = p + y * s.in_w + x;
          __m128 g[9];
          for (int j = 0; j < 9; ++j) g[j] = _mm_maskload_ps(row + 4 * j, mask[j]);
          __m256 a[5], d[6];
          for (int k = 0; k < 5; ++k)
            a[k] = _mm256_insertf128_ps(_mm256_castps128_ps256(g[k]), g[k + 4], 1);
          patch_columns4({a[0], a[1], a[2], a[3]}, {a[1], a[2], a[3], a[4]}, d);
          input_row4(d, t[r]);
        }
        store_input4(t, row_base, run, i0, n, point_stride);
      }
    }
  }
}

// The tiles of a stacked run per tile row (whole rows).
inline int64_t tiling_cols(const Run& run) {
  return run.count / run.rows;
}

// A^T m for 8 tiles (lanes) from `at` in M, column by column: q[k][c].
inline void output_products4(const float* in, int64_t point_stride, int64_t at, __m256i lanes,
                             __m256 (&q)[4][6]) {
  for (int c = 0; c < 6; ++c) {
    __m256 x[6];
    for (int r = 0; r < 6; ++r)
      x[r] = _mm256_maskload_ps(in + (r * 6 + c) * point_stride + at, lanes);
    __m256 y[4];
    output_row4(x, y);
    for (int k = 0; k < 4; ++k) q[k][c] = y[k];
  }
}

// Output row k of 8 tiles ((A^T m) A, plus the bias, clamped where the epilogue is a clamp),
// in 4-float groups: tile[i] holds tile i's 4 outputs in its low half and tile i + 4's in its
// high half (4x4 transposes within the 128-bit halves); pairs[h], with the halves exchanged,
// tiles 2h and 2h + 1, 8 outputs in order.
struct OutputRow4 {
  __m256 tile[4], pairs[4];
};
inline OutputRow4 output_row_of4(const __m256 (&q)[6], __m256 bv, bool clamp, __m256 lo_v,
                                 __m256 hi_v) {
  __m256 y[4];
  output_row4(q, y);
  for (int j = 0; j < 4; ++j) {
    y[j] = _mm256_add_ps(y[j], bv);
    if (clamp) y[j] = _mm256_min_ps(hi_v, _mm256_max_ps(lo_v, y[j]));
  }
  // Lane i of y[j] is output j of tile i's row.
  const __m256 u0 = _mm256_unpacklo_ps(y[0], y[1]), u1 = _mm256_unpackhi_ps(y[0], y[1]);
  const __m256 u2 = _mm256_unpacklo_ps(y[2], y[3]), u3 = _mm256_unpackhi_ps(y[2], y[3]);
  OutputRow4 row;
  row.tile[0] = _mm256_shuffle_ps(u0, u2, 0x44);
  row.tile[1] = _mm256_shuffle_ps(u0, u2, 0xEE);
  row.tile[2] = _mm256_shuffle_ps(u1, u3, 0x44);
  row.tile[3] = _mm256_shuffle_ps(u1, u3, 0xEE);
  row.pairs[0] = _mm256_permute2f128_ps(row.tile[0], row.tile[1], 0x20);
  row.pairs[1] = _mm256_permute2f128_ps(row.tile[2], row.tile[3], 0x20);
  row.pairs[2] = _mm256_permute2f128_ps(row.tile[0], row.tile[1], 0x31);
  row.pairs[3] = _mm256_permute2f128_ps(row.tile[2], row.tile[3], 0x31);
  return row;
}

// transform_output4 for a stacked run (see stacked_input4): lane i's 4 outputs of a row go to its
// own tile row and column.
void stacked_output4(const Conv2dShape& s, int64_t cols, const Run& run, const float* in,
                     int64_t point_stride, __m256 bv, const ClampEpilogue& clamp, __m256 lo_v,
                     __m256 hi_v, float* o, int64_t y0,
                     std::vector<std::pair<float*, int64_t>>& pending) {
  const int shift = std::countr_zero(uint64_t(cols));  // cols is 1, 2 or 4: no divisions
  for (int64_t i0 = 0; i0 < run.count; i0 += kLanes8) {
    const int64_t n = std::min(kLanes8, run.count - i0);
    const __m256i lanes = lanes8(n);
    // Each lane's (pair's, with 2 or 4 tiles a row: n is then even) first output row, column
    // and the outputs it stores of a row: 4 (8) or fewer at the plane's right edge.
    const int64_t per = cols == 1 ? 1 : 2, stores = n / per;
    int64_t first_row[kLanes8], column[kLanes8], width[kLanes8];
    for (int64_t l = 0; l < stores; ++l) {
      const int64_t tile = i0 + per * l;
      first_row[l] = y0 + 4 * (tile >> shift);
      column[l] = 4 * (tile & (cols - 1));
      width[l] = std::min<int64_t>(4 * per, s.out_w - column[l]);
    }
    __m256 q[4][6];
    output_products4(in, point_stride, run.at + i0, lanes, q);
    for (int k = 0; k < 4; ++k) {
      const OutputRow4 out = output_row_of4(q[k], bv, clamp.exact, lo_v, hi_v);
      for (int64_t l = 0; l < stores; ++l) {
        const int64_t row = first_row[l] + k;
        if (row >= s.out_h) continue;
        float* dst = o + row * s.out_w + column[l];
        if (per == 2)
          store_lanes8(dst, out.pairs[l], width[l]);
        else
          store_lanes4(dst,
                       l < 4 ? _mm256_castps256_ps128(out.tile[l])
                             : _mm256_extractf128_ps(out.tile[l - 4], 1),
                       width[l]);
        if (!clamp.exact) pending.emplace_back(dst, width[l]);
      }
    }
  }
}

// Y = A^T m A plus the bias and the epilogue, for output channels [oc0, oc1) of a block's runs
// (8 tiles at a time: their 4 values of an output row transposed back into 32 outputs).
void transform_output4(const Conv2dShape& s, const std::vector<Run>& runs, const MBlock& m,
                       const Panels& panels, int64_t oc0, int64_t oc1, const float* bias,
                       const Epilogue& epilogue, float* output) {
  const int64_t plane = s.out_h * s.out_w, ldm = panels.columns();
  const int64_t point_stride = m.point;
  const ClampEpilogue clamp = clamp_of(epilogue);
  const __m256 lo_v = _mm256_set1_ps(clamp.lo), hi_v = _mm256_set1_ps(clamp.hi);
  std::vector<std::pair<float*, int64_t>>& pending = pending_rows();
  for (int64_t oc = oc0; oc < oc1; ++oc) {
    const __m256 bv = _mm256_set1_ps(bias ? bias[oc] : 0.f);
    const float* in = m.data + (oc - m.first) * ldm;
    pending.clear();
    for (const Run& run : runs) {
      const int64_t y0 = run.ty * 4, x0 = run.tx * 4;
      float* o = output + (run.n * s.out_channels + oc) * plane;
      if (run.rows > 1) {
        stacked_output4(s, tiling_cols(run), run, in, point_stride, bv, clamp, lo_v, hi_v, o, y0,
                        pending);
        continue;
      }
      for (int64_t i0 = 0; i0 < run.count; i0 += kLanes8) {
        const int64_t n = std::min(kLanes8, run.count - i0), xo = x0 + 4 * i0;
        const int64_t width = std::min(4 * n, s.out_w - xo);
        const __m256i lanes = lanes8(n);
        __m256 q[4][6];
        output_products4(in, point_stride, run.at + i0, lanes, q);
        for (int k = 0; k < 4 && y0 + k < s.out_h; ++k) {
          // The run's tiles side by side: the pairs are its row's 32 outputs in order.
          const OutputRow4 out = output_row_of4(q[k], bv, clamp.exact, lo_v, hi_v);
          float* dst = o + (y0 + k) * s.out_w + xo;
          for (int h = 0; h < 4; ++h) store_lanes8(dst + 8 * h, out.pairs[h], width - 8 * h);
          if (!clamp.exact) pending.emplace_back(dst, width);
        }
      }
    }
    for (const auto& [dst, n] : pending) apply_epilogue(epilogue, dst, n);
  }
}
#endif
#endif
}  // namespace

int64_t winograd_weights_floats(const Conv2dShape& s, int tile) {
  return (tile + 2) * (tile + 2) * u_point_floats(s);
}

void winograd_transform_weights(const Conv2dShape& s, const float* weight, float* out, int tile,
                                ThreadPool* pool) {
  parallel_for(pool, out_panels(s), 1, [&](int64_t p0, int64_t p1) {
    const int64_t oc0 = p0 * kPanelRows, oc1 = std::min(s.out_channels, p1 * kPanelRows);
#ifdef NNX_WINOGRAD_F4
    if (tile == 4) return transform_weights4(s, weight, oc0, oc1, out);
#endif
    transform_weights(s, weight, oc0, oc1, out);
  });
}

int winograd_prepared_tile(const Conv2dShape& s) {
#ifdef NNX_WINOGRAD_F4
  if (s.batch * ceil_div(s.out_h, 4) * ceil_div(s.out_w, 4) >= 16) return 4;
#endif
  (void)s;
  return 2;
}

int winograd_unprepared_tile(const Conv2dShape& s) {
#ifdef NNX_WINOGRAD_F4
  const int64_t image_tiles = ceil_div(s.out_h, 4) * ceil_div(s.out_w, 4);
#ifdef NNX_WINOGRAD_AVX512
  constexpr int64_t kMinImageTiles = 16;
#else
  // AVX2 (a 2-core Zen 3, forward passes of batch 16-32, against F(2x2)): 16x16 planes (16
  // tiles) 1.12x the time, 20x20 (25) 0.72-0.74x, 24x24 to the seed network's 64x80 0.62-0.73x.
  constexpr int64_t kMinImageTiles = 17;
#endif
  if (image_tiles >= kMinImageTiles && s.batch * image_tiles >= 256) return 4;
#endif
  (void)s;
  return 2;
}

bool winograd_suitable(const Conv2dShape& s, bool prepared) {
  if (s.kernel_h != 3 || s.kernel_w != 3 || s.stride_h != 1 || s.stride_w != 1 ||
      s.dilation_h != 1 || s.dilation_w != 1 || s.groups != 1 || s.in_channels < 16 ||
      s.out_channels < 16)
    return false;
  if (prepared) return true;
  // Transformed per call, the weights (out x in x 16 floats) have to be amortised over enough
  // tiles: on ResNet-18's 14x14 and 7x7 layers that made the path 3-5x slower than im2col.
  // Small planes in a batch: ResNet-18's 8x8 layers in training (512 tiles) gain against the
  // indirect convolution (2.4 against 3.1 ms; the training step's fastest of 6 alternating runs
  // 200 against 216 ms), its 4x4 ones (128 tiles) lose (3.5 against 3.2 ms).
  constexpr int64_t kMinTiles = 512, kMinImageTiles = 256;
  const int64_t image_tiles = ((s.out_h + 1) / 2) * ((s.out_w + 1) / 2);
  return s.batch * image_tiles >= kMinTiles || image_tiles >= kMinImageTiles;
}

namespace {

// 1.5 times a core's L2 as the C library reports it (1.5 MiB where it does not), within
// [384 KiB, 8 MiB].
int64_t block_budget_bytes() {
#ifdef _SC_LEVEL2_CACHE_SIZE  // glibc
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
  const long l2 = 0;
#endif
  const int64_t budget = l2 > 0 ? int64_t(l2) * 3 / 2 : int64_t(1536) << 10;
  return std::clamp<int64_t>(budget, int64_t(384) << 10, int64_t(8) << 20);
}

// Tile 2: F(2x2, 3x3); tile 4: F(4x4, 3x3) (AVX-512 and AVX2 builds), `u` transformed for it.
template <int Tile>
void run_winograd(const Conv2dShape& s, const float* input, const float* u, const float* bias,
                  float* output, ThreadPool* pool, const Epilogue& epilogue) {
  constexpr int64_t points = (Tile + 2) * (Tile + 2);
  const int64_t tile_rows = ceil_div(s.out_h, Tile), tile_cols = ceil_div(s.out_w, Tile);
  const Tiling tiling{tile_rows, tile_cols, tile_rows * tile_cols};
  // Whole tile rows stacked into one run's lanes on small planes (the AVX-512 transforms).
#ifdef NNX_WINOGRAD_AVX512
  constexpr bool stack = true;
#else
  // AVX2: F(4x4)'s transforms take stacked runs whose rows fill 8 lanes (stacked_input4).
  static const bool stacked = env_switch("NNX_WINOGRAD_STACK");
  const bool stack = Tile == 4 && stacked && tiling.cols <= 4 && 8 % tiling.cols == 0;
#endif
  auto transform_in = [&s, &tiling, input](const std::vector<Run>& runs, const Panels& panels,
                                           float* v) {
#ifdef NNX_WINOGRAD_F4
    if constexpr (Tile == 4) return transform_input4(s, tiling, runs, input, panels, v);
#endif
    transform_input(s, tiling, runs, input, panels, v);
  };
  auto transform_out = [&s, bias, &epilogue, output](const std::vector<Run>& runs, const MBlock& m,
                                                     const Panels& panels, int64_t oc0,
                                                     int64_t oc1) {
#ifdef NNX_WINOGRAD_F4
    if constexpr (Tile == 4)
      return transform_output4(s, runs, m, panels, oc0, oc1, bias, epilogue, output);
#endif
    transform_output(s, runs, m, panels, oc0, oc1, bias, epilogue, output);
  };
  const int64_t tiles = s.batch * tiling.per_image;
  const int64_t threads = pool ? pool->size() : 1;

  // Tiles per block: V and M of one block within 1.5 times a core's L2 (on 2-core Zen 5 VMs,
  // 1 MiB of L2, 1.5 MiB was the best of 384 KiB..8 MiB on the seed network's 3x3 layers; on a
  // Zen 3 with 512 KiB, 768 KiB made SqueezeNet's 55x55 and 27x27 layers 0.58-0.85x 1.5 MiB's
  // time, per round over 12 alternating rounds, the rest level), a multiple of the 32-wide panels.
  static const int64_t budget_floats = block_budget_bytes() / 4;
  const int64_t block = std::clamp<int64_t>(
      (budget_floats / (points * (s.in_channels + s.out_channels))) / 32 * 32, 32, 512);
  int64_t blocks = ceil_div(tiles, block);

  if (blocks >= threads) {
    // As many blocks as the threads divide, the tiles dealt out evenly in runs of 16: blocks of
    // a fixed size left one thread 128 of F(4x4)'s 196 tiles on a 56x56 plane (64, 64 | 64, 4).
    const int64_t units = ceil_div(tiles, 16);
    blocks = std::min(units, ceil_div(blocks, threads) * threads);
    parallel_for(pool, blocks, 1, [&](int64_t b0, int64_t b1) {
      thread_local AlignedBuffer v_buffer, m_buffer;
      thread_local std::vector<Run> runs;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t first = b * units / blocks * 16;
        const int64_t count = std::min(tiles, (b + 1) * units / blocks * 16) - first;
        const Panels panels = panels_for(count);
        float* v = v_buffer.get(points * v_point_floats(s, panels));
        const MBlock m = MBlock::in(m_buffer, points, 0, s.out_channels, panels);
        find_runs(tiling, first, first + count, panels, s.in_channels, runs, stack);
        transform_in(runs, panels, v);
        multiply(s, points, u, v, panels, count, 0, out_panels(s), m);
        transform_out(runs, m, panels, 0, s.out_channels);
      }
    });
    return;
  }

  // Few tiles: all at once, the output channels split over the threads. Each thread transforms
  // the whole input into a V of its own and keeps its share of M to itself: with V written by
  // both threads and M one buffer (the input transform split over input channels, a meeting, then
  // the products over output channels), two threads took 1.07-1.5x the time on 2 Zen 5 cores
  // (32 -> 128 on 27x27: 133 against 93 us; 256 -> 256 on 14x14: 281 against 247; 512 -> 512 on
  // 7x7: 400 against 376; SqueezeNet's 3x3 layers 0.75-0.85 of their time). The transform each
  // thread repeats costs the same whatever the threads (about 13 output channels' products on
  // 32 -> 128), while each thread's share of the products shrinks with more of them: every
  // thread takes a share, down to a panel each.
  const Panels panels = panels_for(tiles);
  parallel_for(pool, out_panels(s), 1, [&](int64_t p0, int64_t p1) {
    thread_local AlignedBuffer v_buffer, m_buffer;
    thread_local std::vector<Run> runs;
    const int64_t oc0 = p0 * kPanelRows, oc1 = std::min(s.out_channels, p1 * kPanelRows);
    float* v = v_buffer.get(points * v_point_floats(s, panels));
    const MBlock m = MBlock::in(m_buffer, points, oc0, oc1 - oc0, panels);
    find_runs(tiling, 0, tiles, panels, s.in_channels, runs, stack);
    transform_in(runs, panels, v);
    multiply(s, points, u, v, panels, tiles, p0, p1, m);
    transform_out(runs, m, panels, oc0, oc1);
  });
}

}  // namespace

void conv2d_winograd(const Conv2dShape& s, const float* input, const float* weight,
                     const float* bias, float* output, ThreadPool* pool, const Epilogue& epilogue,
                     const float* prepared, int prepared_tile) {
  if (prepared == nullptr) {
    // Transformed here, for the tile winograd_unprepared_tile picks.
    static thread_local AlignedBuffer u_buffer;
    prepared_tile = winograd_unprepared_tile(s);
    float* u = u_buffer.get(winograd_weights_floats(s, prepared_tile));
    winograd_transform_weights(s, weight, u, prepared_tile, pool);
    prepared = u;
  }
#ifdef NNX_WINOGRAD_F4
  if (prepared_tile == 4) return run_winograd<4>(s, input, prepared, bias, output, pool, epilogue);
#endif
  run_winograd<2>(s, input, prepared, bias, output, pool, epilogue);
}

}  // namespace nnx::cpu
