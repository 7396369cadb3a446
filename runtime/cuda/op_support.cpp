// Shared pieces of the ops' CUDA forwards (see op_support.h).
#include "runtime/cuda/op_support.h"

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/tensor_ops.h"
#include "nnx/cuda.h"
#include "nnx/error.h"

namespace nnx::cuda {
namespace {

Device checked_device(const ExecContext& ctx, const std::string& op) {
  NNX_CHECK(ctx.device.is_cuda(), ErrorKind::usage, op, ": CUDA forward called for ",
            ctx.device.str());
  init();
  check_device(ctx.device.index);
  return ctx.device;
}

}  // namespace

OpScope::OpScope(const ExecContext& ctx, std::string op)
    : op_(std::move(op)),
      device_(checked_device(ctx, op_)),
      stream_(ctx.stream),
      device_guard_(ctx.device.index),
      stream_guard_(ctx.stream, ctx.device.index) {}

Tensor OpScope::empty(const Shape& shape, DType dtype) const {
  return Tensor::empty(shape, dtype, device_);
}

Tensor OpScope::input(const Tensor& t) const {
  NNX_CHECK(!t.defined() || t.dtype() == DType::f32, ErrorKind::unsupported, op_,
            " on CUDA takes float32 input, found ", dtype_name(t.dtype()));
  return contiguous(t);
}

const Tensor& OpScope::on_device(const Tensor& t) const {
  NNX_CHECK(t.defined(), ErrorKind::usage, op_, ": an input is an undefined tensor");
  NNX_CHECK(t.device() == device_, ErrorKind::usage, op_, ": expected an input on ", device_.str(),
            ", found one on ", t.device().str());
  return t;
}

Tensor OpScope::contiguous(const Tensor& t) const {
  on_device(t);
  if (t.is_contiguous()) return t;
  Tensor out = empty(t.shape(), t.dtype());
  strided_copy(t.raw_data(), t.shape().span().data(), t.strides().span().data(), t.dim(),
               t.element_size(), out.raw_data(), stream_);
  return out;
}

float* OpScope::output(Tensor& t) const {
  NNX_CHECK(t.defined() && t.device() == device_ && t.dtype() == DType::f32 && t.is_contiguous(),
            ErrorKind::usage, op_, ": expected a contiguous float32 output on ", device_.str(),
            ", found ", t.defined() ? t.str() : std::string("an undefined tensor"));
  return t.data<float>();
}

void* OpScope::output_bytes(Tensor& t) const {
  NNX_CHECK(t.defined() && t.device() == device_ && t.is_contiguous(), ErrorKind::usage, op_,
            ": expected a contiguous output on ", device_.str(), ", found ",
            t.defined() ? t.str() : std::string("an undefined tensor"));
  return t.raw_data();
}

void OpScope::copy(Tensor& dst, const Tensor& src) const {
  NNX_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype() && dst.is_contiguous() &&
                src.is_contiguous() && dst.device() == device_ && src.device() == device_,
            ErrorKind::usage, op_, ": device copy of ", src.str(), " into ", dst.str());
  if (dst.nbytes() == 0 || dst.raw_data() == src.raw_data()) return;
  NNX_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(),
                                 cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream_)));
}

// ---- parameters

namespace {

struct ParamCopy {
  std::weak_ptr<Storage> source;
  Shape shape, strides;
  DType dtype = DType::f32;
  Tensor copy;
};

std::mutex param_mutex;
// By (storage address, element offset, device index, the copy's dtype).
std::map<std::tuple<const Storage*, int64_t, int, DType>, ParamCopy> param_copies;

// The copy of `param` that make() makes, kept while param's storage lives. make() runs without
// the lock held: it may ask for another cached copy (device_param_as does); where two threads
// make the same copy, the first one kept wins.
Tensor cached_copy(const Tensor& param, Device device, DType dtype,
                   const std::function<Tensor()>& make) {
  const auto key = std::make_tuple(param.storage().get(), param.offset(), device.index, dtype);
  auto kept = [&]() -> Tensor {  // with the lock held
    if (auto it = param_copies.find(key); it != param_copies.end()) {
      const ParamCopy& c = it->second;
      if (c.source.lock() == param.storage() && c.shape == param.shape() &&
          c.strides == param.strides() && c.dtype == param.dtype())
        return c.copy;
    }
    return Tensor();
  };
  {
    std::lock_guard<std::mutex> lock(param_mutex);
    if (Tensor copy = kept(); copy.defined()) return copy;
  }
  Tensor made = make();
  std::lock_guard<std::mutex> lock(param_mutex);
  if (Tensor copy = kept(); copy.defined()) return copy;
  for (auto it = param_copies.begin(); it != param_copies.end();)
    it = it->second.source.expired() ? param_copies.erase(it) : std::next(it);
  param_copies[key] =
      ParamCopy{param.storage(), param.shape(), param.strides(), param.dtype(), made};
  return made;
}

}  // namespace

Tensor device_param(const Tensor& param, Device device) {
  NNX_CHECK(param.defined(), ErrorKind::usage, "device_param of an undefined tensor");
  if (param.device() == device) return param.contiguous();
  NNX_CHECK(param.device().is_cpu(), ErrorKind::usage, "a parameter on ", param.device().str(),
            " used on ", device.str());
  return cached_copy(param, device, param.dtype(), [&] { return param.contiguous().to(device); });
}

Tensor device_param_as(const Tensor& param, Device device, DType dtype) {
  NNX_CHECK(dtype == DType::f16 || dtype == DType::bf16, ErrorKind::usage,
            "device_param_as: f16 or bf16, found ", dtype_name(dtype));
  return cached_copy(param, device, dtype, [&] {
    // The float32 values on the device (a non-f32 parameter converted on the host first).
    const Tensor full = param.dtype() == DType::f32
                            ? device_param(param, device)
                            : param.to(Device::cpu()).to(DType::f32).contiguous().to(device);
    Tensor rounded = Tensor::empty(param.shape(), dtype, device);
    const cudaStream_t stream = current_cuda_stream(device.index);
    round_to(dtype == DType::f16 ? ConvIo::f16 : ConvIo::bf16, full.data<float>(),
             rounded.raw_data(), full.numel(), stream);
    // Done before the copy is shared: other Executors read it from streams of their own.
    NNX_CUDA_CHECK(cudaStreamSynchronize(stream));
    return rounded;
  });
}

// ---- per-op constants

namespace {

struct Constants {
  std::vector<float> values;
  Tensor device_copy;
};

std::mutex constants_mutex;
std::map<std::tuple<const void*, int, int>, Constants> constants;

}  // namespace

const float* device_constants(const void* owner, int slot, std::span<const float> values,
                              Device device) {
  std::lock_guard<std::mutex> lock(constants_mutex);
  Constants& c = constants[std::make_tuple(owner, slot, device.index)];
  const bool same =
      c.device_copy.defined() && c.values.size() == values.size() &&
      (values.empty() || std::memcmp(c.values.data(), values.data(), values.size_bytes()) == 0);
  if (!same) {
    Tensor host = Tensor::empty(Shape{int64_t(values.size())});
    if (!values.empty()) std::memcpy(host.data<float>(), values.data(), values.size_bytes());
    c.device_copy = host.to(device);  // synchronous: done before any stream reads it
    c.values.assign(values.begin(), values.end());
  }
  return c.device_copy.data<float>();
}

}  // namespace nnx::cuda
