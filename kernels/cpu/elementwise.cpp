// Broadcasting binary ops on the CPU: the output's dimensions are coalesced so that the innermost
// loop runs over the longest possible contiguous stretch, where each operand is either a
// contiguous row or one repeated value (the (N,C,1,1) against (N,C,H,W) case becomes N*C rows of
// H*W elements plus one scalar each).
#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cstring>

#include "nnx/thread_pool.h"

namespace nnx::cpu {
namespace {

constexpr int64_t kGrain = int64_t(1) << 15;

// The output's dimensions with each operand's element strides (0 where it is broadcast), with
// size-1 dimensions dropped and neighbours merged where both operands allow it.
struct Layout {
  int ndim = 0;
  int64_t size[Shape::kMaxDims];
  int64_t stride_a[Shape::kMaxDims];
  int64_t stride_b[Shape::kMaxDims];
};

// Element strides of a contiguous operand of shape `in`, right-aligned against `out`.
Shape broadcast_strides(const Shape& in, const Shape& out) {
  Shape strides;
  strides.resize(out.size());
  int lead = out.size() - in.size();
  int64_t step = 1;
  for (int i = out.size() - 1; i >= 0; --i) {
    int j = i - lead;
    strides[i] = (j < 0 || in[j] == 1) ? 0 : step;
    if (j >= 0) step *= in[j];
  }
  return strides;
}

Layout make_layout(const Shape& a_shape, const Shape& b_shape, const Shape& out_shape) {
  Shape sa = broadcast_strides(a_shape, out_shape);
  Shape sb = broadcast_strides(b_shape, out_shape);
  Layout l;
  for (int i = 0; i < out_shape.size(); ++i) {
    int64_t n = out_shape[i];
    if (n == 1) continue;
    if (l.ndim > 0) {
      int p = l.ndim - 1;
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
    l.stride_a[0] = l.stride_b[0] = 0;
  }
  return l;
}

// Calls row(out_offset, a_offset, b_offset, count) for the innermost stretches covering output
// elements [begin, end). The innermost strides are 0 or 1 by construction.
template <class Row>
void for_each_row(const Layout& l, int64_t begin, int64_t end, Row&& row) {
  const int inner_dim = l.ndim - 1;
  const int64_t inner = l.size[inner_dim];
  int64_t index[Shape::kMaxDims] = {};
  int64_t rest = begin / inner;
  int64_t off_a = 0, off_b = 0;
  for (int k = inner_dim - 1; k >= 0; --k) {
    index[k] = rest % l.size[k];
    rest /= l.size[k];
    off_a += index[k] * l.stride_a[k];
    off_b += index[k] * l.stride_b[k];
  }
  int64_t col = begin % inner;
  for (int64_t pos = begin; pos < end;) {
    int64_t count = std::min(inner - col, end - pos);
    row(pos, off_a + col * l.stride_a[inner_dim], off_b + col * l.stride_b[inner_dim], count);
    pos += count;
    col = 0;
    for (int k = inner_dim - 1; k >= 0; --k) {  // odometer step over the outer dimensions
      off_a += l.stride_a[k];
      off_b += l.stride_b[k];
      if (++index[k] < l.size[k]) break;
      off_a -= l.stride_a[k] * l.size[k];
      off_b -= l.stride_b[k] * l.size[k];
      index[k] = 0;
    }
  }
}

struct AddFn {
  float operator()(float x, float y) const { return x + y; }
};
struct SubFn {
  float operator()(float x, float y) const { return x - y; }
};
struct MulFn {
  float operator()(float x, float y) const { return x * y; }
};

// One innermost stretch; each stride is 0 (a repeated value) or 1 (a contiguous row).
template <class F>
void binary_row(F f, const float* __restrict a, int64_t sa, const float* __restrict b, int64_t sb,
                float* __restrict out, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else if (sa == 1) {
    const float bv = *b;
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], bv);
  } else if (sb == 1) {
    const float av = *a;
    for (int64_t i = 0; i < n; ++i) out[i] = f(av, b[i]);
  } else {
    const float v = f(*a, *b);
    for (int64_t i = 0; i < n; ++i) out[i] = v;
  }
}

template <class F>
void inplace_row(F f, float* __restrict acc, const float* __restrict b, int64_t sb, int64_t n) {
  if (sb == 1) {
    for (int64_t i = 0; i < n; ++i) acc[i] = f(acc[i], b[i]);
  } else {
    const float bv = *b;
    for (int64_t i = 0; i < n; ++i) acc[i] = f(acc[i], bv);
  }
}

template <class F>
void run_binary(F f, const float* a, const Shape& a_shape, const float* b, const Shape& b_shape,
                float* out, const Shape& out_shape, ThreadPool* pool, const Epilogue& epilogue) {
  const int64_t total = out_shape.numel();
  if (total == 0) return;
  const Layout l = make_layout(a_shape, b_shape, out_shape);
  const int64_t sa = l.stride_a[l.ndim - 1], sb = l.stride_b[l.ndim - 1];
  parallel_for(pool, total, kGrain, [&](int64_t begin, int64_t end) {
    for_each_row(l, begin, end, [&](int64_t o, int64_t ia, int64_t ib, int64_t n) {
      binary_row(f, a + ia, sa, b + ib, sb, out + o, n);
      apply_epilogue(epilogue, out + o, n);
    });
  });
}

template <class F>
void run_inplace(F f, float* acc, const Shape& acc_shape, const float* b, const Shape& b_shape,
                 ThreadPool* pool, const Epilogue& epilogue) {
  const int64_t total = acc_shape.numel();
  if (total == 0) return;
  const Layout l = make_layout(acc_shape, b_shape, acc_shape);
  const int64_t sb = l.stride_b[l.ndim - 1];
  parallel_for(pool, total, kGrain, [&](int64_t begin, int64_t end) {
    for_each_row(l, begin, end, [&](int64_t o, int64_t, int64_t ib, int64_t n) {
      inplace_row(f, acc + o, b + ib, sb, n);
      apply_epilogue(epilogue, acc + o, n);
    });
  });
}

}  // namespace

