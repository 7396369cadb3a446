// Conv2d on CUDA through cuDNN's legacy convolution API (cudnn_cnn.h), and the padding kernel.
// Math type CUDNN_FMA_MATH keeps TF32 tensor cores out, as PyTorch does with TF32 disabled, so
// results match the CPU and PyTorch to fp32 rounding; with allow_tf32 CUDNN_TENSOR_OP_MATH lets
// them in, as PyTorch's default (torch.backends.cudnn.allow_tf32) does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>

#include <algorithm>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/conv_graph.h"
#include "kernels/cuda/conv_igemm.h"
#include "kernels/cuda/launch.cuh"
#include "nnx/error.h"
#include "runtime/cuda/conv_algo_cache.h"
#include "runtime/cuda/cuda_runtime.h"
#include "runtime/cuda/library_handles.h"
#include "runtime/cuda/workspace.h"

namespace nnx::cuda {
namespace {

// ---- descriptors, destroyed with their scope

struct TensorDescriptor {
  cudnnTensorDescriptor_t desc = nullptr;
  TensorDescriptor(int64_t n, int64_t c, int64_t h, int64_t w,
                   cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    NNX_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc));
    NNX_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(desc, CUDNN_TENSOR_NCHW, type, int(n), int(c), int(h), int(w)));
  }
  ~TensorDescriptor() { (void)cudnnDestroyTensorDescriptor(desc); }
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
};

struct FilterDescriptor {
  cudnnFilterDescriptor_t desc = nullptr;
  FilterDescriptor(int64_t k, int64_t c, int64_t h, int64_t w,
                   cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    NNX_CUDNN_CHECK(cudnnCreateFilterDescriptor(&desc));
    NNX_CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(desc, type, CUDNN_TENSOR_NCHW, int(k), int(c), int(h), int(w)));
  }
  ~FilterDescriptor() { (void)cudnnDestroyFilterDescriptor(desc); }
  FilterDescriptor(const FilterDescriptor&) = delete;
  FilterDescriptor& operator=(const FilterDescriptor&) = delete;
};

struct ConvolutionDescriptor {
  cudnnConvolutionDescriptor_t desc = nullptr;
  // Accumulation in fp32 always; tensor cores with allow_tf32 (or reduced-precision operands).
  explicit ConvolutionDescriptor(const Conv2dParams& p) {
    NNX_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&desc));
    NNX_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        desc, int(p.pad_h), int(p.pad_w), int(p.stride_h), int(p.stride_w), int(p.dilation_h),
        int(p.dilation_w), CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    NNX_CUDNN_CHECK(cudnnSetConvolutionGroupCount(desc, int(p.groups)));
    NNX_CUDNN_CHECK(
        cudnnSetConvolutionMathType(desc, p.allow_tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  }
  ~ConvolutionDescriptor() { (void)cudnnDestroyConvolutionDescriptor(desc); }
  ConvolutionDescriptor(const ConvolutionDescriptor&) = delete;
  ConvolutionDescriptor& operator=(const ConvolutionDescriptor&) = delete;
};

