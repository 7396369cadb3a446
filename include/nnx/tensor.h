// The tensor value type: shared reference-counted storage plus shape, strides and offset.
// Copying a Tensor is cheap and shares the storage; clone() copies the data.
#pragma once

#include <memory>
#include <string>

#include "nnx/allocator.h"
#include "nnx/dtype.h"
#include "nnx/shape.h"

namespace nnx {

class NNX_API Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor empty(const Shape& shape, DType dtype, Allocator& allocator);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  // A view of `storage` starting `offset` elements in; strides default to contiguous.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                             int64_t offset = 0);
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                             const Shape& strides, DType dtype, int64_t offset);
  // A 0-dim tensor.
  static Tensor scalar(double value, DType dtype = DType::f32);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int dim() const { return shape_.size(); }
  int64_t size(int i) const { return shape_.at(i); }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const;
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  size_t element_size() const { return dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to the first element; data<T>() checks that T matches dtype().
  void* raw_data() const;
  template <class T>
  T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(raw_data());
  }

  // Views (share storage).
  Tensor view(const Shape& shape) const;     // needs a contiguous tensor
  Tensor reshape(const Shape& shape) const;  // one dim may be -1; copies if not contiguous
  Tensor flatten(int start_dim = 0, int end_dim = -1) const;
  Tensor unsqueeze(int dim) const;
  Tensor slice(int dim, int64_t start, int64_t end) const;
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  // Copies.
  Tensor contiguous() const;  // this if already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;  // this if already that dtype
  Tensor to(Device device) const;
  // Copies src's elements into this tensor (same shape; any strides; dtype converted).
  void copy_from(const Tensor& src);
  void fill(double value);

  // Element access through double, for tests and tools (not for kernels).
  double item() const;
  double at_flat(int64_t contiguous_index) const;

  // Bytes equal? (same shape and dtype; for round-trip checks)
  bool bitwise_equal(const Tensor& other) const;
  std::string str() const;  // "float32[1, 3, 224, 224]"

 private:
  void check_dtype(DType expected) const;
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

// Device copies are supplied by backends (CUDA registers cudaMemcpy-based ones).
using DeviceCopyFn = void (*)(void* dst, Device dst_device, const void* src, Device src_device,
                              size_t nbytes);
NNX_API void register_device_copy(Device::Type type, DeviceCopyFn fn);

}  // namespace nnx
