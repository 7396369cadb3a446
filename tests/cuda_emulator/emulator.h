// The CUDA emulator's device side: what a kernel source (kernels/cuda/*.cu, rewritten by
// cu_to_cpp.py) needs to compile as plain C++ and run on the host. Included first in every
// rewritten source.
//
// A launch runs every block of the grid, one after another, on the calling thread; the threads
// of a block are fibers that run until they finish, reach __syncthreads (where they wait for the
// whole block) or exchange values through a warp shuffle. Shared memory is thread-local storage
// (one block runs at a time per host thread). See README.md for what it checks and what it cannot.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace nnx::emu {

// The running fiber's coordinates, set by the scheduler before it resumes a fiber. constinit:
// every read of threadIdx and the rest is then a plain thread-local load, without a call to the
// variable's initialisation wrapper first.
struct Coordinates {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern thread_local constinit Coordinates here;

// Runs body(arg) for every thread of every block (or records it while `stream` is captured
// into a CUDA graph). Sets the thread's last error, as a launch does, for a bad configuration.
void run_kernel(const char* name, dim3 grid, dim3 block, size_t dynamic_shared, cudaStream_t stream,
                void (*body)(void*), void* arg, void (*release)(void*),
                void* (*clone)(const void*));

// Waits for every thread of the block; `file`:`line` is the call site: threads waiting at
// different __syncthreads (a divergent barrier, undefined on a GPU) are reported and abort.
void syncthreads(const char* file, int line);

// Warp shuffles: every lane of the warp publishes `bytes` of its value and reads the one of
// `source_lane` (0-31, a lane of the same warp). A member mask without the calling lane or the
// source, or naming lanes the block does not have, and a source that has not reached the same
// shuffle (a divergent warp) are reported as errors and abort.
void shuffle(const void* value, void* result, size_t bytes, int source_lane, unsigned mask);
int lane_id();
// Stops the program: a WMMA call that CUDA leaves undefined (a misaligned pointer, a bad ldm).
[[noreturn]] void wmma_error(const char* what);
int shuffle_width(int width);  // `width`, checked: a power of two from 1 to 32

// Shared memory starts undefined in every block on a GPU; here each __shared__ variable is filled
// with 0xFF bytes (NaN for floats) the first time a block reaches its declaration, so that a
// kernel reading what it did not write sees garbage, as it would there (cu_to_cpp.py adds the
// call after each declaration).
void fresh_shared(void* p, size_t bytes);

template <class F>
void launch(const char* name, F&& body, dim3 grid, dim3 block, size_t dynamic_shared = 0,
            cudaStream_t stream = nullptr) {
  using Body = std::decay_t<F>;
  // The kernel's arguments were captured by value, as a launch copies them, so a closure may
  // outlive this call (graph capture keeps it).
  auto* owned = new Body(std::forward<F>(body));
  run_kernel(
      name, grid, block, dynamic_shared, stream, [](void* p) { (*static_cast<Body*>(p))(); }, owned,
      [](void* p) { delete static_cast<Body*>(p); },
      [](const void* p) -> void* { return new Body(*static_cast<const Body*>(p)); });
}

template <class T>
T shfl(T v, int source_lane, unsigned mask) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a wide type");
  T out;
  shuffle(&v, &out, sizeof(T), source_lane, mask);
  return out;
}

template <class T>
T atomic_add(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

template <class T>
T atomic_max(T* address, T value) {
  const T old = *address;
  if (value > old) *address = value;
  return old;
}

}  // namespace nnx::emu

// ---- CUDA's device-side names, on the host -----------------------------------------------------

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __shared__
#undef __constant__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static thread_local
#define __constant__
#define __launch_bounds__(...)

#define threadIdx (::nnx::emu::here.thread_idx)
#define blockIdx (::nnx::emu::here.block_idx)
#define blockDim (::nnx::emu::here.block_dim)
#define gridDim (::nnx::emu::here.grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::nnx::emu::syncthreads(file, line);
}

