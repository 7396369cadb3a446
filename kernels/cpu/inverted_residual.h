// An inverted-residual block (MobileNetV2's building block) in one pass: a 1x1 expansion, a
// depthwise convolution and a 1x1 projection, each with its BatchNorm folded in, computed band
// by band of output rows so that the expanded tensor, the widest of the block, never leaves the
// cache (graph/fusion.h finds the blocks). With AVX-512 or AVX2 and an expansion the block runs
// channels-last inside (the channels-last GEMM of channels_last.h for the 1x1 convolutions, a
// depthwise kernel on whole channel vectors), taking and giving channels-first tensors; the
// other blocks run channels-first (12-row panels, depthwise_planes). Planes of at most 256
// output pixels split over channels rather than rows.
#pragma once

#include <cstdint>

#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/conv2d.h"

namespace nnx::cpu {

// The block's weights laid out channels-last: each 1x1 weight as the channels-last GEMM's panels
// (channels_last.h), the depthwise weights as [tap][channels rounded up to 16], biases to the
// rounded sizes; the padding is zero.
struct ChannelsLastWeights {
  int64_t hidden_pad = 0, out_pad = 0;
  AlignedVector<float> expand, expand_bias, depthwise, depthwise_bias, project, project_bias;
};
// Whether this build's kernels use the channels-last form (AVX-512 and AVX2 + FMA builds).
bool channels_last_available();
// From the weights as the convolutions hold them ([out][in] for the 1x1 ones, [channel][tap] for
// the depthwise one); biases may be null (none).
void prepare_channels_last(int64_t in_channels, int64_t hidden, int64_t out_channels, int64_t taps,
                           const float* expand_weight, const float* expand_bias,
                           const float* depthwise_weight, const float* depthwise_bias,
                           const float* project_weight, const float* project_bias,
                           ChannelsLastWeights& into);

struct InvertedResidual {
  int64_t batch = 1;
  int64_t in_channels = 0, in_h = 0, in_w = 0;  // the block's input
  // Whether a 1x1, stride-1, unpadded expansion in_channels -> depthwise.in_channels comes first
  // (else the depthwise convolution reads the input), and its weights as 12-row panels
  // (prepared.h; only needed without the channels-last form).
  bool expands = false;
  const float* expand_panels = nullptr;
  const float* expand_bias = nullptr;                 // may be null
  float expand_lo = -INFINITY, expand_hi = INFINITY;  // its ReLU/ReLU6 clamp
  // One group per channel (channel multiplier 1), over the expanded planes; batch ignored.
  Conv2dShape depthwise;
  const float* depthwise_weight = nullptr;  // [channels, kernel_h, kernel_w]
  const float* depthwise_bias = nullptr;    // may be null
  float depthwise_lo = -INFINITY, depthwise_hi = INFINITY;
  // The 1x1 projection depthwise.out_channels -> out_channels, as 12-row weight panels (only
  // needed without the channels-last form).
  int64_t out_channels = 0;
  const float* project_panels = nullptr;
  const float* project_bias = nullptr;  // may be null
  // Applied to the projection's output (a residual Add, an activation).
  Epilogue project_epilogue;
  // The same weights channels-last (null: none), used for blocks with an expansion where the
  // build has the channels-last kernels (channels_last_available()).
  const ChannelsLastWeights* channels_last = nullptr;
};

// input [batch, in_channels, in_h, in_w] -> output [batch, out_channels, depthwise.out_h,
// depthwise.out_w], equal to the three convolutions run one after the other.
void inverted_residual(const InvertedResidual& block, const float* input, float* output,
                       ThreadPool* pool);

}  // namespace nnx::cpu