bool uses_tensor_cores(cudnnMathType_t math) {
  return math == CUDNN_TENSOR_OP_MATH || math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

// What distinguishes one device's choices from another's in a shared cache file.
std::string device_tag(int device) {
  static std::mutex mutex;
  static std::string tags[kMaxDevices];
  std::lock_guard<std::mutex> lock(mutex);
  std::string& tag = tags[device];
  if (tag.empty()) {
    cudaDeviceProp prop{};
    NNX_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    tag = "sm" + std::to_string(prop.major) + std::to_string(prop.minor) + "x" +
          std::to_string(prop.multiProcessorCount) + ";cudnn" + std::to_string(cudnnGetVersion());
  }
  return tag;
}

struct Problem {
  bool allow_tf32;  // tensor-core algorithms are candidates
  cudnnHandle_t handle;
  const TensorDescriptor& x;
  const FilterDescriptor& w;
  const ConvolutionDescriptor& conv;
  const TensorDescriptor& y;
};

int heuristic_algorithm(const Problem& p) {
  int count = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(p.handle, &count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(size_t(count > 0 ? count : 1));
  int returned = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(p.handle, p.x.desc, p.w.desc, p.conv.desc,
                                                         p.y.desc, count, &returned, perf.data()));
  for (int i = 0; i < returned; ++i)
    if (perf[size_t(i)].status == CUDNN_STATUS_SUCCESS &&
        (p.allow_tf32 || !uses_tensor_cores(perf[size_t(i)].mathType)))
      return int(perf[size_t(i)].algo);
  return int(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);  // takes every problem, no workspace
}

// Times the algorithms on the real buffers (y is overwritten, which the caller does anyway).
int searched_algorithm(const Problem& p, const float* x, const float* w, float* y, int device,
                       cudaStream_t stream) {
  // A workspace as large as the hungriest algorithm wants, up to 1 GiB; less if that fails.
  constexpr size_t kMaxSearchWorkspace = size_t(1) << 30;
  size_t most = 0;
  for (int a = 0; a < int(CUDNN_CONVOLUTION_FWD_ALGO_COUNT); ++a) {
    size_t bytes = 0;
    if (cudnnGetConvolutionForwardWorkspaceSize(p.handle, p.x.desc, p.w.desc, p.conv.desc, p.y.desc,
                                                cudnnConvolutionFwdAlgo_t(a),
                                                &bytes) == CUDNN_STATUS_SUCCESS &&
        bytes <= kMaxSearchWorkspace && bytes > most)
      most = bytes;
  }
  size_t workspace_bytes = most;
  std::unique_ptr<Workspace> workspace;
  while (!workspace) {
    try {
      workspace = std::make_unique<Workspace>(device, workspace_bytes, stream);
    } catch (const Error&) {
      if (workspace_bytes == 0) throw;
      workspace_bytes /= 4;
    }
  }
  int count = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(p.handle, &count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(size_t(count > 0 ? count : 1));
  int returned = 0;
  NNX_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
      p.handle, p.x.desc, x, p.w.desc, w, p.conv.desc, p.y.desc, y, count, &returned, perf.data(),
      workspace->get(), workspace->bytes()));
  for (int i = 0; i < returned; ++i)  // fastest first
    if (perf[size_t(i)].status == CUDNN_STATUS_SUCCESS &&
        (p.allow_tf32 || !uses_tensor_cores(perf[size_t(i)].mathType)))
      return int(perf[size_t(i)].algo);
  return heuristic_algorithm(p);
}

// y = conv(x, w) with the problem's descriptors and algorithm, its workspace from the caching
// allocator.
void convolution_forward(const Problem& p, int algo, const void* x, const void* w, void* y,
                         int device, cudaStream_t stream) {
  size_t workspace_bytes = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(p.handle, p.x.desc, p.w.desc, p.conv.desc,
                                                          p.y.desc, cudnnConvolutionFwdAlgo_t(algo),
                                                          &workspace_bytes));
  const Workspace workspace(device, workspace_bytes, stream);
  const float one = 1.0f, zero = 0.0f;
  NNX_CUDNN_CHECK(cudnnConvolutionForward(p.handle, &one, p.x.desc, x, p.w.desc, w, p.conv.desc,
                                          cudnnConvolutionFwdAlgo_t(algo), workspace.get(),
                                          workspace.bytes(), &zero, p.y.desc, y));
}

void check_fits_int(const Conv2dParams& p) {
  for (int64_t v :
       {p.batch, p.in_channels, p.in_h, p.in_w, p.out_channels, p.out_h, p.out_w, p.kernel_h,
        p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.groups})
    NNX_CHECK(v >= 0 && v <= INT_MAX, ErrorKind::unsupported,
              "Conv2d on CUDA: a size or parameter of ", v, " is beyond cuDNN's int range");
}

// ---- padding

__device__ __forceinline__ int64_t pad_source(PadMode mode, int64_t i, int64_t size) {
  if (i >= 0 && i < size) return i;
  switch (mode) {
    case PadMode::zeros:
      return -1;
    case PadMode::reflect:
      return i < 0 ? -i : 2 * (size - 1) - i;
    case PadMode::replicate:
      return i < 0 ? 0 : size - 1;
    case PadMode::circular:
      return ((i % size) + size) % size;
  }
  return -1;
}

