// Training losses on CUDA (see loss.h).
#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/loss.h"
#include "kernels/loss_terms.h"

namespace nnx::cuda {
namespace {

// Block sums of the loss's terms, at most this many (one per block); scratch[kPartials0 + b].
constexpr int kMaxPartials = 1024;
constexpr int kPartials0 = 3;

cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}

unsigned loss_blocks(int64_t work) {
  return unsigned(
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(work, kBlockSize), kMaxPartials)));
}

// Thread 0's block sum goes to the block's partial.
__device__ void store_partial(double v, double* scratch) {
  v = block_sum(v);
  if (threadIdx.x == 0) scratch[kPartials0 + blockIdx.x] = v;
}

// scratch[0] = the sum of `count` partials, in one block, in a fixed order.
__global__ void sum_partials_kernel(int count, double* scratch) {
  double v = 0;
  for (int b = threadIdx.x; b < count; b += blockDim.x) v += scratch[kPartials0 + b];
  v = block_sum(v);
  if (threadIdx.x == 0) scratch[0] = v;
}

__global__ void point_loss_kernel(PointLossArgs a, double* scratch) {
  double total = 0;
  grid_stride_loop(a.n, [&](int64_t i) {
    const double x = a.x[i], t = a.t[i];
    double g = 0;
    switch (a.kind) {
      case PointLoss::mse:
        total += loss_terms::mse(x - t, g);
        break;
      case PointLoss::l1:
        total += loss_terms::l1(x - t, g);
        break;
      case PointLoss::smooth_l1:
        total += loss_terms::smooth_l1(x - t, a.beta, g);
        break;
      case PointLoss::bce_with_logits:
        total += loss_terms::bce_with_logits(x, t, a.weight != nullptr ? a.weight[i] : 1.0,
                                             a.pos_weight != nullptr,
                                             a.pos_weight != nullptr ? a.pos_weight[i] : 1.0, g);
        break;
    }
    a.grad[i] = float(g / a.divisor);
  });
  store_partial(total, scratch);
}

__device__ long long warp_min(long long v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const long long o = __shfl_down_sync(0xffffffffu, v, offset);
    v = o < v ? o : v;
  }
  return v;
}

// One block: scratch[1] = the summed weight of the positions whose label is counted, scratch[2]
// = the first position with a label out of range (kNoBadLabel when none).
__global__ void cross_entropy_count_kernel(CrossEntropyArgs a, double* scratch) {
  __shared__ long long first_bad[32];
  const int64_t positions = a.n * a.s;
  double counted = 0;
  long long bad = kNoBadLabel;
  for (int64_t p = threadIdx.x; p < positions; p += blockDim.x) {
    const int64_t y = a.labels[p];
    if (y == a.ignore_index) continue;
    if (y < 0 || y >= a.c) {
      bad = p < bad ? p : bad;
      continue;
    }
    counted += a.weight != nullptr ? a.weight[y] : 1.0;
  }
  counted = block_sum(counted);
  bad = warp_min(bad);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) first_bad[warp] = bad;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w) bad = first_bad[w] < bad ? first_bad[w] : bad;
    scratch[1] = counted;
    reinterpret_cast<long long*>(scratch)[2] = bad;
  }
}

// log(sum(exp)) of the c values at stride s from z (train/loss.cpp's log_sum_exp).
__device__ double log_sum_exp(const float* z, int64_t c, int64_t s) {
  double m = -INFINITY;
  for (int64_t k = 0; k < c; ++k) m = fmax(m, double(z[k * s]));
  if (isinf(m)) return m;
  double sum = 0;
  for (int64_t k = 0; k < c; ++k) sum += exp(double(z[k * s]) - m);
  return m + log(sum);
}

