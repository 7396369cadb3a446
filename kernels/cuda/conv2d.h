// CUDA body of Conv2d: cuDNN's convolution (fp32, no TF32) with the bias added, and the padding
// kernel that non-zero padding modes and asymmetric 'same' padding run first.
#pragma once

#include <cstdint>

namespace nnx::cuda {

struct Conv2dParams {
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;  // the same on both sides (cuDNN's only form)
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
  // TF32 tensor cores allowed (CUDNN_TENSOR_OP_MATH, tensor-core algorithms kept), else fp32
  // FMA only.
  bool allow_tf32 = false;
};

// y [batch, out_channels, out_h, out_w] = conv(x, w) + bias (bias may be null), all contiguous
// float32 on the current device, queued on `stream` (a cudaStream_t). The algorithm comes from
// cuDNN's heuristics, or with NNX_CUDNN_SEARCH=1 from a timed search, cached per problem
// (runtime/cuda/conv_algo_cache.h); the workspace from the caching allocator of `device`.
// Throws Error(device) naming the cuDNN call that failed.
void conv2d_forward(const Conv2dParams& params, const float* x, const float* w, const float* bias,
                    float* y, int device, void* stream);

// The operand format of a reduced-precision convolution (precision fp16 or bf16).
enum class ConvIo { f16, bf16 };

// conv2d_forward with fp16 or bf16 operands and fp32 accumulation on tensor cores: x (fp32) is
// rounded to `io` in a temporary, w_io is the weight already in `io` (round_to), and the `io`
// result is widened into y (fp32) with the bias (may be null) added. Algorithms from cuDNN's
// heuristics (tensor-core ones allowed), cached per problem like conv2d_forward's.
void conv2d_forward_reduced(const Conv2dParams& params, ConvIo io, const float* x, const void* w_io,
                            const float* bias, float* y, int device, void* stream);
// y = relu(conv2d_forward_reduced's result + z) in one kernel (z may be null; y must not alias
// x or z), NaN kept by the ReLU. Returns false where that problem runs on cuDNN (conv_igemm.h's
// choice; y may have been used as scratch by the choice's timing): the caller then runs the
// pieces.
bool conv2d_bias_relu_forward_reduced(const Conv2dParams& params, ConvIo io, const float* x,
                                      const void* w_io, const float* bias, const float* z, float* y,
                                      int device, void* stream);
// y[i] = x[i] rounded to `io` (to nearest even), n elements.
void round_to(ConvIo io, const float* x, void* y, int64_t n, void* stream);

// y = relu(conv(x, w) + bias + z) in one cuDNN call (cudnnConvolutionBiasActivationForward; z
// null: no residual; bias required; y must not alias z), NaN propagated as PyTorch's ReLU does.
// Returns false, having written nothing, where cuDNN does not take the problem fused (the answer
// is kept per problem): the caller then runs the pieces. With NNX_CUDNN_API=graph: the graph
// API's convolution, then one kernel for the bias, the residual and the ReLU.
bool conv2d_bias_relu_forward(const Conv2dParams& params, const float* x, const float* w,
                              const float* bias, const float* z, float* y, int device,
                              void* stream);

// The gradients of conv2d_forward, each overwritten: dx = the convolution's transpose applied to
// dy, dw = the correlation of x with dy, db = dy summed per output channel; a null pointer skips
// that gradient (x is only read for dw, w only for dx). Algorithms from cuDNN's heuristics
// (fp32 math, no tensor cores), cached per problem like the forward's; workspaces from the
// caching allocator. Throws Error(device) naming the cuDNN call that failed.
void conv2d_backward(const Conv2dParams& params, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, int device, void* stream);
// How pad2d fills the border, as torch.nn.functional.pad's modes.
enum class PadMode { zeros, reflect, replicate, circular };

// Each of `planes` [h, w] planes of x padded into [h + top + bottom, w + left + right] in y. The
// caller checks the sizes (reflect needs pads < size, circular pads <= size).
void pad2d(PadMode mode, const float* x, int64_t planes, int64_t h, int64_t w, int64_t top,
           int64_t bottom, int64_t left, int64_t right, float* y, void* stream);
// The gradient of pad2d: each input element receives the sum of the gradients of the padded
// elements it was copied to (dx overwritten).
void pad2d_backward(PadMode mode, const float* dy, int64_t planes, int64_t h, int64_t w,
                    int64_t top, int64_t bottom, int64_t left, int64_t right, float* dx,
                    void* stream);

}  // namespace nnx::cuda