__global__ void pad2d_kernel(PadMode mode, const float* x, int64_t planes, int64_t h, int64_t w,
                             int64_t top, int64_t left, int64_t out_h, int64_t out_w, float* y) {
  const int64_t n = planes * out_h * out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t c = i % out_w;
    const int64_t r = (i / out_w) % out_h;
    const int64_t p = i / (out_w * out_h);
    const int64_t sr = pad_source(mode, r - top, h);
    const int64_t sc = pad_source(mode, c - left, w);
    y[i] = sr < 0 || sc < 0 ? 0.0f : x[(p * h + sr) * w + sc];
  });
}

// y = y + bias[c] (+ z) (then ReLU, NaN propagated as PyTorch's does); z may be null: the
// epilogue of a convolution the graph API ran alone.
__global__ void bias_epilogue_kernel(const float* bias, const float* z, bool relu, int64_t n,
                                     int64_t plane, int64_t channels, float* y) {
  grid_stride_loop(n, [&](int64_t i) {
    float v = y[i] + bias[(i / plane) % channels];
    if (z != nullptr) v += z[i];
    y[i] = !relu || v > 0.0f || isnan(v) ? v : 0.0f;
  });
}

void bias_epilogue(const Conv2dParams& p, const float* bias, const float* z, bool relu, float* y,
                   cudaStream_t stream) {
  const int64_t n = p.batch * p.out_channels * p.out_h * p.out_w;
  bias_epilogue_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(bias, z, relu, n, p.out_h * p.out_w,
                                                               p.out_channels, y);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace

std::string conv_problem_key(const Conv2dParams& p, int device, bool search) {
  std::string key = device_tag(device);
  auto add = [&key](const char* name, std::initializer_list<int64_t> values) {
    key += ';';
    key += name;
    key += '=';
    bool first = true;
    for (int64_t v : values) {
      if (!first) key += ',';
      key += std::to_string(v);
      first = false;
    }
  };
  add("x", {p.batch, p.in_channels, p.in_h, p.in_w});
  add("w", {p.out_channels, p.in_channels / p.groups, p.kernel_h, p.kernel_w});
  add("pad", {p.pad_h, p.pad_w});
  add("stride", {p.stride_h, p.stride_w});
  add("dilation", {p.dilation_h, p.dilation_w});
  add("groups", {p.groups});
  if (p.allow_tf32) key += ";tf32";
  key += search ? ";search" : ";heuristic";
  return key;
}

namespace {

// y = conv(x, w) through cuDNN's legacy API (the heuristic's algorithm, or the searched one with
// NNX_CUDNN_SEARCH=1); returns the cuDNN handle and y's descriptor for a bias added after.
void cudnn_forward(const Conv2dParams& p, const float* x, const float* w, float* y, int device,
                   cudaStream_t stream, const float* bias) {
  const cudnnHandle_t handle = cudnn_handle(stream);
  const TensorDescriptor x_desc(p.batch, p.in_channels, p.in_h, p.in_w);
  const FilterDescriptor w_desc(p.out_channels, p.in_channels / p.groups, p.kernel_h, p.kernel_w);
  const ConvolutionDescriptor conv_desc(p);
  int n = 0, c = 0, h = 0, wd = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv_desc.desc, x_desc.desc, w_desc.desc,
                                                        &n, &c, &h, &wd));
  NNX_CHECK(n == p.batch && c == p.out_channels && h == p.out_h && wd == p.out_w, ErrorKind::shape,
            "Conv2d on CUDA: cuDNN computes an output of [", n, ", ", c, ", ", h, ", ", wd,
            "], expected [", p.batch, ", ", p.out_channels, ", ", p.out_h, ", ", p.out_w, "]");
  const TensorDescriptor y_desc(p.batch, p.out_channels, p.out_h, p.out_w);
  const Problem problem{p.allow_tf32, handle, x_desc, w_desc, conv_desc, y_desc};

  const bool search = conv_search_enabled();
  const int algo = ConvAlgoCache::instance().get(
      conv_problem_key(p, device, search), search, search ? conv_cache_path() : std::string(), [&] {
        return search ? searched_algorithm(problem, x, w, y, device, stream)
                      : heuristic_algorithm(problem);
      });

  convolution_forward(problem, algo, x, w, y, device, stream);
  if (bias != nullptr) {
    const float one = 1.0f;
    const TensorDescriptor bias_desc(1, p.out_channels, 1, 1);
    NNX_CUDNN_CHECK(cudnnAddTensor(handle, &one, bias_desc.desc, bias, &one, y_desc.desc, y));
  }
}

