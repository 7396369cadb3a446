// The CUDA backend's runtime: device discovery that never throws, registration of the allocator
// and copies with the core, per-thread current streams, and host/device copies.
#include "runtime/cuda/cuda_runtime.h"

#include <mutex>
#include <string>

#include "nnx/cuda.h"
#include "nnx/tensor.h"
#include "runtime/cuda/cuda_allocator.h"
#include "runtime/cuda/host_task.h"
#include "runtime/host_task.h"

namespace nnx::cuda {
namespace {

struct Probe {
  int count = 0;
  std::string reason;  // why count is 0
};

// Asked once: without a driver or device, cudaGetDeviceCount fails, and that must read as
// "no device", never as an abort.
const Probe& probe() {
  static const Probe result = [] {
    Probe p;
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      p.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(status);
    } else if (count <= 0) {
      p.reason = "cudaGetDeviceCount: no device";
    } else {
      p.count = count < kMaxDevices ? count : kMaxDevices;
    }
    return p;
  }();
  return result;
}

thread_local cudaStream_t current_streams[kMaxDevices] = {};

void check_stream_slot(int device) {
  NNX_CHECK(device >= 0 && device < kMaxDevices, ErrorKind::usage, "CUDA device index ", device,
            " out of range [0, ", kMaxDevices, ")");
}

void check_copy(Device dst_device, Device src_device) {
  NNX_CHECK(dst_device.is_cuda() || src_device.is_cuda(), ErrorKind::usage, "CUDA copy between ",
            src_device.str(), " and ", dst_device.str());
  if (dst_device.is_cuda()) check_device(dst_device.index);
  if (src_device.is_cuda()) check_device(src_device.index);
}

void copy_on_stream(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes,
                    cudaStream_t stream) {
  if (src_device.is_cpu()) {
    DeviceGuard guard(dst_device.index);
    NNX_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream));
  } else if (dst_device.is_cpu()) {
    DeviceGuard guard(src_device.index);
    NNX_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream));
  } else if (dst_device.index == src_device.index) {
    DeviceGuard guard(dst_device.index);
    NNX_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream));
  } else {
    DeviceGuard guard(dst_device.index);
    NNX_CUDA_CHECK(
        cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, nbytes, stream));
  }
}

// Tensor::copy_from's contract is synchronous: on return the destination holds the data and the
// source may be freed. Going through the current stream (not cudaMemcpy's legacy stream, which
// does not wait for non-blocking streams) orders the copy after the kernels that wrote the
// source.
void copy_sync(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  check_copy(dst_device, src_device);
  const Device copier = dst_device.is_cuda() ? dst_device : src_device;
  if (src_device.is_cuda() && dst_device.is_cuda() && src_device.index != dst_device.index) {
    // The copy runs on the destination's stream, which knows nothing of the source's work.
    NNX_CUDA_CHECK(cudaStreamSynchronize(current_cuda_stream(src_device.index)));
  }
  const cudaStream_t stream = current_cuda_stream(copier.index);
  copy_on_stream(dst, dst_device, src, src_device, nbytes, stream);
  if (src_device == dst_device && stream != nullptr) {
    // Within one device while the stream is captured into a CUDA graph (a TrainStep's backward
    // passing a gradient through a view): the copy is a node in stream order, which is all the
    // graph's later nodes need; a wait is not allowed there.
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
        status == cudaStreamCaptureStatusActive)
      return;
  }
  NNX_CUDA_CHECK(cudaStreamSynchronize(stream));
}

Allocator& allocator_factory(int device) {
  return caching_allocator(device);
}

}  // namespace

void check_device(int device) {
  const Probe& p = probe();
  NNX_CHECK(p.count > 0, ErrorKind::device, "cuda:", device,
            " requested but there is no CUDA device (", p.reason, ")");
  NNX_CHECK(device >= 0 && device < p.count, ErrorKind::device, "no CUDA device cuda:", device,
            ": ", p.count, " visible");
}

cudaStream_t current_cuda_stream(int device) {
  check_stream_slot(device);
  return current_streams[device];
}

bool available() {
  return probe().count > 0;
}

int device_count() {
  return probe().count;
}

std::string unavailable_reason() {
  return probe().reason;
}

std::string device_name(int device) {
  check_device(device);
  cudaDeviceProp properties{};
  NNX_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  return properties.name;
}

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_device_allocator(Device::Type::cuda, &allocator_factory);
    register_device_copy(Device::Type::cuda, &copy_sync);
    nnx::detail::HostTaskHooks hooks;
    hooks.capturing = &stream_capturing;
    hooks.pinned = &pinned_tensor;
    hooks.copy = &copy_async;
    hooks.launch = &launch_host_task;
    nnx::detail::set_host_task_hooks(hooks);
  });
}

Allocator& allocator(int device) {
  return caching_allocator(device);
}

void synchronize(int device) {
  check_device(device);
  DeviceGuard guard(device);
  NNX_CUDA_CHECK(cudaDeviceSynchronize());
}

void* create_stream(int device) {
  check_device(device);
  DeviceGuard guard(device);
  cudaStream_t stream = nullptr;
  NNX_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return stream;
}

void destroy_stream(void* stream) {
  if (stream == nullptr) return;
  // Blocks cached under this handle are reused without waiting by a later stream that happens
  // to get the same handle, so its work must be finished first.
  NNX_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
  // Blocks still held (an Executor's outputs, its arena until its members go) would otherwise
  // record events on the dead handle when they are freed.
  forget_stream(static_cast<cudaStream_t>(stream));
  NNX_CUDA_CHECK(cudaStreamDestroy(static_cast<cudaStream_t>(stream)));
}

void synchronize_stream(void* stream) {
  NNX_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void* current_stream(int device) {
  return current_cuda_stream(device);
}

void set_current_stream(void* stream, int device) {
  check_stream_slot(device);
  current_streams[device] = static_cast<cudaStream_t>(stream);
}

void record_stream(void* ptr, void* stream, int device) {
  caching_allocator(device).record_stream(ptr, static_cast<cudaStream_t>(stream));
}

void copy_async(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes,
                void* stream) {
  if (nbytes == 0) return;
  check_copy(dst_device, src_device);
  copy_on_stream(dst, dst_device, src, src_device, nbytes, static_cast<cudaStream_t>(stream));
}

}  // namespace nnx::cuda
