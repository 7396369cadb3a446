// What the vector kernel files share: <immintrin.h> (AVX-512 builds), the silencing of a GCC 12
// false positive, a compile-time loop for register-blocked kernels, and lane masks.
#pragma once

// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics header for the
// undefined pass-through operand of masked builtins (_mm512_max_ps, _mm512_min_ps,
// _mm512_alignr_epi32; GCC bug 105593, fixed in GCC 13): a false positive in a system header,
// silenced for the files that include this one.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <algorithm>
#include <cstdint>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nnx::cpu {

// f.template operator()<I>() for I = 0 .. N-1, unrolled at compile time.
template <int N, typename F>
inline __attribute__((always_inline)) void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f.template operator()<I>(), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

#if defined(__AVX512F__)
// Lanes [0, n) of a vector (all for n >= 16, none for n <= 0).
inline __mmask16 lanes_below(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}
#endif

// dst[0, 32) (64-byte aligned) = src[0, cols), then zeros (cols <= 32): one row of a 32-wide
// GEMM panel, in two masked vector moves where AVX-512 has them (no call per row).
inline void panel_row32(const float* src, int64_t cols, float* dst) {
#if defined(__AVX512F__)
  _mm512_store_ps(dst, _mm512_maskz_loadu_ps(lanes_below(cols), src));
  _mm512_store_ps(dst + 16, _mm512_maskz_loadu_ps(lanes_below(cols - 16), src + 16));
#else
  std::copy(src, src + cols, dst);
  std::fill(dst + cols, dst + 32, 0.f);
#endif
}

}  // namespace nnx::cpu