// The conv2d_igemm tile this float32 problem runs on, or none for cuDNN (conv_igemm.h: timed
// against cuDNN's algorithm once per problem by default); y is scratch for the timing runs.
std::optional<IgemmTile> igemm_for(const Conv2dParams& p, const float* x, const float* w, float* y,
                                   int device, cudaStream_t stream) {
  if (conv_graph_api_enabled() || !igemm_applicable(p)) return std::nullopt;
  return use_igemm(
      p, conv_problem_key(p, device, false) + ";igemm", stream,
      [&] { cudnn_forward(p, x, w, y, device, stream, nullptr); },
      [&](IgemmTile t) { conv2d_igemm(p, x, w, nullptr, nullptr, false, y, device, stream, t); });
}

}  // namespace

void conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias,
                    float* y, int device, void* stream_handle) {
  if (p.batch == 0 || p.out_channels == 0 || p.out_h == 0 || p.out_w == 0) return;
  check_fits_int(p);
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (conv_graph_api_enabled() && conv_graph_run(ConvPass::forward, p, const_cast<float*>(x),
                                                 const_cast<float*>(w), y, device, stream)) {
    if (bias != nullptr) bias_epilogue(p, bias, nullptr, false, y, stream);
    return;
  }
  if (const auto tile = igemm_for(p, x, w, y, device, stream)) {
    conv2d_igemm(p, x, w, bias, nullptr, false, y, device, stream, *tile);
    return;
  }
  cudnn_forward(p, x, w, y, device, stream, bias);
}

namespace {

template <class T>
__device__ __forceinline__ T round_float(float v);
template <>
__device__ __forceinline__ __half round_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 round_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <class T>
__global__ void round_kernel(const float* x, T* y, int64_t n) {
  grid_stride_loop(n, [&](int64_t i) { y[i] = round_float<T>(x[i]); });
}

// y (fp32) = x (io) + bias[channel]; `plane` elements per channel.
template <class T>
__global__ void widen_bias_kernel(const T* x, const float* bias, float* y, int64_t n, int64_t plane,
                                  int64_t channels) {
  grid_stride_loop(n, [&](int64_t i) {
    const float b = bias != nullptr ? bias[(i / plane) % channels] : 0.0f;
    y[i] = float(x[i]) + b;
  });
}

cudnnDataType_t io_type(ConvIo io) {
  return io == ConvIo::f16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
}

}  // namespace

