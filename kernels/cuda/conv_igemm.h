// A float32 convolution of our own, as an implicit GEMM (NCHW, groups 1): the output channels as
// the rows, the output positions of the whole batch as the columns, the input channels times the
// kernel window as the reduction. 64x64 tiles of the output per block, the reduction in chunks of
// 16 staged through shared memory (the next chunk's loads in flight while one is multiplied), and
// split over several blocks when the tiles alone would leave multiprocessors idle (the small
// spatial sizes of a network's late layers at batch 1), the partial sums then added in a fixed
// order. The bias, a residual and a ReLU are applied as the result is written.
//
// Why: in float32 (TF32 off) cuDNN's heuristic and its timed search pick, on Hopper, an
// implicit-GEMM kernel with 32x32 tiles that reaches a few TFLOP/s on ResNet-18's layers at
// batch 1 (about 60 us each on an H200, ncu, bench/results/cuda_h200.md). conv2d.cu times this
// kernel against cuDNN's choice once per problem and keeps the faster (NNX_CONV_IGEMM).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "kernels/cuda/conv2d.h"

namespace nnx::cuda {

// Whether conv2d_igemm takes the problem: groups 1, float32 math (no TF32), sizes in int range.
bool igemm_applicable(const Conv2dParams& params);

// y = conv(x, w) + bias + z, then ReLU when `relu` (bias, z may be null; y must not alias x or z),
// all contiguous float32 on the current device, queued on `stream`; the split reduction's
// partial sums in a workspace from the caching allocator of `device`. ReLU keeps NaN, as
// PyTorch's.
void conv2d_igemm(const Conv2dParams& params, const float* x, const float* w, const float* bias,
                  const float* z, bool relu, float* y, int device, void* stream);

// How conv2d_forward and conv2d_bias_relu_forward choose (NNX_CONV_IGEMM): off: cuDNN only; on:
// this kernel wherever it applies; automatic (the default; off on the CUDA emulator, where a
// time is the host's): both timed once per problem on the device, the faster kept.
enum class IgemmMode { off, on, automatic };
IgemmMode igemm_mode();
// Overrides the environment for this process (tests), or with reset_igemm_mode goes back to it;
// both forget the choices made so far.
void set_igemm_mode(IgemmMode mode);
void reset_igemm_mode();

// Whether to run conv2d_igemm for this problem (`key`: conv_problem_key's), per igemm_mode(). In
// automatic mode the first call for a key, outside a stream capture, runs both (run_cudnn and
// run_igemm each compute the convolution into the caller's output) once, then times each twice
// over five runs with events on `stream` (queued behind a spin, so the GPU's time), and keeps the
// faster for the key; inside a capture an undecided key gets cuDNN (false), undecided still.
bool use_igemm(const Conv2dParams& params, const std::string& key, void* stream,
               const std::function<void()>& run_cudnn, const std::function<void()>& run_igemm);

}  // namespace nnx::cuda
