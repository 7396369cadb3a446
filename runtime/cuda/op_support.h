// What the ops' CUDA forwards share (CUDA builds only; ops/*.cpp include it under
// NNX_WITH_CUDA): the scope an op runs in (its device current, its stream this thread's current
// stream, so temporaries are ordered on it), device copies of CPU-held parameters and small
// per-op constants, and input checks.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "nnx/cuda.h"
#include "nnx/op.h"
#include "nnx/tensor.h"
#include "runtime/cuda/cuda_runtime.h"

namespace nnx::cuda {

class OpScope {
 public:
  // Throws Error(usage) unless ctx.device is a CUDA device, Error(device) if it is not there.
  OpScope(const ExecContext& ctx, std::string op);
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

  Device device() const { return device_; }
  void* stream() const { return stream_; }
  const std::string& op() const { return op_; }

  // A contiguous tensor on the op's device, from the caching allocator, ordered on the stream.
  Tensor empty(const Shape& shape, DType dtype = DType::f32) const;

  // `t` as a contiguous float32 tensor on the op's device: `t` itself when it already is one, a
  // gathered copy when it is strided. Throws Error(usage) for a tensor on another device,
  // Error(unsupported) for another dtype.
  Tensor input(const Tensor& t) const;
  // The same for any dtype (data movement: Cat, Split, Constant).
  Tensor contiguous(const Tensor& t) const;
  // `t` itself, checked to be defined and on the op's device (any dtype and strides).
  const Tensor& on_device(const Tensor& t) const;
  // The same for an output the executor allocated (contiguous float32 on the device).
  float* output(Tensor& t) const;
  // The bytes of an output of any dtype (contiguous on the device).
  void* output_bytes(Tensor& t) const;

  // Copies src's bytes into dst (same shape and dtype, both contiguous on the device).
  void copy(Tensor& dst, const Tensor& src) const;

 private:
  std::string op_;
  Device device_;
  void* stream_;
  DeviceGuard device_guard_;
  StreamGuard stream_guard_;
};

// A parameter's values on `device`: the tensor itself when it is there already, else a
// contiguous copy made on first use and kept while the CPU tensor's storage lives (a parameter
// replaced through set_param gets a new storage, so a new copy). Values changed in place in the
// same storage after the first copy are not seen. Thread-safe.
Tensor device_param(const Tensor& param, Device device);
// The same rounded to `dtype` (f16 or bf16) on `device`, made on first use on the current stream
// and kept like device_param's copies (reduced-precision convolutions read their weights so).
Tensor device_param_as(const Tensor& param, Device device, DType dtype);

// Small float arrays an op computes on the host (BatchNorm's scale and shift, a pruner's gate) on
// `device`, kept per (owner, slot) and uploaded again only when the values change; the upload
// completes before this returns. Thread-safe; the pointer stays valid until the values of the
// same (owner, slot) change.
const float* device_constants(const void* owner, int slot, std::span<const float> values,
                              Device device);

}  // namespace nnx::cuda