void round_to(ConvIo io, const float* x, void* y, int64_t n, void* stream) {
  if (n <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (io == ConvIo::f16)
    round_kernel<<<grid_for(n), kBlockSize, 0, s>>>(x, static_cast<__half*>(y), n);
  else
    round_kernel<<<grid_for(n), kBlockSize, 0, s>>>(x, static_cast<__nv_bfloat16*>(y), n);
  NNX_CUDA_CHECK_LAUNCH();
}

namespace {

// conv2d_forward_reduced through cuDNN: x rounded into a temporary, the convolution in `io`,
// its result widened with the bias.
void cudnn_forward_reduced(const Conv2dParams& p, ConvIo io, const float* x, const void* w_io,
                           const float* bias, float* y, int device, cudaStream_t stream) {
  Conv2dParams tc = p;
  tc.allow_tf32 = true;  // tensor cores, fp32 accumulation
  const int64_t in_n = p.batch * p.in_channels * p.in_h * p.in_w;
  const int64_t out_n = p.batch * p.out_channels * p.out_h * p.out_w;
  // The operands in io (2 bytes an element): the input's, then the output's 256-byte aligned.
  const size_t x_bytes = (size_t(in_n) * 2 + 255) / 256 * 256;
  const Workspace operands(device, x_bytes + size_t(out_n) * 2, stream);
  char* x_io = static_cast<char*>(operands.get());
  char* y_io = x_io + x_bytes;
  round_to(io, x, x_io, in_n, stream);
  if (!conv_graph_api_enabled() ||
      !conv_graph_run(ConvPass::forward, tc, x_io, const_cast<void*>(w_io), y_io, device, stream,
                      io)) {
    const cudnnHandle_t handle = cudnn_handle(stream);
    const cudnnDataType_t type = io_type(io);
    const TensorDescriptor x_desc(p.batch, p.in_channels, p.in_h, p.in_w, type);
    const FilterDescriptor w_desc(p.out_channels, p.in_channels / p.groups, p.kernel_h, p.kernel_w,
                                  type);
    const ConvolutionDescriptor conv_desc(tc);
    const TensorDescriptor y_desc(p.batch, p.out_channels, p.out_h, p.out_w, type);
    const Problem problem{true, handle, x_desc, w_desc, conv_desc, y_desc};
    const int algo = ConvAlgoCache::instance().get(
        conv_problem_key(tc, device, false) + (io == ConvIo::f16 ? ";f16" : ";bf16"), false,
        std::string(), [&] { return heuristic_algorithm(problem); });
    convolution_forward(problem, algo, x_io, w_io, y_io, device, stream);
  }
  const int64_t plane = p.out_h * p.out_w;
  if (io == ConvIo::f16)
    widen_bias_kernel<<<grid_for(out_n), kBlockSize, 0, stream>>>(
        reinterpret_cast<const __half*>(y_io), bias, y, out_n, plane, p.out_channels);
  else
    widen_bias_kernel<<<grid_for(out_n), kBlockSize, 0, stream>>>(
        reinterpret_cast<const __nv_bfloat16*>(y_io), bias, y, out_n, plane, p.out_channels);
  NNX_CUDA_CHECK_LAUNCH();
}

// Whether conv2d_forward_reduced's problem runs on conv2d_igemm_reduced (timed against cuDNN's
// path once per problem by default); y is scratch for the timing runs.
bool reduced_igemm_for(const Conv2dParams& p, ConvIo io, const float* x, const void* w_io, float* y,
                       int device, cudaStream_t stream) {
  Conv2dParams tc = p;
  tc.allow_tf32 = true;
  if (conv_graph_api_enabled() || !igemm_applicable(tc) || !igemm_tensor_available()) return false;
  const std::string key =
      conv_problem_key(tc, device, false) + (io == ConvIo::f16 ? ";f16" : ";bf16") + ";igemm";
  return use_igemm(
             tc, key, stream,
             [&] { cudnn_forward_reduced(p, io, x, w_io, nullptr, y, device, stream); },
             [&](IgemmTile) {
               conv2d_igemm_reduced(p, io, x, w_io, nullptr, nullptr, false, y, device, stream);
             })
      .has_value();
}

}  // namespace

void conv2d_forward_reduced(const Conv2dParams& p, ConvIo io, const float* x, const void* w_io,
                            const float* bias, float* y, int device, void* stream_handle) {
  if (p.batch == 0 || p.out_channels == 0 || p.out_h == 0 || p.out_w == 0) return;
  check_fits_int(p);
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (reduced_igemm_for(p, io, x, w_io, y, device, stream)) {
    conv2d_igemm_reduced(p, io, x, w_io, bias, nullptr, false, y, device, stream);
    return;
  }
  cudnn_forward_reduced(p, io, x, w_io, bias, y, device, stream);
}

bool conv2d_bias_relu_forward_reduced(const Conv2dParams& p, ConvIo io, const float* x,
                                      const void* w_io, const float* bias, const float* z, float* y,
                                      int device, void* stream_handle) {
  if (p.batch == 0 || p.out_channels == 0 || p.out_h == 0 || p.out_w == 0) return true;
  check_fits_int(p);
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (!reduced_igemm_for(p, io, x, w_io, y, device, stream)) return false;
  conv2d_igemm_reduced(p, io, x, w_io, bias, z, true, y, device, stream);
  return true;
}

namespace {

template <class Perf>
int first_allowed_algorithm(const std::vector<Perf>& perf, int returned, bool allow_tf32,
                            int fallback) {
  for (int i = 0; i < returned; ++i)
    if (perf[size_t(i)].status == CUDNN_STATUS_SUCCESS &&
        (allow_tf32 || !uses_tensor_cores(perf[size_t(i)].mathType)))
      return int(perf[size_t(i)].algo);
  return fallback;
}

int backward_data_algorithm(const Problem& p) {
  int count = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(p.handle, &count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(size_t(count > 0 ? count : 1));
  int returned = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      p.handle, p.w.desc, p.y.desc, p.conv.desc, p.x.desc, count, &returned, perf.data()));
  return first_allowed_algorithm(perf, returned, p.allow_tf32,
                                 int(CUDNN_CONVOLUTION_BWD_DATA_ALGO_1));
}

int backward_filter_algorithm(const Problem& p) {
  int count = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(p.handle, &count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(size_t(count > 0 ? count : 1));
  int returned = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      p.handle, p.x.desc, p.y.desc, p.conv.desc, p.w.desc, count, &returned, perf.data()));
  return first_allowed_algorithm(perf, returned, p.allow_tf32,
                                 int(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1));
}

