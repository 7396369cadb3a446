// CUDA bodies of the broadcasting binary ops (Add, Sub, Mul), with an optional fused ReLU:
// out = a op b over contiguous float32 device buffers.
#pragma once

#include <cstdint>

namespace nnx::cuda {

enum class BinaryOp { add, sub, mul };

// out[i] = a[i] op b[i] for i < n, then max(., 0) if `relu` (NaN stays NaN). out may be a or b.
// Runs on `stream` (a cudaStream_t) on the current device; returns once queued.
void binary_same_shape(BinaryOp op, bool relu, const float* a, const float* b, float* out,
                       int64_t n, void* stream);

// out (contiguous, out_dims) = a op b with NumPy/PyTorch broadcasting: each operand's dims
// right-aligned against out's, each 1 or equal to out's. The (N,C,1,1) against (N,C,H,W) case
// and same shapes take fast paths. out may be a or b only if that operand has out's shape.
// Throws Error(shape) if the shapes do not broadcast to out's, Error(device) if a launch fails.
void binary_broadcast(BinaryOp op, bool relu, const float* a, const int64_t* a_dims, int a_ndim,
                      const float* b, const int64_t* b_dims, int b_ndim, float* out,
                      const int64_t* out_dims, int out_ndim, void* stream);

}  // namespace nnx::cuda
