// CPU bodies of the package's channel pruners: the per-channel gate computed from the learned
// weight, and the channel scaling y = x * gate[c].
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

enum class PrunerGate {
  thresholded,     // sigmoid(100w - 86) * w * (w > threshold)
  legacy,          // sigmoid(100w - 86) * w * w (files whose state key is "weights")
  all_or_nothing,  // m = mean(w): sigmoid(100m - 86) * w * (m > threshold)
};

// gate[c] for c < channels from the weight w[c].
void pruner_gate(PrunerGate kind, const float* w, int64_t channels, float threshold, float* gate);

// y[o, c, i] = x[o, c, i] * gate[c] over contiguous (outer, channels, inner); y may be x.
void scale_channels(const float* x, const float* gate, float* y, int64_t outer, int64_t channels,
                    int64_t inner, ThreadPool* pool);

// g[c] = sum over (o, i) of x[o, c, i] * gy[o, c, i] (the gradient of gate[c]), in double.
void channel_products(const float* x, const float* gy, int64_t outer, int64_t channels,
                      int64_t inner, double* g, ThreadPool* pool);

// gw[c] = the gradient of w[c] given g[c], the gradient of gate[c]. As in PyTorch, the
// threshold tests pass no gradient; AllOrNothingPruner's reaches every weight through the mean.
void pruner_gate_backward(PrunerGate kind, const float* w, int64_t channels, float threshold,
                          const double* g, float* gw);

}  // namespace nnx::cpu
