// Tensor: views over shared storage, and the CPU copies and conversions between dtypes.
#include "nnx/tensor.h"

#include <sys/mman.h>

#include <array>
#include <cmath>
#include <cstring>
#include <mutex>
#include <sstream>

#include "nnx/cuda.h"
#include "nnx/error.h"

namespace nnx {
namespace {

std::array<DeviceCopyFn, 2> device_copies{};
std::mutex device_copy_mutex;

double load_as_double(const void* p, DType dtype) {
  switch (dtype) {
    case DType::f32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::f64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::f16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return half_to_float(v);
    }
    case DType::bf16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return bf16_to_float(v);
    }
    case DType::i64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return double(v);
    }
    case DType::i32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::i16: {
      int16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    case DType::i8:
      return *static_cast<const int8_t*>(p);
    case DType::u8:
      return *static_cast<const uint8_t*>(p);
    case DType::boolean:
      return *static_cast<const uint8_t*>(p) != 0;
  }
  return 0;
}

template <class I>
I saturating_int(double v) {
  if (std::isnan(v)) return 0;
  return I(v);  // C++ conversion truncates toward zero, as PyTorch's casts do
}

void store_from_double(void* p, DType dtype, double v) {
  switch (dtype) {
    case DType::f32: {
      float f = float(v);
      std::memcpy(p, &f, 4);
      return;
    }
    case DType::f64:
      std::memcpy(p, &v, 8);
      return;
    case DType::f16: {
      uint16_t h = float_to_half(float(v));
      std::memcpy(p, &h, 2);
      return;
    }
    case DType::bf16: {
      uint16_t h = float_to_bf16(float(v));
      std::memcpy(p, &h, 2);
      return;
    }
    case DType::i64: {
      int64_t i = saturating_int<int64_t>(v);
      std::memcpy(p, &i, 8);
      return;
    }
    case DType::i32: {
      int32_t i = saturating_int<int32_t>(v);
      std::memcpy(p, &i, 4);
      return;
    }
    case DType::i16: {
      int16_t i = saturating_int<int16_t>(v);
      std::memcpy(p, &i, 2);
      return;
    }
    case DType::i8:
      *static_cast<int8_t*>(p) = saturating_int<int8_t>(v);
      return;
    case DType::u8:
      *static_cast<uint8_t*>(p) = saturating_int<uint8_t>(v);
      return;
    case DType::boolean:
      *static_cast<uint8_t*>(p) = v != 0;
      return;
  }
}

