// Shape: inline dimensions, element counts with overflow checks.
#include "nnx/shape.h"

#include <climits>
#include <sstream>

namespace nnx {

int64_t Shape::at(int i) const {
  return d_[wrap_dim(i, n_)];
}

void Shape::push_back(int64_t v) {
  NNX_CHECK(n_ < kMaxDims, ErrorKind::shape, "tensors have at most ", kMaxDims, " dimensions");
  d_[n_++] = v;
}

void Shape::insert(int pos, int64_t v) {
  NNX_CHECK(n_ < kMaxDims, ErrorKind::shape, "tensors have at most ", kMaxDims, " dimensions");
  NNX_CHECK(pos >= 0 && pos <= n_, ErrorKind::usage, "insert position ", pos, " out of range");
  for (int i = n_; i > pos; --i) d_[i] = d_[i - 1];
  d_[pos] = v;
  ++n_;
}

void Shape::erase(int pos) {
  NNX_CHECK(pos >= 0 && pos < n_, ErrorKind::usage, "erase position ", pos, " out of range");
  for (int i = pos; i + 1 < n_; ++i) d_[i] = d_[i + 1];
  --n_;
}

void Shape::resize(int n, int64_t fill) {
  NNX_CHECK(n >= 0 && n <= kMaxDims, ErrorKind::shape, "tensors have at most ", kMaxDims,
            " dimensions");
  for (int i = n_; i < n; ++i) d_[i] = fill;
  n_ = n;
}

int64_t Shape::numel() const {
  int64_t total = 1;
  for (int i = 0; i < n_; ++i) {
    NNX_CHECK(d_[i] >= 0, ErrorKind::shape, "negative dimension ", d_[i], " in shape ", str());
    NNX_CHECK(!__builtin_mul_overflow(total, d_[i], &total), ErrorKind::shape,
              "the element count of shape ", str(), " overflows");
  }
  return total;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << '[';
  for (int i = 0; i < n_; ++i) out << (i ? ", " : "") << d_[i];
  out << ']';
  return out.str();
}

bool Shape::operator==(const Shape& o) const {
  if (n_ != o.n_) return false;
  for (int i = 0; i < n_; ++i)
    if (d_[i] != o.d_[i]) return false;
  return true;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides;
  strides.resize(shape.size());
  int64_t s = 1;
  for (int i = shape.size() - 1; i >= 0; --i) {
    strides[i] = s;
    // Saturate: an absurd shape must reach the size checks, not overflow here.
    if (__builtin_mul_overflow(s, std::max<int64_t>(shape[i], 1), &s)) s = INT64_MAX;
  }
  return strides;
}

int wrap_dim(int64_t dim, int ndim) {
  int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  NNX_CHECK(dim >= lo && dim <= hi, ErrorKind::shape, "dimension ", dim,
            " out of range (expected in [", lo, ", ", hi, "])");
  return int(dim < 0 ? dim + std::max(ndim, 1) : dim);
}

}  // namespace nnx
