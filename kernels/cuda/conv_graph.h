// Conv2d's three passes through cuDNN's graph API (the backend descriptors of cudnn_graph.h):
// per problem an operation graph, the engine configurations cuDNN's heuristics rank (mode A,
// then its fallback list), and one finalized execution plan, kept per thread and device, so
// that a call after the first only binds its pointers and executes. Beside the legacy API of
// conv2d.cu, which stays the default until this path has been measured on a GPU.
#pragma once

#include <cuda_runtime_api.h>

#include <optional>
#include <string>

#include "kernels/cuda/conv2d.h"

namespace nnx::cuda {

// NNX_CUDNN_API=graph routes conv2d_forward and conv2d_backward through the graph API
// (read on each call); unset or "legacy" keeps cuDNN's legacy convolution API.
bool conv_graph_api_enabled();

enum class ConvPass { forward, backward_data, backward_filter };

// One pass, its output overwritten, all operands contiguous NCHW on the current device, float32
// or, with `io`, fp16 / bf16 (tensor cores, float32 accumulation),
// queued on `stream`: forward y = conv(x, w); backward_data x = the gradient of the input from
// y (dy) and w; backward_filter w = the gradient of the weight from x and y (dy). Engines are
// those the math allows: no tensor cores unless params.allow_tf32, never down-converted inputs.
// With NNX_CUDNN_SEARCH=1 the candidates are timed on these buffers and the fastest kept (its
// rank persisted in NNX_CUDNN_CACHE like the legacy algorithms), else the heuristics' first
// that finalizes (a plan asking for over 1 GiB of workspace is passed over). Returns false,
// having queued nothing, when cuDNN rejects the graph, no engine takes the problem or the
// chosen plan's first run fails (each answer kept per thread and device); throws Error(device)
// when a plan that has run fails later.
bool conv_graph_run(ConvPass pass, const Conv2dParams& params, void* x, void* w, void* y,
                    int device, cudaStream_t stream, std::optional<ConvIo> io = std::nullopt);

// The text key of a convolution problem on `device` (shapes, padding, strides, dilation,
// groups, math, device and cuDNN version) that the algorithm caches use (conv2d.cu).
std::string conv_problem_key(const Conv2dParams& params, int device, bool search);

}  // namespace nnx::cuda