// Calls fn(element_offset) for every element of (shape, strides) in C order.
template <class Fn>
void for_each_offset(const Shape& shape, const Shape& strides, int64_t base, Fn&& fn) {
  int nd = shape.size();
  if (shape.numel() == 0) return;
  std::array<int64_t, Shape::kMaxDims> idx{};
  int64_t off = base;
  while (true) {
    fn(off);
    int d = nd - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace

void register_device_copy(Device::Type type, DeviceCopyFn fn) {
  std::lock_guard<std::mutex> lock(device_copy_mutex);
  device_copies[size_t(type)] = fn;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return empty(shape, dtype, allocator_for(device));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Allocator& allocator) {
  size_t bytes = 0;
  NNX_CHECK(!__builtin_mul_overflow(size_t(shape.numel()), dtype_size(dtype), &bytes),
            ErrorKind::shape, "a tensor of shape ", shape.str(), " and dtype ", dtype_name(dtype),
            " has more bytes than memory can address");
  return from_storage(Storage::allocate(bytes, allocator), shape, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
#if !defined(FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) && !defined(__SANITIZE_ADDRESS__)
  // Large zeros (parameters before their weights replace them) are fresh anonymous pages, which
  // the kernel zeroes on first touch: a tensor replaced unwritten costs no time and no resident
  // memory. (Sanitizer and fuzz builds keep the allocator, which checks and poisons.)
  constexpr size_t kLazyZerosBytes = size_t(1) << 20;
  size_t bytes = 0;
  if (device.is_cpu() &&
      !__builtin_mul_overflow(size_t(shape.numel()), dtype_size(dtype), &bytes) &&
      bytes >= kLazyZerosBytes) {
    void* pages =
        ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages != MAP_FAILED) {
      auto unmap = [bytes](void* p) { ::munmap(p, bytes); };
      return from_storage(Storage::wrap(pages, bytes, Device::cpu(), unmap), shape, dtype);
    }
  }
#endif
  Tensor t = empty(shape, dtype, device);
  NNX_CHECK(device.is_cpu(), ErrorKind::unsupported, "zeros() on ", device.str(),
            ": create on the CPU and copy");
  std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) {
  return full(Shape{}, value, dtype);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                            int64_t offset) {
  return from_storage(std::move(storage), shape, contiguous_strides(shape), dtype, offset);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape,
                            const Shape& strides, DType dtype, int64_t offset) {
  NNX_CHECK(storage != nullptr, ErrorKind::usage, "from_storage: null storage");
  NNX_CHECK(shape.size() == strides.size(), ErrorKind::usage, "from_storage: shape ", shape.str(),
            " and strides ", strides.str(), " differ in rank");
  NNX_CHECK(offset >= 0, ErrorKind::shape, "negative storage offset ", offset);
  // The furthest element must lie inside the storage.
  int64_t numel = shape.numel();
  if (numel > 0) {
    int64_t last = offset;
    for (int i = 0; i < shape.size(); ++i) {
      NNX_CHECK(strides[i] >= 0, ErrorKind::shape, "negative stride ", strides[i]);
      int64_t step;
      NNX_CHECK(!__builtin_mul_overflow(shape[i] - 1, strides[i], &step) &&
                    !__builtin_add_overflow(last, step, &last),
                ErrorKind::shape, "view of shape ", shape.str(), " overflows its storage");
    }
    uint64_t needed = (uint64_t(last) + 1) * dtype_size(dtype);
    NNX_CHECK(last < (int64_t(1) << 60) && needed <= storage->nbytes(), ErrorKind::shape,
              "view of shape ", shape.str(), " at offset ", offset, " needs ", needed,
              " bytes, storage holds ", storage->nbytes());
  }
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = shape;
  t.strides_ = strides;
  t.offset_ = offset;
  t.dtype_ = dtype;
  return t;
}

Device Tensor::device() const {
  return storage_ ? storage_->device() : Device::cpu();
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  NNX_CHECK(defined(), ErrorKind::usage, "use of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * int64_t(dtype_size(dtype_));
}

void Tensor::check_dtype(DType expected) const {
  NNX_CHECK(dtype_ == expected, ErrorKind::usage, "tensor is ", dtype_name(dtype_),
            ", accessed as ", dtype_name(expected));
}

Tensor Tensor::view(const Shape& shape) const {
  NNX_CHECK(is_contiguous(), ErrorKind::usage, "view() of a non-contiguous tensor ", str());
  NNX_CHECK(shape.numel() == numel(), ErrorKind::shape, "cannot view ", shape_.str(), " as ",
            shape.str());
  return from_storage(storage_, shape, dtype_, offset_);
}

Tensor Tensor::reshape(const Shape& requested) const {
  Shape shape = requested;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      NNX_CHECK(infer < 0, ErrorKind::shape, "reshape ", requested.str(), ": only one -1 allowed");
      infer = i;
    } else {
      NNX_CHECK(shape[i] >= 0, ErrorKind::shape, "reshape to ", requested.str());
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    NNX_CHECK(known != 0 && numel() % known == 0, ErrorKind::shape, "cannot reshape ", shape_.str(),
              " to ", requested.str());
    shape[infer] = numel() / known;
  }
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::flatten(int start_dim, int end_dim) const {
  if (dim() == 0) return reshape(Shape{1});
  int s = wrap_dim(start_dim, dim()), e = wrap_dim(end_dim, dim());
  NNX_CHECK(s <= e, ErrorKind::shape, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape;
  for (int i = 0; i < s; ++i) shape.push_back(shape_[i]);
  int64_t prod = 1;
  for (int i = s; i <= e; ++i) prod *= shape_[i];
  shape.push_back(prod);
  for (int i = e + 1; i < dim(); ++i) shape.push_back(shape_[i]);
  return reshape(shape);
}

Tensor Tensor::unsqueeze(int d) const {
  int pos = wrap_dim(d, dim() + 1);
  Shape shape = shape_, strides = strides_;
  int64_t stride = pos < dim() ? shape_[pos] * strides_[pos] : 1;
  shape.insert(pos, 1);
  strides.insert(pos, stride);
  return from_storage(storage_, shape, strides, dtype_, offset_);
}

Tensor Tensor::slice(int d, int64_t start, int64_t end) const {
  int i = wrap_dim(d, dim());
  NNX_CHECK(0 <= start && start <= end && end <= shape_[i], ErrorKind::shape, "slice [", start,
            ", ", end, ") of dimension ", i, " with size ", shape_[i]);
  Shape shape = shape_;
  shape[i] = end - start;
  return from_storage(storage_, shape, strides_, dtype_, offset_ + start * strides_[i]);
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  return from_storage(storage_, shape, strides, dtype_, offset);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = empty(shape_, dtype, device());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor src = device.is_cpu() ? *this : contiguous();
  Tensor out = empty(shape_, dtype_, device);
  out.copy_from(src);
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  NNX_CHECK(src.shape() == shape_, ErrorKind::shape, "copy: shape ", src.shape().str(), " into ",
            shape_.str());
  if (numel() == 0) return;
  Device sd = src.device(), dd = device();
  if (!sd.is_cpu() || !dd.is_cpu()) {
    NNX_CHECK(src.dtype() == dtype_ && src.is_contiguous() && is_contiguous(),
              ErrorKind::unsupported,
              "copies between devices need contiguous tensors of one dtype");
    Device::Type backend = sd.is_cpu() ? dd.type : sd.type;
    if (backend == Device::Type::cuda) cuda::init();  // registers the CUDA copies on first use
    DeviceCopyFn fn;
    {
      std::lock_guard<std::mutex> lock(device_copy_mutex);
      fn = device_copies[size_t(backend)];
    }
    NNX_CHECK(fn != nullptr, ErrorKind::device, "no copy to ", dd.str(), " from ", sd.str(),
              ": this build has no CUDA backend");
    fn(raw_data(), dd, src.raw_data(), sd, nbytes());
    return;
  }
  if (src.dtype() == dtype_ && src.is_contiguous() && is_contiguous()) {
    std::memmove(raw_data(), src.raw_data(), nbytes());
    return;
  }
  // General path: walk both in C order (conversion through double is exact for every dtype but
  // int64 beyond 2^53, which same-dtype copies avoid below).
  size_t ssize = src.element_size(), dsize = element_size();
  char* sbase = static_cast<char*>(src.storage()->data());
  char* dbase = static_cast<char*>(storage_->data());
  std::vector<int64_t> src_offsets;
  src_offsets.reserve(size_t(numel()));
  for_each_offset(src.shape(), src.strides(), src.offset(),
                  [&](int64_t o) { src_offsets.push_back(o); });
  size_t k = 0;
  bool same = src.dtype() == dtype_;
  for_each_offset(shape_, strides_, offset_, [&](int64_t o) {
    const char* sp = sbase + src_offsets[k++] * ssize;
    char* dp = dbase + o * dsize;
    if (same)
      std::memcpy(dp, sp, dsize);
    else
      store_from_double(dp, dtype_, load_as_double(sp, src.dtype()));
  });
}

void Tensor::fill(double value) {
  NNX_CHECK(device().is_cpu(), ErrorKind::unsupported, "fill() on ", device().str());
  std::array<char, 8> bytes{};
  store_from_double(bytes.data(), dtype_, value);
  size_t es = element_size();
  char* base = static_cast<char*>(storage_->data());
  for_each_offset(shape_, strides_, offset_,
                  [&](int64_t o) { std::memcpy(base + o * es, bytes.data(), es); });
}

double Tensor::item() const {
  NNX_CHECK(numel() == 1, ErrorKind::shape, "item() of a tensor with ", numel(), " elements");
  return at_flat(0);
}

double Tensor::at_flat(int64_t index) const {
  NNX_CHECK(device().is_cpu(), ErrorKind::unsupported, "element access on ", device().str());
  NNX_CHECK(index >= 0 && index < numel(), ErrorKind::shape, "index ", index, " out of range");
  int64_t off = offset_;
  for (int d = dim() - 1; d >= 0; --d) {
    off += (index % shape_[d]) * strides_[d];
    index /= shape_[d];
  }
  return load_as_double(static_cast<char*>(storage_->data()) + off * int64_t(element_size()),
                        dtype_);
}

bool Tensor::bitwise_equal(const Tensor& other) const {
  if (shape_ != other.shape_ || dtype_ != other.dtype_) return false;
  Tensor a = contiguous(), b = other.contiguous();
  return std::memcmp(a.raw_data(), b.raw_data(), nbytes()) == 0;
}

std::string Tensor::str() const {
  std::ostringstream out;
  out << dtype_name(dtype_) << shape_.str();
  if (!device().is_cpu()) out << " on " << device().str();
  return out.str();
}

}  // namespace nnx
