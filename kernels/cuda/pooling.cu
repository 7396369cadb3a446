// 2-D pooling on CUDA: one thread per output element, the window read in the CPU kernels' order
// (rows, then columns) so that sums round the same way.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/pooling.h"

namespace nnx::cuda {
namespace {

__device__ __forceinline__ int64_t div_up(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Taps [lo, hi) of a window starting at `start` whose input index lies in [0, size).
__device__ __forceinline__ void valid_taps(int64_t start, int64_t kernel, int64_t dilation,
                                           int64_t size, int64_t& lo, int64_t& hi) {
  lo = start >= 0 ? 0 : div_up(-start, dilation);
  hi = start >= size ? 0 : min(kernel, div_up(size - start, dilation));
  if (lo > hi) lo = hi;
}

__global__ void max_pool2d_kernel(Pool2dGeometry g, const float* x, float* y) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t ow = i % g.out_w;
    const int64_t oh = (i / g.out_w) % g.out_h;
    const int64_t p = i / (g.out_w * g.out_h);
    const int64_t h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
    int64_t row_lo, row_hi, col_lo, col_hi;
    valid_taps(h0, g.kernel_h, g.dilation_h, g.in_h, row_lo, row_hi);
    valid_taps(w0, g.kernel_w, g.dilation_w, g.in_w, col_lo, col_hi);
    const float* plane = x + p * g.in_h * g.in_w;
    float best = -INFINITY;
    for (int64_t kh = row_lo; kh < row_hi; ++kh) {
      const float* row = plane + (h0 + kh * g.dilation_h) * g.in_w;
      for (int64_t kw = col_lo; kw < col_hi; ++kw) {
        const float v = row[w0 + kw * g.dilation_w];
        if (v > best || v != v) best = v;
        if (best != best) break;
      }
      if (best != best) break;  // NaN wins: nothing replaces it
    }
    y[i] = best;
  });
}

// One axis of an average window: [lo, hi) inside the input and the extent within the padded
// input (ceil_mode windows can overrun it; count_include_pad divides by it).
__device__ __forceinline__ void avg_window(int64_t start, int64_t kernel, int64_t pad, int64_t size,
                                           int64_t& lo, int64_t& hi, int64_t& padded) {
  const int64_t end = min(start + kernel, size + pad);
  lo = max(start, int64_t(0));
  hi = min(end, size);
  padded = end - start;
}

__global__ void avg_pool2d_kernel(Pool2dGeometry g, bool count_include_pad,
                                  int64_t divisor_override, const float* x, float* y) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t ow = i % g.out_w;
    const int64_t oh = (i / g.out_w) % g.out_h;
    const int64_t p = i / (g.out_w * g.out_h);
    int64_t r_lo, r_hi, r_padded, c_lo, c_hi, c_padded;
    avg_window(oh * g.stride_h - g.pad_h, g.kernel_h, g.pad_h, g.in_h, r_lo, r_hi, r_padded);
    avg_window(ow * g.stride_w - g.pad_w, g.kernel_w, g.pad_w, g.in_w, c_lo, c_hi, c_padded);
    if (r_lo >= r_hi || c_lo >= c_hi) {
      y[i] = 0.0f;
      return;
    }
    const float* plane = x + p * g.in_h * g.in_w;
    float sum = 0.0f;
    for (int64_t h = r_lo; h < r_hi; ++h)
      for (int64_t w = c_lo; w < c_hi; ++w) sum += plane[h * g.in_w + w];
    const int64_t divisor = divisor_override != 0 ? divisor_override
                            : count_include_pad   ? r_padded * c_padded
                                                  : (r_hi - r_lo) * (c_hi - c_lo);
    y[i] = sum / float(divisor);
  });
}

__global__ void adaptive_avg_pool2d_kernel(int64_t planes, int64_t in_h, int64_t in_w,
                                           int64_t out_h, int64_t out_w, const float* x, float* y) {
  const int64_t n = planes * out_h * out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t ow = i % out_w;
    const int64_t oh = (i / out_w) % out_h;
    const int64_t p = i / (out_w * out_h);
    const int64_t h0 = oh * in_h / out_h, h1 = div_up((oh + 1) * in_h, out_h);
    const int64_t w0 = ow * in_w / out_w, w1 = div_up((ow + 1) * in_w, out_w);
    const float* plane = x + p * in_h * in_w;
    float sum = 0.0f;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) sum += plane[h * in_w + w];
    y[i] = sum / float((h1 - h0) * (w1 - w0));
  });
}

