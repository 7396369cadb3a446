// Single-threaded float GEMM (see gemm.h): a packed GEMM in the BLIS manner, blocks of A and B
// copied into panels that a register-tiled kernel streams through from L1/L2 (12x32 or 12x16
// with AVX-512, 6x16 with AVX2 + FMA); otherwise, and for products too thin for those kernels,
// Eigen's blocked product.
#define EIGEN_DONT_PARALLELIZE  // the thread pool splits the work; Eigen must not spawn threads
#include "kernels/cpu/gemm.h"

#include "kernels/cpu/avx512.h"

#include "kernels/cpu/aligned_buffer.h"

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>
#define NNX_GEMM_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NNX_PACKED_GEMM 1
#endif

namespace nnx::cpu {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowMap = Eigen::Map<const RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;
using RowMap = Eigen::Map<RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;

void eigen_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate) {
  RowMap cm(c, m, n, Eigen::OuterStride<>(ldc));
  ConstRowMap am(a, m, k, Eigen::OuterStride<>(lda));
  if (b_transposed) {
    ConstRowMap bt(b, n, k, Eigen::OuterStride<>(ldb));
    if (accumulate)
      cm.noalias() += am * bt.transpose();
    else
      cm.noalias() = am * bt.transpose();
  } else {
    ConstRowMap bm(b, k, n, Eigen::OuterStride<>(ldb));
    if (accumulate)
      cm.noalias() += am * bm;
    else
      cm.noalias() = am * bm;
  }
}

#ifdef NNX_GEMM_AVX512

// AVX-512: register tile of 12 rows x (16 * V) columns, V = 2 for wide products (24 zmm
// accumulators, 2 for the B row, the A values broadcast from memory inside the FMA) and V = 1
// for products with few columns, where a 32-wide tile would be mostly padding. Column tails
// are masked loads and stores, so no tile goes through a temporary.
namespace avx512 {

constexpr int64_t kMR = 12;
constexpr int64_t kKC = 256, kMC = 144, kNC = 3072;

// acc = C[Rows x 16V] (or zero without load_c) + A panel [kc x 12] * the first 16V columns of
// B panel [kc x NR]; `last` masks the columns of the last vector (all 16 set except at the
// right edge of C). Inlined into the kernels below, so that acc stays in registers.
template <int Rows, int V, int NR>
[[gnu::always_inline]] inline void multiply_tile(int64_t kc, const float* a, const float* b,
                                                 const float* c, int64_t ldc, bool load_c,
                                                 __mmask16 last, __m512 (&acc)[Rows][V]) {
  for (int r = 0; r < Rows; ++r)
    for (int v = 0; v < V; ++v) {
      const __mmask16 mask = v == V - 1 ? last : __mmask16(0xFFFF);
      acc[r][v] = load_c ? _mm512_maskz_loadu_ps(mask, c + r * ldc + 16 * v) : _mm512_setzero_ps();
    }
  for (int64_t p = 0; p < kc; ++p, a += kMR, b += NR) {
    // The A panel 64 steps (3 KiB) ahead: where it streams from memory once (Winograd's
    // transformed weights on ResNet's 7x7 layers, 16.8 MB per layer against 16 tiles) the
    // hardware prefetcher alone left half the bandwidth unused (1.11 -> 0.93 ms a layer).
    _mm_prefetch(reinterpret_cast<const char*>(a + 64 * kMR), _MM_HINT_T0);
    __m512 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
    for (int r = 0; r < Rows; ++r) {
      const __m512 x = _mm512_set1_ps(a[r]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
    }
  }
}

// C[Rows x 16V] (+)= A panel * B panel (multiply_tile).
template <int Rows, int V, int NR>
void kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load_c,
            __mmask16 last) {
  __m512 acc[Rows][V];
  multiply_tile<Rows, V, NR>(kc, a, b, c, ldc, load_c, last, acc);
  for (int r = 0; r < Rows; ++r)
    for (int v = 0; v < V; ++v) {
      const __mmask16 mask = v == V - 1 ? last : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mask, acc[r][v]);
    }
}

