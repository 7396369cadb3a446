// CUDA bodies of the training passes: BatchNorm's training forward and backward, max pooling
// with its argmax and the scatter back, the optimizers' updates, and the
// reductions and fills the Trainer needs. Each mirrors its CPU counterpart's formula
// (kernels/cpu/batchnorm.h, pooling.h, activation.h, train/optim.cpp), with reductions in
// double. All pointers are contiguous device buffers; each call is queued on `stream` (a
// cudaStream_t) on the current device and returns once queued.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/pooling.h"

namespace nnx::cuda {

// BatchNorm2d in training: per channel the batch's mean and population variance (two passes,
// double), saved_mean[c] and saved_inv_std[c] = 1 / sqrt(var + eps) (either may be null), then
// y = x * scale + shift with scale = gamma * inv_std, shift = beta - mean * scale (gamma, beta
// null: 1 and 0). With running_mean and running_var (both or neither): *counter += 1 first, then
// running = (1 - f) * running + f * stat with f = momentum, or 1 / *counter when `cumulative`,
// the variance unbiased (count / (count - 1)). scratch: 2 * channels floats. batch * plane > 1.
void batch_norm_train_forward(const float* x, const float* gamma, const float* beta, double eps,
                              double momentum, bool cumulative, int64_t* counter,
                              float* running_mean, float* running_var, int64_t batch,
                              int64_t channels, int64_t plane, float* saved_mean,
                              float* saved_inv_std, float* scratch, float* y, void* stream);

// Its backward from the saved statistics: per channel sum(dy) and sum(dy * x_hat) (double),
// grad_gamma = sum(dy * x_hat), grad_beta = sum(dy) (either may be null), and, when dx is not
// null, dx = k * (dy - sum(dy) / count - x_hat * sum(dy * x_hat) / count) with k = gamma *
// inv_std (gamma null: 1). scratch: 4 * channels floats.
void batch_norm_backward(const float* x, const float* dy, const float* saved_mean,
                         const float* saved_inv_std, const float* gamma, int64_t batch,
                         int64_t channels, int64_t plane, float* grad_gamma, float* grad_beta,
                         float* scratch, float* dx, void* stream);

// Max pooling that also writes, per output, the index in its input plane of the element it took
// (-1 for a window wholly in the padding), as the CPU's max_pool2d_with_indices.
void max_pool2d_with_indices(const Pool2dGeometry& g, const float* x, float* y, int32_t* indices,
                             void* stream);
// dx = 0, then dx[plane, indices[o]] += dy[o] for every output o.
void max_pool2d_backward_indices(const Pool2dGeometry& g, const int32_t* indices, const float* dy,
                                 float* dx, void* stream);

// bytes of zeros at p.
void fill_zero(void* p, size_t bytes, void* stream);

// dst[i] = scale * src[i] (dst may be src).
void scale(const float* src, float scale, float* dst, int64_t n, void* stream);

// The sum of |x[i]|^p over all i (p = 2: squares; p = 0 is not used), or with `max` the largest
// |x[i]|, added into *result (one double on the device).
void accumulate_norm(const float* x, int64_t n, double p, bool max, double* result, void* stream);

// PyTorch 1.13's single-tensor SGD on n elements, as train/optim.cpp's SGD::update: d = +-grad +
// weight_decay * value (minus with maximize), then with momentum buf = d on the first step
// (`first`) else momentum * buf + (1 - dampening) * d, d = nesterov ? d + momentum * buf : buf;
// value -= lr * d. momentum_buffer is only read with momentum != 0.
struct SgdStep {
  float lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false, first = false;
};
void sgd_update(const SgdStep& s, float* value, const float* grad, float* momentum_buffer,
                int64_t n, void* stream);

// Adam / AdamW (decoupled) for one parameter at step `step` (>= 1), with PyTorch 1.13's
// single-tensor arithmetic: see train/optim.cpp's Adam::update, which this mirrors.
struct AdamStep {
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  int64_t step = 1;
  bool decoupled = false, amsgrad = false, maximize = false;
};
// With device_step (not null) the step is read there, when the update runs, instead of s.step:
// a CUDA graph replays the same launch at every step (nnx::TrainStep).
void adam_update(const AdamStep& s, float* value, const float* grad, float* exp_avg,
                 float* exp_avg_sq, float* max_exp_avg_sq, int64_t n, void* stream,
                 const int64_t* device_step = nullptr);

// counters[i] += 1 for i < n (device int64s).
void increment_each(int64_t* counters, int n, void* stream);

}  // namespace nnx::cuda