// The four shuffles as PTX's shfl.sync defines them: within segments of `width` lanes (a power of
// two up to 32), offsets and lane masks taken modulo 32; a lane whose source falls outside what
// the mode allows reads its own value. Lanes outside the member mask are not read (an error).
template <class T>
T __shfl_sync(unsigned mask, T v, int source, int width = 32) {
  const int w = ::nnx::emu::shuffle_width(width), lane = ::nnx::emu::lane_id();
  return ::nnx::emu::shfl(v, (lane & ~(w - 1)) | (source & (w - 1)), mask);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int w = ::nnx::emu::shuffle_width(width), lane = ::nnx::emu::lane_id();
  const int source = lane + int(delta & 31u), last = (lane & ~(w - 1)) + w - 1;
  return ::nnx::emu::shfl(v, source <= last ? source : lane, mask);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int w = ::nnx::emu::shuffle_width(width), lane = ::nnx::emu::lane_id();
  const int source = lane - int(delta & 31u), first = lane & ~(w - 1);
  return ::nnx::emu::shfl(v, source >= first ? source : lane, mask);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int w = ::nnx::emu::shuffle_width(width), lane = ::nnx::emu::lane_id();
  const int source = lane ^ (lane_mask & 31), last = (lane & ~(w - 1)) + w - 1;
  return ::nnx::emu::shfl(v, source <= last ? source : lane, mask);  // earlier segments: allowed
}

// A warp barrier: every lane in `mask` reaches it before any goes on (a shuffle of nothing, with
// the shuffles' checks of the mask and of divergence).
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  const int lane = ::nnx::emu::lane_id();
  int none = 0, out = 0;
  ::nnx::emu::shuffle(&none, &out, sizeof none, lane, mask);
}

template <class T, class U>
T atomicAdd(T* address, U value) {
  return ::nnx::emu::atomic_add(address, T(value));
}
template <class T, class U>
T atomicMax(T* address, U value) {
  return ::nnx::emu::atomic_max(address, T(value));
}

// CUDA's min and max over mixed arithmetic types.
template <class A, class B>
std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B>
std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

// Intrinsics with IEEE rounding, never fused into a multiply-add (the rewritten sources are
// compiled with contraction on, as nvcc compiles kernels): the result goes through memory.
template <class T>
inline T rounded(T v) {
  volatile T out = v;
  return out;
}
// A thread's sleep: time means nothing on the emulator.
inline void __nanosleep(unsigned) {}

inline float __fmul_rn(float a, float b) {
  return rounded(a * b);
}
inline float __fadd_rn(float a, float b) {
  return rounded(a + b);
}
inline double __dadd_rn(double a, double b) {
  return rounded(a + b);
}
inline double __dsub_rn(double a, double b) {
  return rounded(a - b);
}
inline double __dmul_rn(double a, double b) {
  return rounded(a * b);
}
inline long long __double_as_longlong(double v) {
  long long out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}
inline double __longlong_as_double(long long v) {
  double out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}
inline float __int_as_float(int v) {
  float out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}
inline int __float_as_int(float v) {
  int out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}
inline float __expf(float v) {
  return std::exp(v);
}
inline float __logf(float v) {
  return std::log(v);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float rsqrtf(float v) {
  return 1.0f / std::sqrt(v);
}
inline double rsqrt(double v) {
  return 1.0 / std::sqrt(v);
}
using std::isinf;
using std::isnan;

// ---- WMMA (mma.h's nvcuda::wmma)
// ----------------------------------------------------------------- How a fragment's elements are
// spread over the warp's lanes is unspecified. Here a fragment's x[] has room for the whole matrix
// (row-major, num_elements of them, zero at first), and the product's row r belongs to lane 31 - r
// % 32 (later lanes: a lane reading a result an earlier lane did not store yet is one that runs
// first, and reads stale memory without a __syncwarp): that lane loads row r of A and of the
// accumulator, and all of B, and mma_sync computes and store_matrix_sync writes its rows alone
// (what a lane does not own is left as it was). So the warp does the product's work once, and what
// one lane stored reaches another only through memory. A load or store whose pointer is not 32-byte
// aligned, or whose ldm is not a multiple of 16 bytes, stops the program, as CUDA leaves it
// undefined. The products of TF32, fp16 and bf16 operands are exact in float; they are summed in
// float in depth order onto the accumulator (the tensor cores' order and internal precision are not
// modelled).
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};
template <class Use, int M, int N, int K>
struct extent;
template <int M, int N, int K>
struct extent<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct extent<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct extent<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  using element_type = typename detail::storage<T>::type;
  static constexpr int rows = detail::extent<Use, M, N, K>::rows;
  static constexpr int cols = detail::extent<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements] = {};
};

