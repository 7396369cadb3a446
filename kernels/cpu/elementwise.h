// CPU bodies of the broadcasting binary ops (Add, Sub, Mul): out = a op b with NumPy/PyTorch
// broadcasting, over contiguous float32 buffers.
#pragma once

#include "kernels/cpu/epilogue.h"
#include "nnx/shape.h"

namespace nnx {
class ThreadPool;
}

namespace nnx::cpu {

enum class BinaryOp { add, sub, mul };

// out (contiguous, out_shape) = a op b, where the contiguous a and b have shapes that broadcast
// to out_shape. `out` must not overlap `a` or `b`. `epilogue` is applied to each stretch of
// outputs as it is written (Add+ReLU in one pass).
void binary_broadcast(BinaryOp op, const float* a, const Shape& a_shape, const float* b,
                      const Shape& b_shape, float* out, const Shape& out_shape, ThreadPool* pool,
                      const Epilogue& epilogue = {});

// acc = acc op b in place (acc contiguous with acc_shape, b broadcasting to it): the later steps
// of a left fold. `acc` must not overlap `b`.
void binary_broadcast_inplace(BinaryOp op, float* acc, const Shape& acc_shape, const float* b,
                              const Shape& b_shape, ThreadPool* pool,
                              const Epilogue& epilogue = {});

// out (contiguous, out_shape) = g (contiguous, g_shape) summed over the dimensions where
// out_shape broadcasts to g_shape: the gradient of a broadcast operand. Sums in double.
void sum_to_shape(const float* g, const Shape& g_shape, float* out, const Shape& out_shape,
                  ThreadPool* pool);

}  // namespace nnx::cpu
