// Training kernels on CUDA (see train.h).
#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/train.h"

namespace nnx::cuda {
namespace {

__global__ void increment_kernel(int64_t* counter) {
  *counter += 1;
}

// Threads of the per-channel reductions' blocks (one block per channel): many loads in flight.
constexpr int kChannelBlock = 512;

// Calls f(i) for the index i of every element of channel c (x viewed as [batch, channels,
// plane]), spread over the block's threads: plane by plane, consecutive threads on consecutive
// elements, when a plane fills the block; else over the flattened batch * plane.
template <class F>
__device__ __forceinline__ void for_each_in_channel(int64_t c, int64_t batch, int64_t channels,
                                                    int64_t plane, F&& f) {
  if (plane >= int64_t(blockDim.x)) {
    for (int64_t n = 0; n < batch; ++n) {
      const int64_t base = (n * channels + c) * plane;
      for (int64_t k = threadIdx.x; k < plane; k += blockDim.x) f(base + k);
    }
  } else {
    const int64_t count = batch * plane;
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x)
      f(((k / plane) * channels + c) * plane + k % plane);
  }
}

// One block per channel.
__global__ void bn_train_stats_kernel(const float* x, const float* gamma, const float* beta,
                                      double eps, double momentum, bool cumulative,
                                      const int64_t* counter, float* running_mean,
                                      float* running_var, int64_t batch, int64_t channels,
                                      int64_t plane, float* saved_mean, float* saved_inv_std,
                                      float* scale, float* shift) {
  const int64_t c = blockIdx.x;
  const int64_t count = batch * plane;
  double sum = 0;
  for_each_in_channel(c, batch, channels, plane, [&](int64_t i) { sum += x[i]; });
  const double mean = block_sum(sum) / double(count);
  double squares = 0;
  for_each_in_channel(c, batch, channels, plane, [&](int64_t i) {
    const double d = double(x[i]) - mean;
    squares += d * d;
  });
  const double variance = block_sum(squares) / double(count);
  if (threadIdx.x != 0) return;
  const double inv_std = 1.0 / sqrt(variance + eps);
  const double g = gamma != nullptr ? double(gamma[c]) : 1.0;
  const double b = beta != nullptr ? double(beta[c]) : 0.0;
  scale[c] = float(inv_std * g);
  shift[c] = float(b - mean * inv_std * g);
  if (saved_mean != nullptr) saved_mean[c] = float(mean);
  if (saved_inv_std != nullptr) saved_inv_std[c] = float(inv_std);
  if (running_mean != nullptr) {
    const double f = cumulative ? 1.0 / double(*counter) : momentum;
    const double unbiased = variance * double(count) / double(count - 1);
    running_mean[c] = float((1 - f) * double(running_mean[c]) + f * mean);
    running_var[c] = float((1 - f) * double(running_var[c]) + f * unbiased);
  }
}

// One block per channel: the two sums, the parameter gradients and dx's coefficients.
__global__ void bn_grad_sums_kernel(const float* x, const float* dy, const float* saved_mean,
                                    const float* saved_inv_std, const float* gamma, int64_t batch,
                                    int64_t channels, int64_t plane, float* grad_gamma,
                                    float* grad_beta, float* coeff) {
  const int64_t c = blockIdx.x;
  const int64_t count = batch * plane;
  const double mean = saved_mean[c], inv_std = saved_inv_std[c];
  double s_dy = 0, s_dy_xhat = 0;
  for_each_in_channel(c, batch, channels, plane, [&](int64_t i) {
    const double g = dy[i];
    s_dy += g;
    s_dy_xhat += g * (double(x[i]) - mean) * inv_std;
  });
  s_dy = block_sum(s_dy);
  s_dy_xhat = block_sum(s_dy_xhat);
  if (threadIdx.x != 0) return;
  if (grad_gamma != nullptr) grad_gamma[c] = float(s_dy_xhat);
  if (grad_beta != nullptr) grad_beta[c] = float(s_dy);
  // dx = dy * a + (x - center) * b + shift, as the CPU's channel_affine_grad.
  const double k = inv_std * (gamma != nullptr ? double(gamma[c]) : 1.0);
  coeff[c] = float(k);
  coeff[channels + c] = float(-k * inv_std * s_dy_xhat / double(count));
  coeff[2 * channels + c] = float(mean);
  coeff[3 * channels + c] = float(-k * s_dy / double(count));
}

__global__ void bn_input_grad_kernel(const float* x, const float* dy, const float* coeff,
                                     int64_t channels, int64_t plane, int64_t n, float* dx) {
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t c = (i / plane) % channels;
    dx[i] = dy[i] * coeff[c] + (x[i] - coeff[2 * channels + c]) * coeff[channels + c] +
            coeff[3 * channels + c];
  });
}