__global__ void pad2d_backward_kernel(PadMode mode, const float* dy, int64_t planes, int64_t h,
                                      int64_t w, int64_t top, int64_t left, int64_t out_h,
                                      int64_t out_w, float* dx) {
  // One thread per padded element, adding into its source (several may share one).
  const int64_t n = planes * out_h * out_w;
  grid_stride_loop(n, [&](int64_t i) {
    const int64_t c = i % out_w;
    const int64_t r = (i / out_w) % out_h;
    const int64_t p = i / (out_w * out_h);
    const int64_t sr = pad_source(mode, r - top, h);
    const int64_t sc = pad_source(mode, c - left, w);
    if (sr >= 0 && sc >= 0) atomicAdd(dx + (p * h + sr) * w + sc, dy[i]);
  });
}

}  // namespace

void conv2d_backward(const Conv2dParams& p, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, int device, void* stream_handle) {
  check_fits_int(p);
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const int64_t weight_elements =
      p.out_channels * (p.in_channels / std::max<int64_t>(1, p.groups)) * p.kernel_h * p.kernel_w;
  const bool empty_output = p.batch == 0 || p.out_channels == 0 || p.out_h == 0 || p.out_w == 0;
  if (empty_output) {
    // Nothing flows back: every gradient is zero.
    if (dx != nullptr && p.batch * p.in_channels * p.in_h * p.in_w > 0)
      NNX_CUDA_CHECK(cudaMemsetAsync(
          dx, 0, size_t(p.batch * p.in_channels * p.in_h * p.in_w) * sizeof(float), stream));
    if (dw != nullptr && weight_elements > 0)
      NNX_CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(weight_elements) * sizeof(float), stream));
    if (db != nullptr && p.out_channels > 0)
      NNX_CUDA_CHECK(cudaMemsetAsync(db, 0, size_t(p.out_channels) * sizeof(float), stream));
    return;
  }
  if (conv_graph_api_enabled()) {  // what the graph API takes is done (null)
    if (dx != nullptr && conv_graph_run(ConvPass::backward_data, p, dx, const_cast<float*>(w),
                                        const_cast<float*>(dy), device, stream))
      dx = nullptr;
    if (dw != nullptr && conv_graph_run(ConvPass::backward_filter, p, const_cast<float*>(x), dw,
                                        const_cast<float*>(dy), device, stream))
      dw = nullptr;
    if (dx == nullptr && dw == nullptr && db == nullptr) return;
  }
  const cudnnHandle_t handle = cudnn_handle(stream);
  const TensorDescriptor x_desc(p.batch, p.in_channels, p.in_h, p.in_w);
  const FilterDescriptor w_desc(p.out_channels, p.in_channels / p.groups, p.kernel_h, p.kernel_w);
  const ConvolutionDescriptor conv_desc(p);
  const TensorDescriptor y_desc(p.batch, p.out_channels, p.out_h, p.out_w);
  const Problem problem{p.allow_tf32, handle, x_desc, w_desc, conv_desc, y_desc};
  const float one = 1.0f, zero = 0.0f;
  auto& cache = ConvAlgoCache::instance();
  const std::string key = conv_problem_key(p, device, false);
  if (dx != nullptr) {
    auto cudnn_data = [&] {
      const int algo = cache.get(key + ";backward_data", false, std::string(),
                                 [&] { return backward_data_algorithm(problem); });
      size_t bytes = 0;
      NNX_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
          handle, w_desc.desc, y_desc.desc, conv_desc.desc, x_desc.desc,
          cudnnConvolutionBwdDataAlgo_t(algo), &bytes));
      const Workspace workspace(device, bytes, stream);
      NNX_CUDNN_CHECK(
          cudnnConvolutionBackwardData(handle, &one, w_desc.desc, w, y_desc.desc, dy,
                                       conv_desc.desc, cudnnConvolutionBwdDataAlgo_t(algo),
                                       workspace.get(), workspace.bytes(), &zero, x_desc.desc, dx));
    };
    // Ours (stride 1, groups 1): timed against cuDNN's once per problem by default.
    std::optional<IgemmTile> tile;
    if (!p.allow_tf32 && p.groups == 1 && igemm_data_grad_applicable(p)) {
      const Conv2dParams q = data_grad_problem(p);
      tile = use_igemm(q, key + ";backward_data;igemm", stream, cudnn_data, [&](IgemmTile t) {
        conv2d_igemm_data_grad(p, dy, w, dx, device, stream, t);
      });
    }
    if (tile)
      conv2d_igemm_data_grad(p, dy, w, dx, device, stream, *tile);
    else
      cudnn_data();
  }
  if (dw != nullptr) {
    auto cudnn_filter = [&] {
      const int algo = cache.get(key + ";backward_filter", false, std::string(),
                                 [&] { return backward_filter_algorithm(problem); });
      size_t bytes = 0;
      NNX_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
          handle, x_desc.desc, y_desc.desc, conv_desc.desc, w_desc.desc,
          cudnnConvolutionBwdFilterAlgo_t(algo), &bytes));
      const Workspace workspace(device, bytes, stream);
      NNX_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
          handle, &one, x_desc.desc, x, y_desc.desc, dy, conv_desc.desc,
          cudnnConvolutionBwdFilterAlgo_t(algo), workspace.get(), workspace.bytes(), &zero,
          w_desc.desc, dw));
    };
    std::optional<IgemmTile> tile;
    if (!p.allow_tf32 && p.groups == 1 && igemm_filter_grad_applicable(p))
      tile = use_igemm(
          p, key + ";backward_filter;igemm", stream, cudnn_filter,
          [&](IgemmTile t) { conv2d_igemm_filter_grad(p, x, dy, dw, device, stream, t); },
          igemm_tiles_for(p.out_channels, p.in_channels * p.kernel_h * p.kernel_w));
    if (tile)
      conv2d_igemm_filter_grad(p, x, dy, dw, device, stream, *tile);
    else
      cudnn_filter();
  }
  if (db != nullptr) {
    const TensorDescriptor bias_desc(1, p.out_channels, 1, 1);
    NNX_CUDNN_CHECK(
        cudnnConvolutionBackwardBias(handle, &one, y_desc.desc, dy, &zero, bias_desc.desc, db));
  }
}

