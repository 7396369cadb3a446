// Host tasks in stream order and page-locked host tensors (see host_task.h).
#include "runtime/cuda/host_task.h"

#include <cuda_runtime_api.h>

#include <exception>
#include <map>
#include <memory>
#include <mutex>

#include "nnx/allocator.h"
#include "nnx/error.h"
#include "runtime/cuda/cuda_allocator.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_runtime.h"

namespace nnx::cuda {
namespace {

std::mutex error_mutex;
std::map<void*, std::string> first_errors;  // by stream

void keep_error(void* stream, const std::string& message) {
  std::lock_guard<std::mutex> lock(error_mutex);
  first_errors.emplace(stream, message);  // the first one stays
}

struct HostTask {
  std::function<void()> body;
  void* stream = nullptr;  // whose error slot
};

void CUDART_CB run_host_task(void* data) {
  auto* task = static_cast<HostTask*>(data);
  try {
    task->body();
  } catch (const Error& e) {
    keep_error(task->stream, e.message());
  } catch (const std::exception& e) {
    keep_error(task->stream, e.what());
  } catch (...) {
    keep_error(task->stream, "a host task threw an unknown exception");
  }
}

// Runs f in relaxed capture mode (where this thread's capture allows allocating), then restores
// the mode.
template <class F>
auto relaxed(F&& f) {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  NNX_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  struct Restore {
    cudaStreamCaptureMode& mode;
    ~Restore() { (void)cudaThreadExchangeStreamCaptureMode(&mode); }
  } restore{mode};
  return f();
}

}  // namespace

bool stream_capturing(void* stream) {
  if (stream == nullptr) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return status == cudaStreamCaptureStatusActive;
}

Tensor pinned_tensor(const Shape& shape, DType dtype) {
  const size_t bytes = std::max<size_t>(1, size_t(shape.numel()) * dtype_size(dtype));
  void* p = relaxed([&] {
    void* q = nullptr;
    NNX_CUDA_CHECK(cudaMallocHost(&q, bytes));
    return q;
  });
  auto storage = Storage::wrap(p, bytes, Device::cpu(), [](void* q) {
    try {
      relaxed([&] { return cudaFreeHost(q); });
    } catch (...) {  // the driver is gone at exit: nothing to give back
    }
  });
  return Tensor::from_storage(std::move(storage), shape, dtype);
}

void launch_host_task(void* stream_handle, int device, std::function<void()> body) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  DeviceGuard guard(device);
  // Only in a capture: the graph's pool keeps the task (and the page-locked tensors it holds),
  // so that nothing is freed on the driver's thread, where CUDA calls are not allowed.
  NNX_CHECK(stream_capturing(stream_handle), ErrorKind::usage,
            "a host task outside a stream capture");
  auto task = std::make_shared<HostTask>();
  task->body = std::move(body);
  task->stream = stream_handle;
  NNX_CHECK(caching_allocator(device).keep_with_pool(stream, task), ErrorKind::usage,
            "a host task captured on a stream without a graph pool: nothing would keep it "
            "alive for the graph's replays");
  NNX_CUDA_CHECK(cudaLaunchHostFunc(stream, run_host_task, task.get()));
}

std::string take_host_task_error(void* stream) {
  std::lock_guard<std::mutex> lock(error_mutex);
  auto it = first_errors.find(stream);
  if (it == first_errors.end()) return {};
  std::string e = std::move(it->second);
  first_errors.erase(it);
  return e;
}

}  // namespace nnx::cuda
