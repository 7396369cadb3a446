// CPU 2-D resampling of NCHW float32 planes as torch.nn.functional.interpolate does it: nearest,
// nearest-exact, bilinear and bicubic, with PyTorch's float32 coordinate arithmetic.
#pragma once

#include <cstdint>

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

enum class ResampleMode { nearest, nearest_exact, bilinear, bicubic };

struct Resample2dShape {
  int64_t planes = 0;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  // The scale_factor handed down with the output size, 0 when none was: PyTorch then maps
  // coordinates by 1 / scale_factor instead of in / out (align_corners=False only).
  double scale_factor_h = 0, scale_factor_w = 0;
};

void resample2d(ResampleMode mode, bool align_corners, const Resample2dShape& shape,
                const float* input, float* output, ThreadPool* pool);

// The gradient of resample2d: every output's gradient goes back to the inputs it read, with the
// same weights. grad_input [planes, in_h, in_w] is overwritten.
void resample2d_backward(ResampleMode mode, bool align_corners, const Resample2dShape& shape,
                         const float* grad_output, float* grad_input, ThreadPool* pool);

}  // namespace nnx::cpu
