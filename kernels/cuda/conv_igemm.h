// Convolutions of our own, as implicit GEMMs (NCHW, groups 1): the output channels as the rows,
// the output positions of the whole batch as the columns, the input channels times the kernel
// window as the reduction. In float32 on CUDA cores, one tile of the output per block of 256
// threads (64x64, 128x64 or 128x128: 4x4 to 8x8 outputs per thread); in TF32, fp16 and bf16 on
// tensor cores (conv_mma.cuh, 128x128). The reduction in chunks staged through shared memory
// (the next chunk's loads in flight while one is multiplied), and split over several blocks when
// the tiles alone would leave multiprocessors idle (the small spatial sizes of a network's late
// layers at batch 1), the partial sums then added in a fixed order. The bias, a residual and a
// ReLU are applied as the result is written. The same FFMA tiles compute the gradients.
//
// Why: in float32 (TF32 off) cuDNN's heuristic and its timed search pick, on Hopper, an
// implicit-GEMM kernel with 32x32 tiles that reaches a few TFLOP/s on ResNet-18's layers at
// batch 1 (about 60 us each on an H200, ncu, bench/results/cuda_h200.md); the seed network's
// 35 GFLOP at batch 1 took 2.5 ms there (about 14 TFLOP/s of the H200's 67 in FFMA), and 1.7
// ms in TF32. conv2d.cu times these kernels against cuDNN's choice once per problem and keeps
// the fastest (NNX_CONV_IGEMM).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cuda/conv2d.h"

namespace nnx::cuda {

// Whether conv2d_igemm takes the problem: groups 1, sizes in int range.
bool igemm_applicable(const Conv2dParams& params);

// Output channels x output positions per block: float32 FFMA kernels, or `tensor`, 128x128 on
// tensor cores (conv_mma.cuh): TF32 where the problem allows it, and the fp16/bf16 kernel of
// conv2d_igemm_reduced.
enum class IgemmTile { m64n64, m128n64, m128n128, tensor };
const char* igemm_tile_name(IgemmTile tile);  // "64x64", "128x64", "128x128", "tensor"
// Whether the current device has the tensor-core kernel's WMMA shapes (compute capability 8.0
// or newer).
bool igemm_tensor_available();
// The tiles worth trying on the problem: with allow_tf32, tensor (none before sm_80); else the
// FFMA ones for its output channels and positions (igemm_tiles_for: 128-row tiles need more
// than 64 rows, 128x128 more than 64 columns).
std::vector<IgemmTile> igemm_tiles(const Conv2dParams& params);
std::vector<IgemmTile> igemm_tiles_for(int64_t rows, int64_t columns);
// With allow_tf32, tensor; else the largest FFMA tile that still gives every multiprocessor two
// blocks (else 64x64, split).
IgemmTile default_igemm_tile(const Conv2dParams& params);

// y = conv(x, w) + bias + z, then ReLU when `relu` (bias, z may be null; y must not alias x or z),
// all contiguous float32 on the current device, queued on `stream`; the split reduction's
// partial sums in a workspace from the caching allocator of `device`. ReLU keeps NaN, as
// PyTorch's.
void conv2d_igemm(const Conv2dParams& params, const float* x, const float* w, const float* bias,
                  const float* z, bool relu, float* y, int device, void* stream, IgemmTile tile);

// The gradients of a float32 convolution (groups 1), as implicit GEMMs on the FFMA tiles.
// Input gradient (stride 1 only): dx = the convolution of dy with the weight transposed and
// flipped (made in a workspace) and padding dilation * (kernel - 1) - pad, run by conv2d_igemm
// on data_grad_problem(p). Filter gradient: dw [out_channels][in_channels * kh * kw] = dy (rows
// the output channels, the reduction over every output position of the batch) times x's
// transposed im2col matrix; its long reduction split over blocks, the partial sums added in a
// fixed order. Both overwrite their output.
bool igemm_data_grad_applicable(const Conv2dParams& params);
Conv2dParams data_grad_problem(const Conv2dParams& params);
void conv2d_igemm_data_grad(const Conv2dParams& params, const float* dy, const float* w, float* dx,
                            int device, void* stream, IgemmTile tile);
bool igemm_filter_grad_applicable(const Conv2dParams& params);
void conv2d_igemm_filter_grad(const Conv2dParams& params, const float* x, const float* dy,
                              float* dw, int device, void* stream, IgemmTile tile);

// conv2d_forward_reduced on tensor cores: x (float32) rounded to `io` as it is read, w_io the
// weight already in `io`, the sum (fp32 accumulation) rounded to `io` and widened into y, then
// the bias and z added and the ReLU applied (bias, z may be null), as the cuDNN path and the
// passes after it compute them, without their rounded copies.
void conv2d_igemm_reduced(const Conv2dParams& params, ConvIo io, const float* x, const void* w_io,
                          const float* bias, const float* z, bool relu, float* y, int device,
                          void* stream);

// How conv2d_forward, conv2d_bias_relu_forward and conv2d_forward_reduced choose (NNX_CONV_IGEMM):
// off: cuDNN only; on: these kernels wherever they apply, with default_igemm_tile's tile
// (NNX_CONV_IGEMM=64x64, 128x64 or 128x128: that tile); automatic (the default; off on the CUDA
// emulator, where a time is the host's): cuDNN and each tile of igemm_tiles timed once per problem
// on the device, the fastest kept (NNX_CONV_IGEMM_LOG=1 prints each problem's times to stderr).
enum class IgemmMode { off, on, automatic };
IgemmMode igemm_mode();
// Overrides the environment for this process (tests; `tile` for `on`, else default_igemm_tile),
// or with reset_igemm_mode goes back to it; both forget the choices made so far.
void set_igemm_mode(IgemmMode mode, std::optional<IgemmTile> tile = std::nullopt);
void reset_igemm_mode();

// The tile to run our kernel with for this problem, or none for cuDNN (`key`: conv_problem_key's
// and the pass), per igemm_mode(), among `candidates` (empty: igemm_tiles(params); `on` takes a
// forced tile among them, else default_igemm_tile, or the first candidate where they are
// given). In automatic mode the first call for a key, outside a stream capture, runs cuDNN and
// each candidate (run_cudnn and run_igemm compute the pass into the caller's output) once, then
// times each twice over five runs with events on `stream` (queued behind a spin, so the GPU's
// time), and keeps the fastest for the key; inside a capture an undecided key gets cuDNN,
// undecided still.
std::optional<IgemmTile> use_igemm(const Conv2dParams& params, const std::string& key, void* stream,
                                   const std::function<void()>& run_cudnn,
                                   const std::function<void(IgemmTile)>& run_igemm,
                                   const std::vector<IgemmTile>& candidates = {});

}  // namespace nnx::cuda