// The same, plus bias[r] on row r (bias may be null) and the residual's element at C's position
// (residual may be null; row stride ldc), clamped to [lo, hi] in registers before the store:
// max(lo, x) then min(hi, x) keep NaN, as torch.clamp.
template <int Rows, int V, int NR>
void kernel_bias_clamp(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                       bool load_c, __mmask16 last, const float* bias, const float* residual,
                       float lo, float hi) {
  __m512 acc[Rows][V];
  multiply_tile<Rows, V, NR>(kc, a, b, c, ldc, load_c, last, acc);
  const __m512 lo_v = _mm512_set1_ps(lo), hi_v = _mm512_set1_ps(hi);
  for (int r = 0; r < Rows; ++r) {
    const __m512 add = _mm512_set1_ps(bias != nullptr ? bias[r] : 0.f);
    for (int v = 0; v < V; ++v) {
      const __mmask16 mask = v == V - 1 ? last : __mmask16(0xFFFF);
      __m512 x = _mm512_add_ps(acc[r][v], add);
      if (residual != nullptr)
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, residual + r * ldc + 16 * v));
      x = _mm512_max_ps(lo_v, x);
      _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mask, _mm512_min_ps(hi_v, x));
    }
  }
}

template <int V, int NR, int... Rows>
constexpr auto make_bias_clamp_table(std::integer_sequence<int, Rows...>) {
  using Fn = void (*)(int64_t, const float*, const float*, float*, int64_t, bool, __mmask16,
                      const float*, const float*, float, float);
  return std::array<Fn, sizeof...(Rows)>{&kernel_bias_clamp<Rows + 1, V, NR>...};
}

template <int V, int NR>
void run_bias_clamp(int64_t rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                    bool load_c, __mmask16 last, const float* bias, const float* residual, float lo,
                    float hi) {
  static constexpr auto table =
      make_bias_clamp_table<V, NR>(std::make_integer_sequence<int, int(kMR)>{});
  table[size_t(rows - 1)](kc, a, b, c, ldc, load_c, last, bias, residual, lo, hi);
}

template <int V, int NR, int... Rows>
constexpr auto make_kernel_table(std::integer_sequence<int, Rows...>) {
  using Fn = void (*)(int64_t, const float*, const float*, float*, int64_t, bool, __mmask16);
  return std::array<Fn, sizeof...(Rows)>{&kernel<Rows + 1, V, NR>...};
}

template <int V, int NR>
void run_kernel(int64_t rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                bool load_c, __mmask16 last) {
  static constexpr auto table =
      make_kernel_table<V, NR>(std::make_integer_sequence<int, int(kMR)>{});
  table[size_t(rows - 1)](kc, a, b, c, ldc, load_c, last);
}

// The first `columns` of 16 lanes (none for columns <= 0, all for 16 and more).
__mmask16 tail_mask(int64_t columns) {
  if (columns <= 0) return 0;
  return columns >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << columns) - 1);
}

// A block [mc x kc] as panels of kMR rows, k-major within a panel; missing rows are zeros.
// Blocks of 16 depths are transposed in registers (the rows past kMR are padding).
void pack_a(int64_t mc, int64_t kc, const float* a, int64_t lda, float* out) {
  const __mmask16 panel = tail_mask(kMR);
  for (int64_t i = 0; i < mc; i += kMR, out += kMR * kc) {
    const int64_t rows = std::min(kMR, mc - i);
    for (int64_t p = 0; p < kc; p += 16) {
      const int64_t depth = std::min<int64_t>(16, kc - p);
      const __mmask16 along = tail_mask(depth);
      __m512 block[16];
      for (int64_t r = 0; r < 16; ++r)
        block[r] =
            r < rows ? _mm512_maskz_loadu_ps(along, a + (i + r) * lda + p) : _mm512_setzero_ps();
      transpose16(block);
      for (int64_t q = 0; q < depth; ++q)
        _mm512_mask_storeu_ps(out + (p + q) * kMR, panel, block[q]);
    }
  }
}