// The gradients: each output spreads dy / divisor over its window (windows overlap: atomics).
__global__ void avg_pool2d_backward_kernel(Pool2dGeometry g, bool count_include_pad,
                                           int64_t divisor_override, const float* dy, float* dx) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t ow = i % g.out_w;
    const int64_t oh = (i / g.out_w) % g.out_h;
    const int64_t p = i / (g.out_w * g.out_h);
    int64_t r_lo, r_hi, r_padded, c_lo, c_hi, c_padded;
    avg_window(oh * g.stride_h - g.pad_h, g.kernel_h, g.pad_h, g.in_h, r_lo, r_hi, r_padded);
    avg_window(ow * g.stride_w - g.pad_w, g.kernel_w, g.pad_w, g.in_w, c_lo, c_hi, c_padded);
    if (r_lo >= r_hi || c_lo >= c_hi) return;
    const int64_t divisor = divisor_override != 0 ? divisor_override
                            : count_include_pad   ? r_padded * c_padded
                                                  : (r_hi - r_lo) * (c_hi - c_lo);
    const float share = dy[i] / float(divisor);
    float* plane = dx + p * g.in_h * g.in_w;
    for (int64_t h = r_lo; h < r_hi; ++h)
      for (int64_t w = c_lo; w < c_hi; ++w) atomicAdd(plane + h * g.in_w + w, share);
  });
}

__global__ void adaptive_avg_pool2d_backward_kernel(int64_t planes, int64_t in_h, int64_t in_w,
                                                    int64_t out_h, int64_t out_w, const float* dy,
                                                    float* dx) {
  const int64_t n = planes * out_h * out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t ow = i % out_w;
    const int64_t oh = (i / out_w) % out_h;
    const int64_t p = i / (out_w * out_h);
    const int64_t h0 = oh * in_h / out_h, h1 = div_up((oh + 1) * in_h, out_h);
    const int64_t w0 = ow * in_w / out_w, w1 = div_up((ow + 1) * in_w, out_w);
    const float share = dy[i] / float((h1 - h0) * (w1 - w0));
    float* plane = dx + p * in_h * in_w;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) atomicAdd(plane + h * in_w + w, share);
  });
}

}  // namespace

void avg_pool2d_backward(const Pool2dGeometry& g, bool count_include_pad, int64_t divisor_override,
                         const float* dy, float* dx, void* stream) {
  const int64_t in = g.planes * g.in_h * g.in_w, n = g.planes * g.out_h * g.out_w;
  if (in <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  NNX_CUDA_CHECK(cudaMemsetAsync(dx, 0, size_t(in) * sizeof(float), s));
  if (n <= 0) return;
  avg_pool2d_backward_kernel<<<grid_for(n), kBlockSize, 0, s>>>(g, count_include_pad,
                                                                divisor_override, dy, dx);
  NNX_CUDA_CHECK_LAUNCH();
}

void adaptive_avg_pool2d_backward(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h,
                                  int64_t out_w, const float* dy, float* dx, void* stream) {
  const int64_t in = planes * in_h * in_w, n = planes * out_h * out_w;
  if (in <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  NNX_CUDA_CHECK(cudaMemsetAsync(dx, 0, size_t(in) * sizeof(float), s));
  if (n <= 0) return;
  adaptive_avg_pool2d_backward_kernel<<<grid_for(n), kBlockSize, 0, s>>>(planes, in_h, in_w, out_h,
                                                                         out_w, dy, dx);
  NNX_CUDA_CHECK_LAUNCH();
}

void max_pool2d(const Pool2dGeometry& g, const float* x, float* y, void* stream) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  if (n <= 0) return;
  max_pool2d_kernel<<<grid_for(n), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(g, x, y);
  NNX_CUDA_CHECK_LAUNCH();
}

void avg_pool2d(const Pool2dGeometry& g, bool count_include_pad, int64_t divisor_override,
                const float* x, float* y, void* stream) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  if (n <= 0) return;
  avg_pool2d_kernel<<<grid_for(n), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      g, count_include_pad, divisor_override, x, y);
  NNX_CUDA_CHECK_LAUNCH();
}

void adaptive_avg_pool2d(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                         const float* x, float* y, void* stream) {
  const int64_t n = planes * out_h * out_w;
  if (n <= 0) return;
  adaptive_avg_pool2d_kernel<<<grid_for(n), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      planes, in_h, in_w, out_h, out_w, x, y);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
