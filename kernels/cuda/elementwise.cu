// Broadcasting binary ops on CUDA. The output's dimensions are coalesced as on the CPU, then one
// of three kernels runs: same shape (float4 map); one broadcast value per row, where one operand
// is contiguous and the other has a single non-broadcast dimension (index (i / inner) % mid:
// (N,C,1,1) or (1,C,1,1) against (N,C,H,W), a scalar, a bias row); or a general kernel that
// decomposes every index.
#include <climits>
#include <string>

#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/launch.cuh"
#include "nnx/error.h"

namespace nnx::cuda {
namespace {

constexpr int kMaxDims = 8;

struct BinaryFn {
  BinaryOp op;
  bool relu;
  __device__ __forceinline__ float operator()(float x, float y) const {
    const float r = op == BinaryOp::add ? x + y : op == BinaryOp::sub ? x - y : x * y;
    return relu && r < 0.0f ? 0.0f : r;
  }
};

// The row kernels take the contiguous operand first; this restores a op b when that is b.
struct FlippedFn {
  BinaryFn fn;
  __device__ __forceinline__ float operator()(float full, float small) const {
    return fn(small, full);
  }
};

// The output's dimensions with each operand's element strides (0 where it is broadcast), size-1
// dimensions dropped and neighbours merged where both operands allow.
struct Layout {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride_a[kMaxDims] = {};
  int64_t stride_b[kMaxDims] = {};
};

std::string dims_str(const int64_t* dims, int ndim) {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

void broadcast_strides(const char* name, const int64_t* dims, int ndim, const int64_t* out_dims,
                       int out_ndim, int64_t* strides) {
  NNX_CHECK(ndim >= 0 && ndim <= out_ndim, ErrorKind::shape, "binary op: operand ", name,
            " of shape ", dims_str(dims, ndim), " does not broadcast to ",
            dims_str(out_dims, out_ndim));
  const int lead = out_ndim - ndim;
  int64_t step = 1;
  for (int i = out_ndim - 1; i >= 0; --i) {
    const int j = i - lead;
    if (j < 0) {
      strides[i] = 0;
      continue;
    }
    NNX_CHECK(dims[j] == out_dims[i] || dims[j] == 1, ErrorKind::shape, "binary op: operand ", name,
              " of shape ", dims_str(dims, ndim), " does not broadcast to ",
              dims_str(out_dims, out_ndim));
    strides[i] = dims[j] == 1 ? 0 : step;
    step *= dims[j];
  }
}

Layout make_layout(const int64_t* a_dims, int a_ndim, const int64_t* b_dims, int b_ndim,
                   const int64_t* out_dims, int out_ndim) {
  NNX_CHECK(out_ndim >= 0 && out_ndim <= kMaxDims, ErrorKind::shape, "binary op: output rank ",
            out_ndim, " is over ", kMaxDims);
  int64_t sa[kMaxDims], sb[kMaxDims];
  broadcast_strides("a", a_dims, a_ndim, out_dims, out_ndim, sa);
  broadcast_strides("b", b_dims, b_ndim, out_dims, out_ndim, sb);
  Layout l;
  for (int i = 0; i < out_ndim; ++i) {
    const int64_t n = out_dims[i];
    if (n == 1) continue;
    if (l.ndim > 0) {
      const int p = l.ndim - 1;
      if (l.stride_a[p] == sa[i] * n && l.stride_b[p] == sb[i] * n) {
        l.size[p] *= n;
        l.stride_a[p] = sa[i];
        l.stride_b[p] = sb[i];
        continue;
      }
    }
    l.size[l.ndim] = n;
    l.stride_a[l.ndim] = sa[i];
    l.stride_b[l.ndim] = sb[i];
    ++l.ndim;
  }
  if (l.ndim == 0) {  // a single element
    l.ndim = 1;
    l.size[0] = 1;
  }
  return l;
}

// Whether `full` walks the layout contiguously and `small` is broadcast along every dimension
// but at most one, where it steps by 1; if so, small's index for output i is (i / inner) % mid.
bool one_value_per_row(const Layout& l, const int64_t* full, const int64_t* small, int64_t& inner,
                       int64_t& mid) {
  int64_t expected = 1;
  for (int k = l.ndim - 1; k >= 0; --k) {
    if (full[k] != expected) return false;
    expected *= l.size[k];
  }
  int varying = -1;
  for (int k = 0; k < l.ndim; ++k) {
    if (small[k] == 0) continue;
    if (small[k] != 1 || varying >= 0) return false;
    varying = k;
  }
  inner = 1;
  for (int k = varying + 1; k < l.ndim; ++k) inner *= l.size[k];
  mid = varying >= 0 ? l.size[varying] : 1;
  return true;
}

template <class Index, class F>
__global__ void row_value_kernel(const float* full, const float* small, float* out, Index n,
                                 Index inner, Index mid, F f) {
  grid_stride_loop(n, [&](Index i) { out[i] = f(full[i], small[(i / inner) % mid]); });
}

// inner is a multiple of 4, so each float4 lies in one row and needs one broadcast value.
template <class Index, class F>
__global__ void row_value_vec4_kernel(const float* full, const float* small, float* out, Index n4,
                                      Index inner4, Index mid, F f) {
  const float4* full4 = reinterpret_cast<const float4*>(full);
  float4* out4 = reinterpret_cast<float4*>(out);
  grid_stride_loop(n4, [&](Index i) {
    const float s = small[(i / inner4) % mid];
    const float4 v = full4[i];
    out4[i] = make_float4(f(v.x, s), f(v.y, s), f(v.z, s), f(v.w, s));
  });
}

// The unrolled loop keeps the layout's arrays in constant-indexed registers (a run-time index
// would move them to local memory).
template <class Index>
__global__ void general_kernel(const float* a, const float* b, float* out, Index n, const Layout l,
                               BinaryFn f) {
  grid_stride_loop(n, [&](Index i) {
    Index rest = i, offset_a = 0, offset_b = 0;
#pragma unroll
    for (int k = kMaxDims - 1; k >= 0; --k) {
      if (k < l.ndim) {
        const Index size = Index(l.size[k]);
        const Index index = rest % size;
        rest /= size;
        offset_a += index * Index(l.stride_a[k]);
        offset_b += index * Index(l.stride_b[k]);
      }
    }
    out[i] = f(a[offset_a], b[offset_b]);
  });
}

template <class Index, class F>
void launch_row_value_indexed(const float* full, const float* small, float* out, int64_t n,
                              int64_t inner, int64_t mid, F f, cudaStream_t stream) {
  if (inner % 4 == 0 && aligned16(full) && aligned16(out)) {
    row_value_vec4_kernel<Index><<<grid_for(n / 4), kBlockSize, 0, stream>>>(
        full, small, out, Index(n / 4), Index(inner / 4), Index(mid), f);
  } else {
    row_value_kernel<Index><<<grid_for(n), kBlockSize, 0, stream>>>(full, small, out, Index(n),
                                                                    Index(inner), Index(mid), f);
  }
  NNX_CUDA_CHECK_LAUNCH();
}

// 32-bit index arithmetic (division above all) is several times cheaper than 64-bit; every
// offset into a, b and out is below n.
template <class F>
void launch_row_value(const float* full, const float* small, float* out, int64_t n, int64_t inner,
                      int64_t mid, F f, cudaStream_t stream) {
  if (n <= INT32_MAX)
    launch_row_value_indexed<uint32_t>(full, small, out, n, inner, mid, f, stream);
  else
    launch_row_value_indexed<uint64_t>(full, small, out, n, inner, mid, f, stream);
}

}  // namespace

void binary_same_shape(BinaryOp op, bool relu, const float* a, const float* b, float* out,
                       int64_t n, void* stream) {
  launch_elementwise(a, b, out, n, BinaryFn{op, relu}, static_cast<cudaStream_t>(stream));
}

void binary_broadcast(BinaryOp op, bool relu, const float* a, const int64_t* a_dims, int a_ndim,
                      const float* b, const int64_t* b_dims, int b_ndim, float* out,
                      const int64_t* out_dims, int out_ndim, void* stream_handle) {
  const Layout l = make_layout(a_dims, a_ndim, b_dims, b_ndim, out_dims, out_ndim);
  int64_t n = 1;
  for (int k = 0; k < l.ndim; ++k) n *= l.size[k];
  if (n == 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const BinaryFn fn{op, relu};
  if (l.ndim == 1 && l.stride_a[0] == 1 && l.stride_b[0] == 1) {
    launch_elementwise(a, b, out, n, fn, stream);
    return;
  }
  int64_t inner = 0, mid = 0;
  if (one_value_per_row(l, l.stride_a, l.stride_b, inner, mid)) {
    launch_row_value(a, b, out, n, inner, mid, fn, stream);
    return;
  }
  if (one_value_per_row(l, l.stride_b, l.stride_a, inner, mid)) {
    launch_row_value(b, a, out, n, inner, mid, FlippedFn{fn}, stream);
    return;
  }
  if (n <= INT32_MAX)
    general_kernel<uint32_t><<<grid_for(n), kBlockSize, 0, stream>>>(a, b, out, uint32_t(n), l, fn);
  else
    general_kernel<uint64_t><<<grid_for(n), kBlockSize, 0, stream>>>(a, b, out, uint64_t(n), l, fn);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