// B block [kc x nc] as panels of 16V columns, k-major within a panel; missing columns are
// zeros. With `transposed`, b holds B^T ([nc x kc] rows of stride ldb).
template <int V>
void pack_b(int64_t kc, int64_t nc, const float* b, int64_t ldb, bool transposed, float* out) {
  constexpr int64_t nr = 16 * V;
  for (int64_t j = 0; j < nc; j += nr, out += kc * nr) {
    const int64_t cols = std::min(nr, nc - j);
    if (!transposed) {
      __mmask16 masks[V];
      for (int v = 0; v < V; ++v) masks[v] = tail_mask(std::max<int64_t>(0, cols - 16 * v));
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + p * ldb + j;
        for (int v = 0; v < V; ++v)
          _mm512_store_ps(out + p * nr + 16 * v, _mm512_maskz_loadu_ps(masks[v], src + 16 * v));
      }
    } else {
      // Rows of B^T are columns of the panel: 16x16 blocks transposed in registers.
      for (int v = 0; v < V; ++v) {
        const int64_t c0 = 16 * v;
        for (int64_t p = 0; p < kc; p += 16) {
          const int64_t depth = std::min<int64_t>(16, kc - p);
          const __mmask16 along = tail_mask(depth);
          __m512 rows[16];
          for (int64_t i = 0; i < 16; ++i)
            rows[i] = c0 + i < cols ? _mm512_maskz_loadu_ps(along, b + (j + c0 + i) * ldb + p)
                                    : _mm512_setzero_ps();
          transpose16(rows);
          for (int64_t q = 0; q < depth; ++q) _mm512_store_ps(out + (p + q) * nr + c0, rows[q]);
        }
      }
    }
  }
}

template <int V>
void packed_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t nr = 16 * V;
  thread_local AlignedBuffer a_buffer, b_buffer;
  float* packed_a = a_buffer.get(kMC * kKC);
  float* packed_b = b_buffer.get(kKC * kNC);
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      const bool load_c = accumulate || pc > 0;
      pack_b<V>(kc, nc, b_transposed ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, b_transposed,
                packed_b);
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        pack_a(mc, kc, a + ic * lda + pc, lda, packed_a);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const int64_t cols = std::min(nr, nc - jr);
          const __mmask16 last = tail_mask(cols - 16 * (V - 1));
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            const int64_t mr = std::min(kMR, mc - ir);
            float* tile = c + (ic + ir) * ldc + jc + jr;
            if (V == 2 && cols <= 16)  // the last panel's second half is all padding
              run_kernel<1, nr>(mr, kc, packed_a + ir * kc, packed_b + jr * kc, tile, ldc, load_c,
                                tail_mask(cols));
            else
              run_kernel<V, nr>(mr, kc, packed_a + ir * kc, packed_b + jr * kc, tile, ldc, load_c,
                                last);
          }
        }
      }
    }
  }
}

}  // namespace avx512

#endif  // NNX_GEMM_AVX512

#ifdef NNX_PACKED_GEMM

// Register tile (6 rows x 16 columns: 12 accumulators) and cache blocks: a kc x 16 panel of B
// (16 KiB) stays in L1 while the mc x kc block of A (96 KiB) streams from L2.
constexpr int64_t kMR = 6, kNR = 16;
constexpr int64_t kKC = 256, kMC = 96, kNC = 2048;

// C[Rows x 16] (+)= A panel [kc x a_step] * 16 columns of B panel [kc x b_step], panels as
// pack_a / pack_b lay them out (steps kMR and kNR) or as panel_gemm's callers do (kPanelRows and
// the panel width); Rows < 6 serves the last rows of A without a detour through a temporary.
// With `epilogue`, bias[r] (bias may be null) and the residual's element at C's position
// (residual may be null; row stride ldc) are added and the sum clamped to [lo, hi] (NaN kept,
// as torch.clamp) before the store.
template <int Rows, bool Epilogue>
void kernel_16(int64_t kc, const float* a, int64_t a_step, const float* b, int64_t b_step, float* c,
               int64_t ldc, bool load_c, const float* bias, const float* residual, float lo,
               float hi) {
  // Compile-time loops (static_for): with plain loops over the rows GCC kept the accumulators
  // in memory and stored all twelve every step (ResNet-50's Winograd products at 47% of peak).
  __m256 acc0[Rows], acc1[Rows];
  static_for<Rows>([&]<int r>() __attribute__((always_inline)) {
    acc0[r] = load_c ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();
    acc1[r] = load_c ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps();
  });
  for (int64_t p = 0; p < kc; ++p, a += a_step, b += b_step) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    static_for<Rows>([&]<int r>() __attribute__((always_inline)) {
      const __m256 x = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(x, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(x, b1, acc1[r]);
    });
  }
  static_for<Rows>([&]<int r>() __attribute__((always_inline)) {
    if constexpr (Epilogue) {
      const __m256i all = _mm256_set1_epi32(-1);
      store_row16<true>(c + r * ldc, acc0[r], acc1[r],
                        _mm256_set1_ps(bias != nullptr ? bias[r] : 0.f),
                        residual != nullptr ? residual + r * ldc : nullptr, _mm256_set1_ps(lo),
                        _mm256_set1_ps(hi), all, all);
    } else {
      _mm256_storeu_ps(c + r * ldc, acc0[r]);
      _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
    }
  });
}