void pad2d_backward(PadMode mode, const float* dy, int64_t planes, int64_t h, int64_t w,
                    int64_t top, int64_t bottom, int64_t left, int64_t right, float* dx,
                    void* stream) {
  const int64_t in = planes * h * w;
  if (in <= 0) return;
  NNX_CUDA_CHECK(
      cudaMemsetAsync(dx, 0, size_t(in) * sizeof(float), static_cast<cudaStream_t>(stream)));
  const int64_t out_h = h + top + bottom, out_w = w + left + right;
  const int64_t n = planes * out_h * out_w;
  pad2d_backward_kernel<<<grid_for(n), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      mode, dy, planes, h, w, top, left, out_h, out_w, dx);
  NNX_CUDA_CHECK_LAUNCH();
}

bool conv2d_bias_relu_forward(const Conv2dParams& p, const float* x, const float* w,
                              const float* bias, const float* z, float* y, int device,
                              void* stream_handle) {
  if (p.batch == 0 || p.out_channels == 0 || p.out_h == 0 || p.out_w == 0) return true;
  check_fits_int(p);
  if (conv_graph_api_enabled()) {
    // The graph API's convolution, then one pass for the bias, the residual and the ReLU.
    const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
    if (!conv_graph_run(ConvPass::forward, p, const_cast<float*>(x), const_cast<float*>(w), y,
                        device, stream))
      return false;
    bias_epilogue(p, bias, z, true, y, stream);
    return true;
  }
  if (const auto tile = igemm_for(p, x, w, y, device, static_cast<cudaStream_t>(stream_handle))) {
    conv2d_igemm(p, x, w, bias, z, true, y, device, stream_handle, *tile);
    return true;
  }
  const std::string key =
      conv_problem_key(p, device, false) + (z != nullptr ? ";fused+z" : ";fused");
  static std::mutex mutex;
  static std::map<std::string, bool> unsupported;  // problems cuDNN refused fused
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (unsupported.count(key) != 0) return false;
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const cudnnHandle_t handle = cudnn_handle(stream);
  const TensorDescriptor x_desc(p.batch, p.in_channels, p.in_h, p.in_w);
  const FilterDescriptor w_desc(p.out_channels, p.in_channels / p.groups, p.kernel_h, p.kernel_w);
  const ConvolutionDescriptor conv_desc(p);
  const TensorDescriptor y_desc(p.batch, p.out_channels, p.out_h, p.out_w);
  const TensorDescriptor bias_desc(1, p.out_channels, 1, 1);
  const Problem problem{p.allow_tf32, handle, x_desc, w_desc, conv_desc, y_desc};
  const int algo =
      ConvAlgoCache::instance().get(conv_problem_key(p, device, false), false, std::string(),
                                    [&] { return heuristic_algorithm(problem); });
  cudnnActivationDescriptor_t relu = nullptr;
  NNX_CUDNN_CHECK(cudnnCreateActivationDescriptor(&relu));
  struct Destroy {
    cudnnActivationDescriptor_t d;
    ~Destroy() { (void)cudnnDestroyActivationDescriptor(d); }
  } destroy{relu};
  NNX_CUDNN_CHECK(
      cudnnSetActivationDescriptor(relu, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0));
  size_t workspace_bytes = 0;
  NNX_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(
      handle, x_desc.desc, w_desc.desc, conv_desc.desc, y_desc.desc,
      cudnnConvolutionFwdAlgo_t(algo), &workspace_bytes));
  const Workspace workspace(device, workspace_bytes, stream);
  const float one = 1.0f, zero = 0.0f;
  const cudnnStatus_t status = cudnnConvolutionBiasActivationForward(
      handle, &one, x_desc.desc, x, w_desc.desc, w, conv_desc.desc, cudnnConvolutionFwdAlgo_t(algo),
      workspace.get(), workspace.bytes(), z != nullptr ? &one : &zero, y_desc.desc,
      z != nullptr ? z : y, bias_desc.desc, bias, relu, y_desc.desc, y);
  if (status == CUDNN_STATUS_NOT_SUPPORTED || status == CUDNN_STATUS_BAD_PARAM) {
    std::lock_guard<std::mutex> lock(mutex);
    unsupported.insert({key, true});
    return false;
  }
  NNX_CUDNN_CHECK(status);
  return true;
}

void pad2d(PadMode mode, const float* x, int64_t planes, int64_t h, int64_t w, int64_t top,
           int64_t bottom, int64_t left, int64_t right, float* y, void* stream) {
  const int64_t out_h = h + top + bottom, out_w = w + left + right;
  const int64_t n = planes * out_h * out_w;
  if (n <= 0) return;
  pad2d_kernel<<<grid_for(n), kBlockSize, 0, static_cast<cudaStream_t>(stream)>>>(
      mode, x, planes, h, w, top, left, out_h, out_w, y);
  NNX_CUDA_CHECK_LAUNCH();
}

}  // namespace nnx::cuda