// One thread per output, as the CPU's scan: the window in row-major order, strictly greater or
// NaN takes the index (ties go to the first maximum, NaN to the last NaN).
__global__ void max_pool_indices_kernel(Pool2dGeometry g, const float* x, float* y,
                                        int32_t* indices, int64_t n) {
  grid_stride_loop(n, [&](int64_t o) {
    const int64_t ow = o % g.out_w, oh = (o / g.out_w) % g.out_h, p = o / (g.out_w * g.out_h);
    const float* in = x + p * g.in_h * g.in_w;
    float best = -INFINITY;
    int64_t at = -1;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t r = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      if (r < 0 || r >= g.in_h) continue;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t col = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        if (col < 0 || col >= g.in_w) continue;
        const float v = in[r * g.in_w + col];
        if (at < 0 || v > best || isnan(v)) {
          best = v;
          at = r * g.in_w + col;
        }
      }
    }
    y[o] = best;
    indices[o] = int32_t(at);
  });
}

__global__ void max_pool_scatter_kernel(Pool2dGeometry g, const int32_t* indices, const float* dy,
                                        float* dx, int64_t n) {
  const int64_t out_plane = g.out_h * g.out_w, in_plane = g.in_h * g.in_w;
  grid_stride_loop(n, [&](int64_t o) {
    const int32_t at = indices[o];
    if (at >= 0) atomicAdd(dx + (o / out_plane) * in_plane + at, dy[o]);
  });
}

struct Scale {
  float s;
  __device__ float operator()(float v) const { return v * s; }
};

__global__ void norm_kernel(const float* x, int64_t n, double p, bool take_max, double* result) {
  double acc = 0;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double a = fabs(double(x[i]));
    if (take_max)
      acc = isnan(a) || a > acc ? a : acc;
    else
      acc += p == 2.0 ? a * a : (p == 1.0 ? a : pow(a, p));
  }
  if (take_max) {
    // Non-negative doubles order as their bit patterns; NaN (positive bits) counts as largest.
    atomicMax(reinterpret_cast<unsigned long long*>(result), __double_as_longlong(acc));
  } else {
    acc = block_sum(acc);
    if (threadIdx.x == 0) atomicAdd(result, acc);
  }
}

__global__ void sgd_kernel(SgdStep s, float* p, const float* g, float* buf, int64_t n) {
  const float sign = s.maximize ? -1.f : 1.f, keep = 1.f - s.dampening;
  grid_stride_loop(n, [&](int64_t i) {
    float d = sign * g[i] + s.weight_decay * p[i];
    if (buf != nullptr) {
      const float b = s.first ? d : buf[i] * s.momentum + keep * d;
      buf[i] = b;
      d = s.nesterov ? d + s.momentum * b : b;
    }
    p[i] = p[i] - s.lr * d;
  });
}

struct AdamScalars {
  float sign, wd, b1, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps, decay;
};

// The update's factors at `step` (the bias corrections in double), on the host for a step known
// there, on the device for a step counted there (adam_update's device_step).
__host__ __device__ inline AdamScalars adam_scalars(const AdamStep& o, double step) {
  const double bc1 = 1 - pow(o.beta1, step), bc2 = 1 - pow(o.beta2, step);
  AdamScalars s;
  s.sign = o.maximize ? -1.f : 1.f;
  s.wd = o.decoupled ? 0.f : float(o.weight_decay);
  s.b1 = float(o.beta1);
  s.b2 = float(o.beta2);
  s.one_minus_b1 = float(1 - o.beta1);
  s.one_minus_b2 = float(1 - o.beta2);
  s.step_size = float(o.lr / bc1);
  s.bc2_sqrt = float(sqrt(bc2));
  s.eps = float(o.eps);
  s.decay = o.decoupled ? float(1 - o.lr * o.weight_decay) : 1.f;
  return s;
}

// One element's update.
__device__ __forceinline__ void adam_element(const AdamScalars& s, float* p, const float* g,
                                             float* m, float* v, float* vmax, int64_t i) {
  const float gi = s.sign * g[i] + s.wd * p[i];
  m[i] = m[i] * s.b1 + s.one_minus_b1 * gi;
  float vi = v[i] * s.b2 + s.one_minus_b2 * gi * gi;
  v[i] = vi;
  if (vmax != nullptr) vi = vmax[i] = fmaxf(vmax[i], vi);
  const float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
  p[i] = p[i] * s.decay - s.step_size * m[i] / denom;
}

__global__ void adam_kernel(AdamScalars s, float* p, const float* g, float* m, float* v,
                            float* vmax, int64_t n) {
  grid_stride_loop(n, [&](int64_t i) { adam_element(s, p, g, m, v, vmax, i); });
}

// The same with the step read on the device: each block computes the factors once.
__global__ void adam_device_step_kernel(AdamStep o, const int64_t* step, float* p, const float* g,
                                        float* m, float* v, float* vmax, int64_t n) {
  __shared__ AdamScalars shared;
  if (threadIdx.x == 0) shared = adam_scalars(o, double(*step));
  __syncthreads();
  const AdamScalars s = shared;
  grid_stride_loop(n, [&](int64_t i) { adam_element(s, p, g, m, v, vmax, i); });
}

__global__ void increment_each_kernel(int64_t* counters, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) counters[i] += 1;
}

cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}

}  // namespace

