// The per-element terms of the training losses (train/loss.cpp), in double, shared by the CPU
// and the CUDA kernels (kernels/cuda/loss.cu) so that both compute the same arithmetic. Each
// returns the element's loss and sets g to its derivative. C++17, so that nvcc can include it.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define NNX_HOST_DEVICE __host__ __device__
#else
#define NNX_HOST_DEVICE
#endif

namespace nnx::loss_terms {

NNX_HOST_DEVICE inline double sign(double d) {
  return d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0;
}

// d = prediction - target.
NNX_HOST_DEVICE inline double mse(double d, double& g) {
  g = 2 * d;
  return d * d;
}

NNX_HOST_DEVICE inline double l1(double d, double& g) {
  g = sign(d);
  return fabs(d);
}

// beta > 0 (beta 0 is l1).
NNX_HOST_DEVICE inline double smooth_l1(double d, double beta, double& g) {
  const double a = fabs(d);
  if (a < beta) {
    g = d / beta;
    return 0.5 * d * d / beta;
  }
  g = sign(d);
  return a - 0.5 * beta;
}

// Logit x, target t, weight w (1 where not given) and pos_weight pw (with has_pw): PyTorch's
// (1 - t) x + lw (log(1 + exp(-|x|)) + max(-x, 0)) with lw = (pw - 1) t + 1 (1 without pw),
// times w.
NNX_HOST_DEVICE inline double bce_with_logits(double x, double t, double w, bool has_pw, double pw,
                                              double& g) {
  const double lw = has_pw ? (pw - 1) * t + 1 : 1.0;
  const double softplus_neg = log1p(exp(-fabs(x))) + (-x < 0.0 ? 0.0 : -x);
  const double sigmoid = x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
  g = w * ((1 - t) + lw * (sigmoid - 1));
  return w * ((1 - t) * x + lw * softplus_neg);
}

}  // namespace nnx::loss_terms