template <bool Epilogue = false>
void kernel_rows_x16(int64_t rows, int64_t kc, const float* a, int64_t a_step, const float* b,
                     int64_t b_step, float* c, int64_t ldc, bool load_c,
                     const float* bias = nullptr, const float* residual = nullptr, float lo = 0.f,
                     float hi = 0.f) {
  switch (rows) {
    case 6:
      return kernel_16<6, Epilogue>(kc, a, a_step, b, b_step, c, ldc, load_c, bias, residual, lo,
                                    hi);
    case 5:
      return kernel_16<5, Epilogue>(kc, a, a_step, b, b_step, c, ldc, load_c, bias, residual, lo,
                                    hi);
    case 4:
      return kernel_16<4, Epilogue>(kc, a, a_step, b, b_step, c, ldc, load_c, bias, residual, lo,
                                    hi);
    case 3:
      return kernel_16<3, Epilogue>(kc, a, a_step, b, b_step, c, ldc, load_c, bias, residual, lo,
                                    hi);
    case 2:
      return kernel_16<2, Epilogue>(kc, a, a_step, b, b_step, c, ldc, load_c, bias, residual, lo,
                                    hi);
    default:
      return kernel_16<1, Epilogue>(kc, a, a_step, b, b_step, c, ldc, load_c, bias, residual, lo,
                                    hi);
  }
}

// panel_gemm (Epilogue false) and panel_gemm_bias_clamp on AVX2: 6-row x 16-column tiles over
// the panel, the epilogue in registers; a partial column block through a local tile, the
// epilogue applied as it is copied out.
template <bool Epilogue>
void panel_tiles(int64_t rows, int64_t cols, int64_t k, const float* a, const float* b,
                 int64_t width, float* c, int64_t ldc, bool accumulate, const float* bias,
                 const float* residual, float lo, float hi) {
  for (int64_t r0 = 0; r0 < rows; r0 += 6)
    for (int64_t j0 = 0; j0 < cols; j0 += 16) {
      const int64_t tile_rows = std::min<int64_t>(6, rows - r0), tile_cols = cols - j0;
      float* out = c + r0 * ldc + j0;
      const float* add = bias != nullptr ? bias + r0 : nullptr;
      const float* z = residual != nullptr ? residual + r0 * ldc + j0 : nullptr;
      if (tile_cols >= 16) {
        kernel_rows_x16<Epilogue>(tile_rows, k, a + r0, kPanelRows, b + j0, width, out, ldc,
                                  accumulate, add, z, lo, hi);
        continue;
      }
      alignas(32) float tile[6 * 16] = {};
      if (accumulate)
        for (int64_t r = 0; r < tile_rows; ++r)
          std::copy(out + r * ldc, out + r * ldc + tile_cols, tile + r * 16);
      kernel_rows_x16(tile_rows, k, a + r0, kPanelRows, b + j0, width, tile, 16, accumulate);
      for (int64_t r = 0; r < tile_rows; ++r)
        for (int64_t j = 0; j < tile_cols; ++j) {
          float x = tile[r * 16 + j];
          if constexpr (Epilogue) {
            if (add != nullptr) x += add[r];  // NaN stays NaN
            if (z != nullptr) x += z[r * ldc + j];
            x = x < lo ? lo : (x > hi ? hi : x);
          }
          out[r * ldc + j] = x;
        }
    }
}

// 8 rows x 8 depths of a row-major matrix (row stride ld) transposed in registers: block[q] holds
// depth q of the rows (zero for rows >= rows and depths >= depth).
inline void load_transposed8(const float* a, int64_t ld, int64_t rows, int64_t depth,
                             __m256 block[8]) {
  const __m256i along = lanes8(depth);
  for (int64_t r = 0; r < 8; ++r)
    block[r] = r >= rows    ? _mm256_setzero_ps()
               : depth >= 8 ? _mm256_loadu_ps(a + r * ld)
                            : _mm256_maskload_ps(a + r * ld, along);
  transpose8(block);
}

