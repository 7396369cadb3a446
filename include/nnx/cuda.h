// The CUDA backend's runtime: device discovery, registering its allocator and copies with the
// core, and streams. Builds without the backend get inline stubs that report no device.
#pragma once

#include <cstddef>
#include <string>

#include "nnx/allocator.h"
#include "nnx/error.h"

namespace nnx::cuda {

#ifdef NNX_WITH_CUDA

// True when a CUDA device answers. Never throws: a missing driver or no device gives false.
NNX_API bool available();
NNX_API int device_count();
// Why available() is false, for messages ("cudaGetDeviceCount: no CUDA-capable device is
// detected"); empty when it is true.
NNX_API std::string unavailable_reason();
// "NVIDIA H100 80GB HBM3"; throws Error(device) for an index with no device.
NNX_API std::string device_name(int device);

// Registers the CUDA allocator and device copies with the core, so that allocator_for(cuda:N),
// Tensor::empty(..., cuda) and Tensor::copy_from between devices work. Idempotent, thread-safe
// and cheap after the first call; touches no driver, so it is safe without a device (allocating
// then throws Error(device)). Explicit, because a static initialiser in a static library is
// dropped by the linker when nothing else references its object file.
NNX_API void init();

// The caching allocator of one device (made on first use). Memory it hands out is ordered on
// this thread's current stream for that device; throws Error(device) if there is no such device.
NNX_API Allocator& allocator(int device = 0);
// Waits for all work on the device.
NNX_API void synchronize(int device = 0);

// Streams travel as void* (a cudaStream_t), like ExecContext::stream, so that this header needs
// no CUDA headers. nullptr is the legacy default stream.
NNX_API void* create_stream(int device = 0);  // cudaStreamNonBlocking
NNX_API void destroy_stream(void* stream);    // waits for the stream's work first
NNX_API void synchronize_stream(void* stream);

// The stream this thread's allocations and synchronous copies on `device` are ordered on
// (nullptr until set). The executor sets it to the stream it launches on, so that a block freed
// by one inference is reused by the next without waiting for the device.
NNX_API void* current_stream(int device = 0);
NNX_API void set_current_stream(void* stream, int device = 0);

// Declares that memory from allocator(device) starting at `ptr` is also used on `stream`, so that
// after it is freed it is reused only once that stream's work on it is done too.
NNX_API void record_stream(void* ptr, void* stream, int device = 0);

// Copies nbytes ordered on `stream`, returning before the copy finishes (except from or to
// pageable host memory, which the driver copies synchronously). Tensor::copy_from uses the
// synchronous form, on the current stream.
NNX_API void copy_async(void* dst, Device dst_device, const void* src, Device src_device,
                        size_t nbytes, void* stream);

#else  // no CUDA backend in this build

[[noreturn]] inline void no_backend(const char* what) {
  fail(ErrorKind::device, what, ": this build has no CUDA backend");
}
inline bool available() {
  return false;
}
inline int device_count() {
  return 0;
}
inline std::string unavailable_reason() {
  return "this build has no CUDA backend";
}
inline std::string device_name(int) {
  no_backend("device_name");
}
inline void init() {}
inline Allocator& allocator(int = 0) {
  no_backend("CUDA allocator");
}
inline void synchronize(int = 0) {
  no_backend("synchronize");
}
inline void* create_stream(int = 0) {
  no_backend("create_stream");
}
inline void destroy_stream(void*) {
  no_backend("destroy_stream");
}
inline void synchronize_stream(void*) {
  no_backend("synchronize_stream");
}
inline void* current_stream(int = 0) {
  return nullptr;
}
// Nothing to order without a device; only a real stream is an error.
inline void set_current_stream(void* stream, int = 0) {
  if (stream != nullptr) no_backend("set_current_stream");
}
inline void record_stream(void*, void*, int = 0) {
  no_backend("record_stream");
}
inline void copy_async(void*, Device, const void*, Device, size_t, void*) {
  no_backend("copy_async");
}

#endif

// Sets the current stream for a scope and restores the previous one.
class StreamGuard {
 public:
  explicit StreamGuard(void* stream, int device = 0)
      : device_(device), previous_(current_stream(device)) {
    set_current_stream(stream, device);
  }
  ~StreamGuard() { set_current_stream(previous_, device_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  void* previous_;
};

}  // namespace nnx::cuda
