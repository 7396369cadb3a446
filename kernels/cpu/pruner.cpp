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

}  // namespace nnx::cpu