// A block [mc x kc] as panels of kMR rows, k-major within a panel; missing rows are zeros.
// Blocks of 8 depths are transposed in registers and stored 8 floats at a time, in order, each
// store's last two (the next depth's first) rewritten by the next: `out` has 2 floats to spare.
// (A float at a time, the strided reads and stores took 9% of a ResNet-18 training step.)
void pack_a(int64_t mc, int64_t kc, const float* a, int64_t lda, float* out) {
  static_assert(kMR == 6, "a depth's 6 rows are stored as 8 floats");
  for (int64_t i = 0; i < mc; i += kMR, out += kMR * kc) {
    const int64_t rows = std::min(kMR, mc - i);
    for (int64_t p = 0; p < kc; p += 8) {
      const int64_t depth = std::min<int64_t>(8, kc - p);
      __m256 block[8];
      load_transposed8(a + i * lda + p, lda, rows, depth, block);
      for (int64_t q = 0; q < depth; ++q) _mm256_storeu_ps(out + (p + q) * kMR, block[q]);
    }
  }
}

// B block [kc x nc] as panels of kNR columns, k-major within a panel; missing columns are zeros.
// With `transposed`, b holds B^T ([nc x kc] rows of stride ldb), its rows the panel's columns:
// 8x8 blocks transposed in registers.
void pack_b(int64_t kc, int64_t nc, const float* b, int64_t ldb, bool transposed, float* out) {
  for (int64_t j = 0; j < nc; j += kNR, out += kc * kNR) {
    const int64_t cols = std::min(kNR, nc - j);
    if (!transposed && cols == kNR) {
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + p * ldb + j;
        _mm256_store_ps(out + p * kNR, _mm256_loadu_ps(src));
        _mm256_store_ps(out + p * kNR + 8, _mm256_loadu_ps(src + 8));
      }
    } else if (!transposed) {
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + p * ldb + j;
        float* dst = out + p * kNR;
        for (int64_t c = 0; c < cols; ++c) dst[c] = src[c];
        for (int64_t c = cols; c < kNR; ++c) dst[c] = 0.f;
      }
    } else {
      for (int64_t c0 = 0; c0 < kNR; c0 += 8)
        for (int64_t p = 0; p < kc; p += 8) {
          const int64_t depth = std::min<int64_t>(8, kc - p);
          __m256 block[8];
          load_transposed8(b + (j + c0) * ldb + p, ldb, std::clamp<int64_t>(cols - c0, 0, 8), depth,
                           block);
          for (int64_t q = 0; q < depth; ++q) _mm256_store_ps(out + (p + q) * kNR + c0, block[q]);
        }
    }
  }
}

void packed_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate) {
  thread_local AlignedBuffer a_buffer, b_buffer;
  float* packed_a = a_buffer.get(kMC * kKC + 2);  // pack_a's last store reaches 2 floats past
  float* packed_b = b_buffer.get(kKC * kNC);
  alignas(64) float edge[kMR * kNR];
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      const bool load_c = accumulate || pc > 0;
      pack_b(kc, nc, b_transposed ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, b_transposed,
             packed_b);
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        pack_a(mc, kc, a + ic * lda + pc, lda, packed_a);
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          const int64_t nr = std::min(kNR, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            const int64_t mr = std::min(kMR, mc - ir);
            float* tile = c + (ic + ir) * ldc + jc + jr;
            if (nr == kNR) {
              kernel_rows_x16(mr, kc, packed_a + ir * kc, kMR, packed_b + jr * kc, kNR, tile, ldc,
                              load_c);
              continue;
            }
            // The last, narrower columns go through a full tile on the stack.
            for (int64_t r = 0; r < mr; ++r)
              for (int64_t j = 0; j < nr; ++j) edge[r * kNR + j] = load_c ? tile[r * ldc + j] : 0.f;
            kernel_rows_x16(mr, kc, packed_a + ir * kc, kMR, packed_b + jr * kc, kNR, edge, kNR,
                            true);
            for (int64_t r = 0; r < mr; ++r)
              for (int64_t j = 0; j < nr; ++j) tile[r * ldc + j] = edge[r * kNR + j];
          }
        }
      }
    }
  }
}

