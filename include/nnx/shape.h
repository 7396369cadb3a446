// A tensor's dimensions (at most 8), held inline so that making views never allocates.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "nnx/error.h"

namespace nnx {

class NNX_API Shape {
 public:
  static constexpr int kMaxDims = 8;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(std::span<const int64_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(const std::vector<int64_t>& dims) { assign(dims.begin(), dims.end()); }

  int size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int64_t operator[](int i) const { return d_[i]; }
  int64_t& operator[](int i) { return d_[i]; }
  // Python-style index: -1 is the last dimension.
  int64_t at(int i) const;
  const int64_t* begin() const { return d_.data(); }
  const int64_t* end() const { return d_.data() + n_; }
  int64_t* begin() { return d_.data(); }
  int64_t* end() { return d_.data() + n_; }
  int64_t back() const { return d_[n_ - 1]; }
  void push_back(int64_t v);
  void insert(int pos, int64_t v);
  void erase(int pos);
  void resize(int n, int64_t fill = 0);
  std::vector<int64_t> vec() const { return {begin(), end()}; }
  std::span<const int64_t> span() const { return {begin(), end()}; }

  // Product of the dimensions; throws Error(shape) if it overflows int64.
  int64_t numel() const;
  std::string str() const;  // "[1, 3, 224, 224]"

  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  template <class It>
  void assign(It first, It last) {
    n_ = 0;
    for (; first != last; ++first) push_back(*first);
  }
  std::array<int64_t, kMaxDims> d_{};
  int n_ = 0;
};

NNX_API Shape contiguous_strides(const Shape& shape);
// Normalizes a Python-style dim index against `ndim`; throws Error(shape) if out of range.
NNX_API int wrap_dim(int64_t dim, int ndim);

}  // namespace nnx