void sum_to_shape(const float* g, const Shape& g_shape, float* out, const Shape& out_shape,
                  ThreadPool* pool) {
  const int64_t total = out_shape.numel();
  if (total == 0) return;
  if (total == g_shape.numel()) {  // nothing broadcast: the same elements in the same order
    std::memcpy(out, g, size_t(total) * sizeof(float));
    return;
  }
  // g's dims split into kept ones (out's, in order) and summed ones, each merged with its
  // inner neighbour where g is contiguous across both; strides are g's.
  const Shape sa = broadcast_strides(out_shape, g_shape);
  int64_t kept_size[Shape::kMaxDims], kept_stride[Shape::kMaxDims];
  int64_t sum_size[Shape::kMaxDims], sum_stride[Shape::kMaxDims];
  int nk = 0, ns = 0;
  int64_t step = 1;
  int64_t g_stride[Shape::kMaxDims];
  for (int i = g_shape.size() - 1; i >= 0; --i) {
    g_stride[i] = step;
    step *= g_shape[i];
  }
  for (int i = 0; i < g_shape.size(); ++i) {
    const int64_t n = g_shape[i];
    if (n == 1) continue;
    const bool kept = sa[i] != 0;
    int64_t* size = kept ? kept_size : sum_size;
    int64_t* stride = kept ? kept_stride : sum_stride;
    int& count = kept ? nk : ns;
    if (count > 0 && stride[count - 1] == g_stride[i] * n) {
      size[count - 1] *= n;
      stride[count - 1] = g_stride[i];
      continue;
    }
    size[count] = n;
    stride[count] = g_stride[i];
    ++count;
  }
  int64_t inner = 1;  // the innermost summed run, contiguous when its stride is 1
  int64_t inner_stride = 0;
  if (ns > 0) {
    inner = sum_size[ns - 1];
    inner_stride = sum_stride[ns - 1];
    --ns;
  }
  int64_t outer_count = 1;
  for (int k = 0; k < ns; ++k) outer_count *= sum_size[k];
  const int64_t grain =
      std::max<int64_t>(1, kGrain / std::max<int64_t>(1, g_shape.numel() / total));
  parallel_for(pool, total, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      int64_t base = 0, rest = o;
      for (int k = nk - 1; k >= 0; --k) {
        base += (rest % kept_size[k]) * kept_stride[k];
        rest /= kept_size[k];
      }
      double acc = 0;
      for (int64_t r = 0; r < outer_count; ++r) {
        int64_t off = base, q = r;
        for (int k = ns - 1; k >= 0; --k) {
          off += (q % sum_size[k]) * sum_stride[k];
          q /= sum_size[k];
        }
        const float* p = g + off;
        if (inner_stride == 1) {
          for (int64_t i = 0; i < inner; ++i) acc += p[i];
        } else {
          for (int64_t i = 0; i < inner; ++i) acc += p[i * inner_stride];
        }
      }
      out[o] = float(acc);
    }
  });
}

void binary_broadcast(BinaryOp op, const float* a, const Shape& a_shape, const float* b,
                      const Shape& b_shape, float* out, const Shape& out_shape, ThreadPool* pool,
                      const Epilogue& epilogue) {
  switch (op) {
    case BinaryOp::add:
      return run_binary(AddFn{}, a, a_shape, b, b_shape, out, out_shape, pool, epilogue);
    case BinaryOp::sub:
      return run_binary(SubFn{}, a, a_shape, b, b_shape, out, out_shape, pool, epilogue);
    case BinaryOp::mul:
      return run_binary(MulFn{}, a, a_shape, b, b_shape, out, out_shape, pool, epilogue);
  }
}

void binary_broadcast_inplace(BinaryOp op, float* acc, const Shape& acc_shape, const float* b,
                              const Shape& b_shape, ThreadPool* pool, const Epilogue& epilogue) {
  switch (op) {
    case BinaryOp::add:
      return run_inplace(AddFn{}, acc, acc_shape, b, b_shape, pool, epilogue);
    case BinaryOp::sub:
      return run_inplace(SubFn{}, acc, acc_shape, b, b_shape, pool, epilogue);
    case BinaryOp::mul:
      return run_inplace(MulFn{}, acc, acc_shape, b, b_shape, pool, epilogue);
  }
}

}  // namespace nnx::cpu
