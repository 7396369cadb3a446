// Data movement on CUDA (see tensor_ops.h): the gather decomposes each output index over the
// shape, as elementwise.cu's general kernel does.
#include <string>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/tensor_ops.h"
#include "nnx/error.h"

namespace nnx::cuda {
namespace {

struct CopyLayout {
  int ndim = 0;
  int64_t size[kMaxCopyDims] = {};
  int64_t stride[kMaxCopyDims] = {};
};

template <class T>
__global__ void strided_copy_kernel(const T* src, CopyLayout l, int64_t n, T* dst) {
  grid_stride_loop(n, [&](int64_t i) {
    int64_t rest = i, offset = 0;
#pragma unroll
    for (int k = kMaxCopyDims - 1; k >= 0; --k) {
      if (k < l.ndim) {
        const int64_t index = rest % l.size[k];
        rest /= l.size[k];
        offset += index * l.stride[k];
      }
    }
    dst[i] = src[offset];
  });
}

template <class T>
void launch_strided_copy(const void* src, const CopyLayout& l, int64_t n, void* dst,
                         cudaStream_t stream) {
  strided_copy_kernel<T><<<grid_for(n), kBlockSize, 0, stream>>>(static_cast<const T*>(src), l, n,
                                                                 static_cast<T*>(dst));
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace

void strided_copy(const void* src, const int64_t* shape, const int64_t* strides, int ndim,
                  size_t element_size, void* dst, void* stream_handle) {
  NNX_CHECK(ndim >= 0 && ndim <= kMaxCopyDims, ErrorKind::unsupported, "strided copy of rank ",
            ndim, " on CUDA (at most ", kMaxCopyDims, ")");
  CopyLayout l;
  int64_t n = 1;
  for (int k = 0; k < ndim; ++k) {
    l.size[k] = shape[k];
    l.stride[k] = strides[k];
    n *= shape[k];
  }
  l.ndim = ndim;
  if (n <= 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  switch (element_size) {
    case 1:
      return launch_strided_copy<uint8_t>(src, l, n, dst, stream);
    case 2:
      return launch_strided_copy<uint16_t>(src, l, n, dst, stream);
    case 4:
      return launch_strided_copy<uint32_t>(src, l, n, dst, stream);
    case 8:
      return launch_strided_copy<uint64_t>(src, l, n, dst, stream);
    default:
      fail(ErrorKind::unsupported, "strided copy of ", element_size, "-byte elements on CUDA");
  }
}

void copy_rows(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch, int64_t rows,
               int64_t row_bytes, void* stream_handle) {
  if (rows <= 0 || row_bytes <= 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (rows == 1 || (src_pitch == row_bytes && dst_pitch == row_bytes)) {
    NNX_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, size_t(rows * row_bytes), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  NNX_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(dst_pitch), src, size_t(src_pitch),
                                   size_t(row_bytes), size_t(rows), cudaMemcpyDeviceToDevice,
                                   stream));
}

}  // namespace nnx::cuda