void batch_norm_train_forward(const float* x, const float* gamma, const float* beta, double eps,
                              double momentum, bool cumulative, int64_t* counter,
                              float* running_mean, float* running_var, int64_t batch,
                              int64_t channels, int64_t plane, float* saved_mean,
                              float* saved_inv_std, float* scratch, float* y, void* stream) {
  if (channels <= 0 || batch * plane <= 1) return;
  if (running_mean != nullptr && counter != nullptr) {
    increment_kernel<<<1, 1, 0, as_stream(stream)>>>(counter);
    NNX_CUDA_CHECK_LAUNCH();
  }
  float* scale = scratch;
  float* shift = scratch + channels;
  bn_train_stats_kernel<<<unsigned(channels), kChannelBlock, 0, as_stream(stream)>>>(
      x, gamma, beta, eps, momentum, cumulative && counter != nullptr, counter, running_mean,
      running_var, batch, channels, plane, saved_mean, saved_inv_std, scale, shift);
  NNX_CUDA_CHECK_LAUNCH();
  channel_affine(x, scale, shift, y, batch, channels, plane, stream);
}

void batch_norm_backward(const float* x, const float* dy, const float* saved_mean,
                         const float* saved_inv_std, const float* gamma, int64_t batch,
                         int64_t channels, int64_t plane, float* grad_gamma, float* grad_beta,
                         float* scratch, float* dx, void* stream) {
  if (channels <= 0) return;
  bn_grad_sums_kernel<<<unsigned(channels), kChannelBlock, 0, as_stream(stream)>>>(
      x, dy, saved_mean, saved_inv_std, gamma, batch, channels, plane, grad_gamma, grad_beta,
      scratch);
  NNX_CUDA_CHECK_LAUNCH();
  const int64_t n = batch * channels * plane;
  if (dx == nullptr || n <= 0) return;
  bn_input_grad_kernel<<<grid_for(n), kBlockSize, 0, as_stream(stream)>>>(x, dy, scratch, channels,
                                                                          plane, n, dx);
  NNX_CUDA_CHECK_LAUNCH();
}

void max_pool2d_with_indices(const Pool2dGeometry& g, const float* x, float* y, int32_t* indices,
                             void* stream) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  if (n <= 0) return;
  max_pool_indices_kernel<<<grid_for(n), kBlockSize, 0, as_stream(stream)>>>(g, x, y, indices, n);
  NNX_CUDA_CHECK_LAUNCH();
}

void max_pool2d_backward_indices(const Pool2dGeometry& g, const int32_t* indices, const float* dy,
                                 float* dx, void* stream) {
  const int64_t in = g.planes * g.in_h * g.in_w, n = g.planes * g.out_h * g.out_w;
  if (in <= 0) return;
  NNX_CUDA_CHECK(cudaMemsetAsync(dx, 0, size_t(in) * sizeof(float), as_stream(stream)));
  if (n <= 0) return;
  max_pool_scatter_kernel<<<grid_for(n), kBlockSize, 0, as_stream(stream)>>>(g, indices, dy, dx, n);
  NNX_CUDA_CHECK_LAUNCH();
}

void fill_zero(void* p, size_t bytes, void* stream) {
  if (bytes == 0) return;
  NNX_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, as_stream(stream)));
}

void scale(const float* src, float s, float* dst, int64_t n, void* stream) {
  launch_elementwise(src, dst, n, Scale{s}, as_stream(stream));
}

void accumulate_norm(const float* x, int64_t n, double p, bool take_max, double* result,
                     void* stream) {
  if (n <= 0) return;
  norm_kernel<<<grid_for(n), kBlockSize, 0, as_stream(stream)>>>(x, n, p, take_max, result);
  NNX_CUDA_CHECK_LAUNCH();
}

void sgd_update(const SgdStep& s, float* value, const float* grad, float* momentum_buffer,
                int64_t n, void* stream) {
  if (n <= 0) return;
  sgd_kernel<<<grid_for(n), kBlockSize, 0, as_stream(stream)>>>(
      s, value, grad, s.momentum != 0 ? momentum_buffer : nullptr, n);
  NNX_CUDA_CHECK_LAUNCH();
}

void adam_update(const AdamStep& o, float* value, const float* grad, float* exp_avg,
                 float* exp_avg_sq, float* max_exp_avg_sq, int64_t n, void* stream,
                 const int64_t* device_step) {
  if (n <= 0) return;
  float* vmax = o.amsgrad ? max_exp_avg_sq : nullptr;
  if (device_step != nullptr) {
    adam_device_step_kernel<<<grid_for(n), kBlockSize, 0, as_stream(stream)>>>(
        o, device_step, value, grad, exp_avg, exp_avg_sq, vmax, n);
  } else {
    adam_kernel<<<grid_for(n), kBlockSize, 0, as_stream(stream)>>>(
        adam_scalars(o, double(o.step)), value, grad, exp_avg, exp_avg_sq, vmax, n);
  }
  NNX_CUDA_CHECK_LAUNCH();
}

void increment_each(int64_t* counters, int n, void* stream) {
  if (n <= 0) return;
  increment_each_kernel<<<unsigned((n + kBlockSize - 1) / kBlockSize), kBlockSize, 0,
                          as_stream(stream)>>>(counters, n);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
