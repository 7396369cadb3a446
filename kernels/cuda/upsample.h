// CUDA body of Upsample: 2-D resampling of NCHW float32 planes as F.interpolate does it
// (nearest, nearest-exact, bilinear, bicubic), with the coordinate arithmetic of
// kernels/cpu/upsample.h so that index choices at exact boundaries agree with the CPU.
#pragma once

#include <cstdint>

namespace nnx::cuda {

enum class ResampleMode { nearest, nearest_exact, bilinear, bicubic };

struct Resample2dGeometry {
  int64_t planes = 0;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  // The scale_factor handed down with the output size, 0 when none was (as the CPU's).
  double scale_factor_h = 0, scale_factor_w = 0;
};

void resample2d(ResampleMode mode, bool align_corners, const Resample2dGeometry& g, const float* x,
                float* y, void* stream);

}  // namespace nnx::cuda