#endif  // NNX_PACKED_GEMM

}  // namespace

void panel_gemm(int64_t rows, int64_t cols, int64_t k, const float* a, const float* b,
                int64_t width, float* c, int64_t ldc, bool accumulate) {
  if (rows <= 0 || cols <= 0) return;
#ifdef NNX_GEMM_AVX512
  static_assert(kPanelRows == avx512::kMR);
  if (width == 32 && cols > 16)
    return avx512::run_kernel<2, 32>(rows, k, a, b, c, ldc, accumulate,
                                     avx512::tail_mask(cols - 16));
  if (width == 32)
    return avx512::run_kernel<1, 32>(rows, k, a, b, c, ldc, accumulate, avx512::tail_mask(cols));
  return avx512::run_kernel<1, 16>(rows, k, a, b, c, ldc, accumulate, avx512::tail_mask(cols));
#elif defined(NNX_PACKED_GEMM)
  panel_tiles<false>(rows, cols, k, a, b, width, c, ldc, accumulate, nullptr, nullptr, 0.f, 0.f);
#else
  // Portable form: rows of C accumulated in a local tile the compiler keeps in vectors.
  for (int64_t r = 0; r < rows; ++r) {
    float acc[32];
    for (int64_t j = 0; j < width; ++j) acc[j] = accumulate && j < cols ? c[r * ldc + j] : 0.f;
    for (int64_t p = 0; p < k; ++p) {
      const float x = a[p * kPanelRows + r];
      const float* brow = b + p * width;
      for (int64_t j = 0; j < width; ++j) acc[j] += x * brow[j];
    }
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = acc[j];
  }
#endif
}

void panel_gemm_bias_clamp(int64_t rows, int64_t cols, int64_t k, const float* a, const float* b,
                           int64_t width, float* c, int64_t ldc, bool accumulate, const float* bias,
                           float lo, float hi, const float* residual) {
  if (rows <= 0 || cols <= 0) return;
#ifdef NNX_GEMM_AVX512
  if (width == 32 && cols > 16)
    return avx512::run_bias_clamp<2, 32>(rows, k, a, b, c, ldc, accumulate,
                                         avx512::tail_mask(cols - 16), bias, residual, lo, hi);
  if (width == 32)
    return avx512::run_bias_clamp<1, 32>(rows, k, a, b, c, ldc, accumulate, avx512::tail_mask(cols),
                                         bias, residual, lo, hi);
  return avx512::run_bias_clamp<1, 16>(rows, k, a, b, c, ldc, accumulate, avx512::tail_mask(cols),
                                       bias, residual, lo, hi);
#elif defined(NNX_PACKED_GEMM)
  panel_tiles<true>(rows, cols, k, a, b, width, c, ldc, accumulate, bias, residual, lo, hi);
#else
  panel_gemm(rows, cols, k, a, b, width, c, ldc, accumulate);
  for (int64_t r = 0; r < rows; ++r) {
    const float add = bias != nullptr ? bias[r] : 0.f;
    for (int64_t j = 0; j < cols; ++j) {
      float x = c[r * ldc + j] + add;  // NaN stays NaN, as torch.clamp
      if (residual != nullptr) x += residual[r * ldc + j];
      c[r * ldc + j] = x < lo ? lo : (x > hi ? hi : x);
    }
  }
#endif
}

void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_transposed, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate) RowMap(c, m, n, Eigen::OuterStride<>(ldc)).setZero();
    return;
  }
#ifdef NNX_GEMM_AVX512
  // Matrix-vector shapes would leave most of the register tile idle; 16-wide panels serve
  // products whose columns would mostly pad a 32-wide one.
  if (m >= 3 && n >= 8) {
    if (n >= 48)
      return avx512::packed_gemm<2>(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate);
    return avx512::packed_gemm<1>(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate);
  }
#endif
#ifdef NNX_PACKED_GEMM
  // Matrix-vector shapes would leave most of the register tile idle.
  if (m >= kMR / 2 && n >= kNR / 2)
    return packed_gemm(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate);
#endif
  eigen_gemm(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate);
}

}  // namespace nnx::cpu