namespace detail {
// The first row of a product with `rows` rows that the calling lane owns (rows += 32 from
// there), >= rows when it owns none.
inline int first_owned_row() {
  return 31 - ::nnx::emu::lane_id();
}
template <class E>
void check_access(const void* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    ::nnx::emu::wmma_error("a matrix pointer that is not 32-byte aligned");
  if (size_t(ldm) * sizeof(E) % 16 != 0)
    ::nnx::emu::wmma_error("an ldm that is not a multiple of 16 bytes");
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f,
                   typename fragment<Use, M, N, K, T, L>::element_type v) {
  for (auto& e : f.x) e = v;
}

template <class Use, int M, int N, int K, class T, class L, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  using Frag = fragment<Use, M, N, K, T, L>;
  static_assert(!std::is_void_v<L>, "a matrix_a or matrix_b fragment names its layout");
  detail::check_access<P>(p, ldm);
  constexpr bool rows_in_memory = std::is_same_v<L, row_major>;
  const int first = detail::first_owned_row();
  // What this lane's rows of the product need: its rows of A; all of B, if it has a row.
  const bool is_a = std::is_same_v<Use, matrix_a>;
  if (!is_a && first >= M) return;
  for (int r = is_a ? first : 0; r < Frag::rows; r += is_a ? 32 : 1)
    for (int c = 0; c < Frag::cols; ++c)
      f.x[r * Frag::cols + c] = rows_in_memory ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                      layout_t layout) {
  detail::check_access<float>(p, ldm);
  for (int r = detail::first_owned_row(); r < M; r += 32)
    for (int c = 0; c < N; ++c)
      f.x[r * N + c] = layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  detail::check_access<float>(p, ldm);
  for (int r = detail::first_owned_row(); r < M; r += 32)
    for (int c = 0; c < N; ++c)
      (layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]) = f.x[r * N + c];
}

// An operand as float: fp16 through a table of all 65536 values (cuda_fp16's host conversion is
// slow bit work), bf16 by a shift.
inline const std::vector<float> half_values = [] {
  std::vector<float> t(65536);
  for (uint32_t i = 0; i < 65536; ++i) t[i] = __half2float(__ushort_as_half(uint16_t(i)));
  return t;
}();
inline float operand(float v) {
  return v;
}
inline float operand(const __half& v) {
  uint16_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return half_values[bits];
}
inline float operand(const __nv_bfloat16& v) {
  uint16_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t wide = uint32_t(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof out);
  return out;
}

template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  for (int i = detail::first_owned_row(); i < M; i += 32) {
    float sum[N];  // each d[i][j] = c[i][j] + a[i][0] b[0][j] + a[i][1] b[1][j] + ... in order
    for (int j = 0; j < N; ++j) sum[j] = c.x[i * N + j];
    for (int k = 0; k < K; ++k) {
      const float aik = operand(a.x[i * K + k]);
      for (int j = 0; j < N; ++j) sum[j] += aik * operand(b.x[k * N + j]);
    }
    std::memcpy(&d.x[i * N], sum, sizeof sum);
  }
}

// To nearest, ties away from zero (cvt.rna.tf32.f32), in a float with the low 13 bits clear.
inline float __float_to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + 0x1000u) & 0xffffe000u;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
}  // namespace nvcuda::wmma
