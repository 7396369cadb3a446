// Pruner gates and channel scaling on the CPU. The gate is tiny (one value per channel) and is
// computed in double then rounded, the scaling is the part that runs over the whole tensor.
#include "kernels/cpu/pruner.h"

#include <algorithm>
#include <cmath>

#include "nnx/thread_pool.h"

namespace nnx::cpu {
namespace {

constexpr int64_t kGrain = int64_t(1) << 15;

// The package's sharpened sigmoid: about 0 below w = 0.82, about 1 above w = 0.90.
double sharp_sigmoid(double w) {
  return 1.0 / (1.0 + std::exp(-(100.0 * w - 86.0)));
}

}  // namespace

void pruner_gate(PrunerGate kind, const float* w, int64_t channels, float threshold, float* gate) {
  // PyTorch evaluates the gate in float32: reproduce the threshold test on float values.
  switch (kind) {
    case PrunerGate::thresholded:
      for (int64_t c = 0; c < channels; ++c)
        gate[c] = w[c] > threshold ? float(sharp_sigmoid(w[c]) * w[c]) : 0.0f;
      return;
    case PrunerGate::legacy:
      for (int64_t c = 0; c < channels; ++c)
        gate[c] = float(sharp_sigmoid(w[c]) * double(w[c]) * double(w[c]));
      return;
    case PrunerGate::all_or_nothing: {
      double sum = 0;
      for (int64_t c = 0; c < channels; ++c) sum += w[c];
      const float mean = channels > 0 ? float(sum / double(channels)) : 0.0f;
      const double on = mean > threshold ? sharp_sigmoid(mean) : 0.0;
      for (int64_t c = 0; c < channels; ++c) gate[c] = float(on * w[c]);
      return;
    }
  }
}

void scale_channels(const float* x, const float* gate, float* y, int64_t outer, int64_t channels,
                    int64_t inner, ThreadPool* pool) {
  const int64_t rows = outer * channels;
  if (rows == 0 || inner == 0) return;
  const int64_t grain = std::max<int64_t>(1, kGrain / inner);
  parallel_for(pool, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float g = gate[r % channels];
      const float* xr = x + r * inner;
      float* yr = y + r * inner;
      for (int64_t i = 0; i < inner; ++i) yr[i] = xr[i] * g;
    }
  });
}

void channel_products(const float* x, const float* gy, int64_t outer, int64_t channels,
                      int64_t inner, double* g, ThreadPool* pool) {
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, outer * inner));
  parallel_for(pool, channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double acc = 0;
      for (int64_t o = 0; o < outer; ++o) {
        const int64_t at = (o * channels + c) * inner;
        for (int64_t i = 0; i < inner; ++i) acc += double(x[at + i]) * gy[at + i];
      }
      g[c] = acc;
    }
  });
}

void pruner_gate_backward(PrunerGate kind, const float* w, int64_t channels, float threshold,
                          const double* g, float* gw) {
  // d sigmoid(100w - 86) / dw = 100 s (1 - s).
  switch (kind) {
    case PrunerGate::thresholded:
      for (int64_t c = 0; c < channels; ++c) {
        const double s = sharp_sigmoid(w[c]);
        gw[c] = w[c] > threshold ? float(g[c] * (s + 100.0 * s * (1.0 - s) * w[c])) : 0.0f;
      }
      return;
    case PrunerGate::legacy:
      for (int64_t c = 0; c < channels; ++c) {
        const double s = sharp_sigmoid(w[c]), wc = w[c];
        gw[c] = float(g[c] * (100.0 * s * (1.0 - s) * wc * wc + 2.0 * s * wc));
      }
      return;
    case PrunerGate::all_or_nothing: {
      // gate[c] = s(m) w[c] (m > threshold) with m = mean(w).
      double sum = 0, gw_sum = 0;
      for (int64_t c = 0; c < channels; ++c) {
        sum += w[c];
        gw_sum += g[c] * w[c];
      }
      const float mean = channels > 0 ? float(sum / double(channels)) : 0.0f;
      const bool on = mean > threshold;
      const double s = sharp_sigmoid(mean);
      const double through_mean = 100.0 * s * (1.0 - s) * gw_sum / double(channels);
      for (int64_t c = 0; c < channels; ++c) gw[c] = on ? float(s * g[c] + through_mean) : 0.0f;
      return;
    }
  }
}

}  // namespace nnx::cpu