// One thread per position (n, s) for class indices.
__global__ void cross_entropy_indices_kernel(CrossEntropyArgs a, const double* counted,
                                             double* scratch) {
  const double eps = a.label_smoothing;
  const double denom = *counted;
  const bool divide = a.mean && denom != 0;
  double total = 0;
  grid_stride_loop(a.n * a.s, [&](int64_t p) {
    const int64_t n = p / a.s, s = p % a.s;
    const int64_t base = n * a.c * a.s + s;
    const float* zs = a.logits + base;
    float* gs = a.grad + base;
    const int64_t y = a.labels[p];
    if (y == a.ignore_index || y < 0 || y >= a.c) {
      for (int64_t k = 0; k < a.c; ++k) gs[k * a.s] = 0.f;
      return;
    }
    const double lse = log_sum_exp(zs, a.c, a.s);
    const double wy = a.weight != nullptr ? a.weight[y] : 1.0;
    double smooth = 0;
    for (int64_t k = 0; k < a.c; ++k) {
      const double logp = double(zs[k * a.s]) - lse, prob = exp(logp);
      const double wk = a.weight != nullptr ? a.weight[k] : 1.0;
      double g = (1 - eps) * wy * (prob - (k == y ? 1.0 : 0.0));
      if (eps != 0) {
        smooth -= wk * logp;
        g += eps / double(a.c) * (prob * a.weight_sum - wk);
      }
      gs[k * a.s] = float(divide ? g / denom : g);
    }
    total += (1 - eps) * -(wy * (double(zs[y * a.s]) - lse)) +
             (eps != 0 ? eps / double(a.c) * smooth : 0.0);
  });
  store_partial(total, scratch);
}

// One thread per position (n, s) for class probabilities.
__global__ void cross_entropy_probabilities_kernel(CrossEntropyArgs a, double* scratch) {
  const double eps = a.label_smoothing;
  const double count = double(a.n * a.s);
  double total = 0;
  grid_stride_loop(a.n * a.s, [&](int64_t p) {
    const int64_t n = p / a.s, s = p % a.s;
    const int64_t base = n * a.c * a.s + s;
    const double lse = log_sum_exp(a.logits + base, a.c, a.s);
    auto weighted_target = [&](int64_t k) {
      const double q = double(a.probs[base + k * a.s]) * (1 - eps) + eps / double(a.c);
      return (a.weight != nullptr ? a.weight[k] : 1.0) * q;
    };
    double wq_sum = 0;
    for (int64_t k = 0; k < a.c; ++k) {
      const double wq = weighted_target(k);
      total -= wq * (double(a.logits[base + k * a.s]) - lse);
      wq_sum += wq;
    }
    for (int64_t k = 0; k < a.c; ++k) {
      const int64_t i = base + k * a.s;
      const double g = -weighted_target(k) + exp(double(a.logits[i]) - lse) * wq_sum;
      a.grad[i] = float(a.mean ? g / count : g);
    }
  });
  store_partial(total, scratch);
}

}  // namespace

size_t loss_scratch_doubles() {
  return kPartials0 + kMaxPartials;
}

void point_loss(const PointLossArgs& a, double* scratch, void* stream) {
  const unsigned blocks = loss_blocks(a.n);
  point_loss_kernel<<<blocks, kBlockSize, 0, as_stream(stream)>>>(a, scratch);
  NNX_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 1024, 0, as_stream(stream)>>>(int(blocks), scratch);
  NNX_CUDA_CHECK_LAUNCH();
}

void cross_entropy_loss(const CrossEntropyArgs& a, double* scratch, void* stream) {
  const unsigned blocks = loss_blocks(a.n * a.s);
  if (a.labels != nullptr) {
    cross_entropy_count_kernel<<<1, 1024, 0, as_stream(stream)>>>(a, scratch);
    NNX_CUDA_CHECK_LAUNCH();
    cross_entropy_indices_kernel<<<blocks, kBlockSize, 0, as_stream(stream)>>>(a, scratch + 1,
                                                                               scratch);
  } else {
    cross_entropy_probabilities_kernel<<<blocks, kBlockSize, 0, as_stream(stream)>>>(a, scratch);
  }
  NNX_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 1024, 0, as_stream(stream)>>>(int(blocks), scratch);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
