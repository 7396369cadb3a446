// The CUDA emulator's stand-ins for the cuDNN and cuBLAS calls the runtime makes: the legacy
// convolution API (descriptors, algorithm queries, forward with bias, residual and ReLU,
// backward data, filter and bias, AddTensor) and SGEMM, computed on the host in float (Eigen's
// GEMM over im2col columns) and queued on the handle's stream like a kernel, so that they are
// captured into CUDA graphs and replayed from them. Arguments are checked as the libraries do
// (shapes against descriptors, device pointers, workspace size): a mismatch is BAD_PARAM. The
// backend ("graph") API answers NOT_SUPPORTED, which the runtime treats as "use the legacy API".
// Not emulated: TF32 and the libraries' own rounding (results are float GEMMs).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tests/cuda_emulator/host_gemm.h"
#include "tests/cuda_emulator/host_work.h"

struct cudnnContext {
  cudaStream_t stream = nullptr;
};
struct cudnnTensorStruct {
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
  bool set = false;
};
struct cudnnFilterStruct {
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int k = 0, c = 0, h = 0, w = 0;
  bool set = false;
};
struct cudnnConvolutionStruct {
  int pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1, groups = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  bool set = false;
};
struct cudnnActivationStruct {
  cudnnActivationMode_t mode = CUDNN_ACTIVATION_IDENTITY;
};
struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

using nnx::emu::host_gemm;
using nnx::emu::is_device_memory;
using nnx::emu::submit_host_work;

// The workspace every algorithm asks for, so that the runtime's workspace path runs.
constexpr size_t kWorkspace = 4096;

size_t element_bytes(cudnnDataType_t t) {
  return t == CUDNN_DATA_FLOAT ? 4 : 2;
}
bool supported_type(cudnnDataType_t t) {
  return t == CUDNN_DATA_FLOAT || t == CUDNN_DATA_HALF || t == CUDNN_DATA_BFLOAT16;
}

float load(const void* p, size_t i, cudnnDataType_t t) {
  switch (t) {
    case CUDNN_DATA_HALF:
      return __half2float(static_cast<const __half*>(p)[i]);
    case CUDNN_DATA_BFLOAT16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}
void store(void* p, size_t i, cudnnDataType_t t, float v) {
  switch (t) {
    case CUDNN_DATA_HALF:
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      break;
    case CUDNN_DATA_BFLOAT16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
  }
}

std::vector<float> read_all(const void* p, size_t n, cudnnDataType_t t) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = load(p, i, t);
  return out;
}

// out = alpha * value + beta * out (out not read when beta is 0, as the libraries promise).
void blend(void* out, cudnnDataType_t t, const std::vector<float>& value, float alpha, float beta) {
  for (size_t i = 0; i < value.size(); ++i) {
    const float prior = beta != 0.0f ? beta * load(out, i, t) : 0.0f;
    store(out, i, t, alpha * value[i] + prior);
  }
}

size_t count(const cudnnTensorStruct& d) {
  return size_t(d.n) * d.c * d.h * d.w;
}
size_t count(const cudnnFilterStruct& d) {
  return size_t(d.k) * d.c * d.h * d.w;
}

// One convolution problem, checked against its descriptors.
struct Problem {
  cudnnTensorStruct x, y;
  cudnnFilterStruct w;
  cudnnConvolutionStruct conv;
  int out_h = 0, out_w = 0;

  bool valid() const {
    if (!x.set || !y.set || !w.set || !conv.set || conv.groups < 1) return false;
    if (x.type != w.type || y.type != x.type) return false;  // cuDNN's configurations: one type
    if (x.c != w.c * conv.groups || w.k % conv.groups != 0 || y.c != w.k || y.n != x.n)
      return false;
    return y.h == out_h && y.w == out_w && out_h > 0 && out_w > 0;
  }
  int kc() const { return w.c * w.h * w.w; }  // one group's column height
};

Problem problem(const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y) {
  Problem p{*x, *y, *w, *conv};
  // A kernel wider than the padded input: no output (not the 1 that C++'s division would give).
  const int span_h = x->h + 2 * conv->pad_h - conv->dil_h * (w->h - 1) - 1;
  const int span_w = x->w + 2 * conv->pad_w - conv->dil_w * (w->w - 1) - 1;
  p.out_h = span_h < 0 ? 0 : span_h / conv->stride_h + 1;
  p.out_w = span_w < 0 ? 0 : span_w / conv->stride_w + 1;
  return p;
}

// The columns of image n, group g: [kc, out_h * out_w], row-major.
std::vector<float> im2col(const Problem& p, const std::vector<float>& x, int n, int g) {
  const int oh = p.out_h, ow = p.out_w;
  const int64_t cols = int64_t(oh) * ow;
  std::vector<float> col(size_t(p.kc()) * cols, 0.0f);
  for (int c = 0; c < p.w.c; ++c) {
    const int ic = g * p.w.c + c;
    const float* plane = x.data() + (size_t(n) * p.x.c + ic) * p.x.h * p.x.w;
    for (int kh = 0; kh < p.w.h; ++kh) {
      for (int kw = 0; kw < p.w.w; ++kw) {
        const int row = (c * p.w.h + kh) * p.w.w + kw;
        const int fh = p.conv.mode == CUDNN_CONVOLUTION ? p.w.h - 1 - kh : kh;
        const int fw = p.conv.mode == CUDNN_CONVOLUTION ? p.w.w - 1 - kw : kw;
        for (int i = 0; i < oh; ++i) {
          const int ih = i * p.conv.stride_h - p.conv.pad_h + fh * p.conv.dil_h;
          if (ih < 0 || ih >= p.x.h) continue;
          for (int j = 0; j < ow; ++j) {
            const int iw = j * p.conv.stride_w - p.conv.pad_w + fw * p.conv.dil_w;
            if (iw >= 0 && iw < p.x.w)
              col[row * cols + int64_t(i) * ow + j] = plane[ih * p.x.w + iw];
          }
        }
      }
    }
  }
  return col;
}

// The reverse: columns added back into image n, group g of dx.
void col2im(const Problem& p, const std::vector<float>& col, std::vector<float>& dx, int n, int g) {
  const int oh = p.out_h, ow = p.out_w;
  const int64_t cols = int64_t(oh) * ow;
  for (int c = 0; c < p.w.c; ++c) {
    const int ic = g * p.w.c + c;
    float* plane = dx.data() + (size_t(n) * p.x.c + ic) * p.x.h * p.x.w;
    for (int kh = 0; kh < p.w.h; ++kh) {
      for (int kw = 0; kw < p.w.w; ++kw) {
        const int row = (c * p.w.h + kh) * p.w.w + kw;
        const int fh = p.conv.mode == CUDNN_CONVOLUTION ? p.w.h - 1 - kh : kh;
        const int fw = p.conv.mode == CUDNN_CONVOLUTION ? p.w.w - 1 - kw : kw;
        for (int i = 0; i < oh; ++i) {
          const int ih = i * p.conv.stride_h - p.conv.pad_h + fh * p.conv.dil_h;
          if (ih < 0 || ih >= p.x.h) continue;
          for (int j = 0; j < ow; ++j) {
            const int iw = j * p.conv.stride_w - p.conv.pad_w + fw * p.conv.dil_w;
            if (iw >= 0 && iw < p.x.w)
              plane[ih * p.x.w + iw] += col[row * cols + int64_t(i) * ow + j];
          }
        }
      }
    }
  }
}

// One group's weights: a row-major [k / groups, kc] matrix.
const float* weights(const Problem& p, const std::vector<float>& w, int g) {
  return w.data() + size_t(g) * (p.w.k / p.conv.groups) * p.kc();
}

std::vector<float> forward(const Problem& p, const std::vector<float>& x,
                           const std::vector<float>& w) {
  const int kg = p.w.k / p.conv.groups;
  const int64_t plane = int64_t(p.out_h) * p.out_w;
  std::vector<float> y(count(p.y));
  for (int n = 0; n < p.x.n; ++n) {
    for (int g = 0; g < p.conv.groups; ++g) {
      const std::vector<float> col = im2col(p, x, n, g);
      host_gemm(false, false, kg, plane, p.kc(), weights(p, w, g), p.kc(), col.data(), plane,
                y.data() + (size_t(n) * p.y.c + size_t(g) * kg) * plane, plane, false);
    }
  }
  return y;
}

bool on_device(const void* p, size_t bytes) {
  return bytes == 0 || is_device_memory(p, bytes);
}

bool workspace_ok(const void* ws, size_t bytes) {
  return bytes >= kWorkspace && on_device(ws, kWorkspace);
}

template <class Perf, class Algo>
cudnnStatus_t one_algorithm(const cudnnConvolutionStruct* conv, int requested, int* returned,
                            Perf* results) {
  if (requested < 1 || conv == nullptr) return CUDNN_STATUS_BAD_PARAM;
  *returned = 1;
  results[0] = Perf{};
  results[0].algo = Algo(0);
  results[0].status = CUDNN_STATUS_SUCCESS;
  results[0].time = 0.01f;
  results[0].memory = kWorkspace;
  results[0].determinism = CUDNN_DETERMINISTIC;
  results[0].mathType = conv->math;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t queue(const char* call, cudnnHandle_t handle, std::function<void()> work) {
  nnx::emu::count(call);
  return submit_host_work(handle->stream, std::move(work)) == cudaSuccess
             ? CUDNN_STATUS_SUCCESS
             : CUDNN_STATUS_EXECUTION_FAILED;
}

// The descriptors' create and destroy calls.
template <class T>
cudnnStatus_t create(T** d) {
  *d = new T;
  return CUDNN_STATUS_SUCCESS;
}
template <class T>
cudnnStatus_t destroy(T* d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

// ---- cuDNN: handles, errors, descriptors -------------------------------------------------------

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  return create(handle);
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  return destroy(handle);
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}
const char* cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_SUCCESS:
      return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM:
      return "CUDNN_STATUS_BAD_PARAM (CUDA emulator: arguments that do not match)";
    case CUDNN_STATUS_NOT_SUPPORTED:
      return "CUDNN_STATUS_NOT_SUPPORTED (CUDA emulator)";
    default:
      return "CUDNN_STATUS (CUDA emulator)";
  }
}
size_t cudnnGetVersion(void) {
  return CUDNN_VERSION;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* d) {
  return create(d);
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
  return destroy(d);
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
  if (format != CUDNN_TENSOR_NCHW || !supported_type(type) || n < 1 || c < 1 || h < 1 || w < 1)
    return CUDNN_STATUS_BAD_PARAM;
  *d = cudnnTensorStruct{type, n, c, h, w, true};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* d) {
  return create(d);
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
  return destroy(d);
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
  if (format != CUDNN_TENSOR_NCHW || !supported_type(type) || k < 1 || c < 1 || h < 1 || w < 1)
    return CUDNN_STATUS_BAD_PARAM;
  *d = cudnnFilterStruct{type, k, c, h, w, true};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* d) {
  return create(d);
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  return destroy(d);
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w,
                                              int u, int v, int dilation_h, int dilation_w,
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
  if (pad_h < 0 || pad_w < 0 || u < 1 || v < 1 || dilation_h < 1 || dilation_w < 1 ||
      compute != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_BAD_PARAM;
  d->pad_h = pad_h;
  d->pad_w = pad_w;
  d->stride_h = u;
  d->stride_w = v;
  d->dil_h = dilation_h;
  d->dil_w = dilation_w;
  d->mode = mode;
  d->compute = compute;
  d->set = true;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groups) {
  if (groups < 1) return CUDNN_STATUS_BAD_PARAM;
  d->groups = groups;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
  d->math = math;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t conv,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int* n, int* c,
                                                    int* h, int* out_w) {
  if (!conv->set || !x->set || !w->set || x->c != w->c * conv->groups)
    return CUDNN_STATUS_BAD_PARAM;
  cudnnTensorStruct y{x->type, x->n, w->k, 1, 1, true};
  const Problem p = problem(x, w, conv, &y);
  if (p.out_h < 1 || p.out_w < 1) return CUDNN_STATUS_BAD_PARAM;
  *n = x->n;
  *c = w->k;
  *h = p.out_h;
  *out_w = p.out_w;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateActivationDescriptor(cudnnActivationDescriptor_t* d) {
  return create(d);
}
cudnnStatus_t cudnnDestroyActivationDescriptor(cudnnActivationDescriptor_t d) {
  return destroy(d);
}
cudnnStatus_t cudnnSetActivationDescriptor(cudnnActivationDescriptor_t d,
                                           cudnnActivationMode_t mode, cudnnNanPropagation_t,
                                           double) {
  if (mode != CUDNN_ACTIVATION_RELU && mode != CUDNN_ACTIVATION_IDENTITY)
    return CUDNN_STATUS_NOT_SUPPORTED;
  d->mode = mode;
  return CUDNN_STATUS_SUCCESS;
}

// ---- cuDNN: algorithms and workspaces ----------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t, int* n) {
  *n = 1;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t, int* n) {
  *n = 1;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t, int* n) {
  *n = 1;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                                     const cudnnFilterDescriptor_t,
                                                     const cudnnConvolutionDescriptor_t conv,
                                                     const cudnnTensorDescriptor_t, int requested,
                                                     int* returned,
                                                     cudnnConvolutionFwdAlgoPerf_t* results) {
  return one_algorithm<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(conv, requested,
                                                                                 returned, results);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t, const cudnnFilterDescriptor_t, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t, int requested,
    int* returned, cudnnConvolutionBwdDataAlgoPerf_t* results) {
  return one_algorithm<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      conv, requested, returned, results);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t, int requested,
    int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* results) {
  return one_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      conv, requested, returned, results);
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                                      const cudnnFilterDescriptor_t,
                                                      const cudnnConvolutionDescriptor_t,
                                                      const cudnnTensorDescriptor_t,
                                                      cudnnConvolutionFwdAlgo_t, size_t* bytes) {
  *bytes = kWorkspace;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t, const cudnnFilterDescriptor_t, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t, const cudnnTensorDescriptor_t,
    cudnnConvolutionBwdDataAlgo_t, size_t* bytes) {
  *bytes = kWorkspace;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t, const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t, const cudnnFilterDescriptor_t,
    cudnnConvolutionBwdFilterAlgo_t, size_t* bytes) {
  *bytes = kWorkspace;
  return CUDNN_STATUS_SUCCESS;
}

// ---- cuDNN: the convolutions -------------------------------------------------------------------

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                      const cudnnTensorDescriptor_t x_desc, const void* x,
                                      const cudnnFilterDescriptor_t w_desc, const void* w,
                                      const cudnnConvolutionDescriptor_t conv_desc,
                                      cudnnConvolutionFwdAlgo_t, void* ws, size_t ws_bytes,
                                      const void* beta, const cudnnTensorDescriptor_t y_desc,
                                      void* y) {
  const Problem p = problem(x_desc, w_desc, conv_desc, y_desc);
  if (!p.valid() || !on_device(x, count(p.x) * element_bytes(p.x.type)) ||
      !on_device(w, count(p.w) * element_bytes(p.w.type)) ||
      !on_device(y, count(p.y) * element_bytes(p.y.type)) || !workspace_ok(ws, ws_bytes))
    return CUDNN_STATUS_BAD_PARAM;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  return queue("cudnnConvolutionForward", handle, [=] {
    const auto out =
        forward(p, read_all(x, count(p.x), p.x.type), read_all(w, count(p.w), p.w.type));
    blend(y, p.y.type, out, a, b);
  });
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x_desc, const void* x,
    const cudnnFilterDescriptor_t w_desc, const void* w,
    const cudnnConvolutionDescriptor_t conv_desc, const cudnnTensorDescriptor_t y_desc, void* y,
    int requested, int* returned, cudnnConvolutionFwdAlgoPerf_t* results, void* ws,
    size_t ws_bytes) {
  const float one = 1.0f, zero = 0.0f;
  const cudnnStatus_t status = cudnnConvolutionForward(
      handle, &one, x_desc, x, w_desc, w, conv_desc, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws,
      ws_bytes, &zero, y_desc, y);
  if (status != CUDNN_STATUS_SUCCESS) return status;
  return one_algorithm<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      conv_desc, requested, returned, results);
}

cudnnStatus_t cudnnConvolutionBiasActivationForward(
    cudnnHandle_t handle, const void* alpha1, const cudnnTensorDescriptor_t x_desc, const void* x,
    const cudnnFilterDescriptor_t w_desc, const void* w,
    const cudnnConvolutionDescriptor_t conv_desc, cudnnConvolutionFwdAlgo_t, void* ws,
    size_t ws_bytes, const void* alpha2, const cudnnTensorDescriptor_t z_desc, const void* z,
    const cudnnTensorDescriptor_t bias_desc, const void* bias,
    const cudnnActivationDescriptor_t activation, const cudnnTensorDescriptor_t y_desc, void* y) {
  const Problem p = problem(x_desc, w_desc, conv_desc, y_desc);
  const cudnnTensorStruct zd = *z_desc, bd = *bias_desc;
  if (!p.valid() || zd.n != p.y.n || zd.c != p.y.c || zd.h != p.y.h || zd.w != p.y.w ||
      zd.type != p.y.type || bd.type != p.y.type || bd.n != 1 || bd.c != p.y.c || bd.h != 1 ||
      bd.w != 1 || !on_device(x, count(p.x) * element_bytes(p.x.type)) ||
      !on_device(w, count(p.w) * element_bytes(p.w.type)) ||
      !on_device(z, count(zd) * element_bytes(zd.type)) ||
      !on_device(bias, count(bd) * element_bytes(bd.type)) ||
      !on_device(y, count(p.y) * element_bytes(p.y.type)) || !workspace_ok(ws, ws_bytes))
    return CUDNN_STATUS_BAD_PARAM;
  const float a1 = *static_cast<const float*>(alpha1), a2 = *static_cast<const float*>(alpha2);
  const bool relu = activation->mode == CUDNN_ACTIVATION_RELU;
  return queue("cudnnConvolutionBiasActivationForward", handle, [=] {
    std::vector<float> out =
        forward(p, read_all(x, count(p.x), p.x.type), read_all(w, count(p.w), p.w.type));
    const size_t plane = size_t(p.out_h) * p.out_w;
    for (size_t i = 0; i < out.size(); ++i) {
      float v = a1 * out[i] + load(bias, i / plane % size_t(p.y.c), bd.type);
      if (a2 != 0.0f) v += a2 * load(z, i, zd.type);
      out[i] = relu ? std::max(v, 0.0f) : v;  // NaN stays NaN (max returns its first argument)
    }
    blend(y, p.y.type, out, 1.0f, 0.0f);
  });
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                           const cudnnFilterDescriptor_t w_desc, const void* w,
                                           const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                           const cudnnConvolutionDescriptor_t conv_desc,
                                           cudnnConvolutionBwdDataAlgo_t, void* ws, size_t ws_bytes,
                                           const void* beta, const cudnnTensorDescriptor_t dx_desc,
                                           void* dx) {
  const Problem p = problem(dx_desc, w_desc, conv_desc, dy_desc);
  if (!p.valid() || !on_device(w, count(p.w) * element_bytes(p.w.type)) ||
      !on_device(dy, count(p.y) * element_bytes(p.y.type)) ||
      !on_device(dx, count(p.x) * element_bytes(p.x.type)) || !workspace_ok(ws, ws_bytes))
    return CUDNN_STATUS_BAD_PARAM;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  return queue("cudnnConvolutionBackwardData", handle, [=] {
    const std::vector<float> wv = read_all(w, count(p.w), p.w.type);
    const std::vector<float> g = read_all(dy, count(p.y), p.y.type);
    std::vector<float> out(count(p.x), 0.0f);
    const int kg = p.w.k / p.conv.groups;
    const int64_t plane = int64_t(p.out_h) * p.out_w;
    for (int n = 0; n < p.x.n; ++n) {
      for (int grp = 0; grp < p.conv.groups; ++grp) {
        const float* gy = g.data() + (size_t(n) * p.y.c + size_t(grp) * kg) * plane;
        std::vector<float> col(size_t(p.kc()) * plane);
        host_gemm(true, false, p.kc(), plane, kg, weights(p, wv, grp), p.kc(), gy, plane,
                  col.data(), plane, false);
        col2im(p, col, out, n, grp);
      }
    }
    blend(dx, p.x.type, out, a, b);
  });
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                             const cudnnTensorDescriptor_t x_desc, const void* x,
                                             const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                             const cudnnConvolutionDescriptor_t conv_desc,
                                             cudnnConvolutionBwdFilterAlgo_t, void* ws,
                                             size_t ws_bytes, const void* beta,
                                             const cudnnFilterDescriptor_t dw_desc, void* dw) {
  const Problem p = problem(x_desc, dw_desc, conv_desc, dy_desc);
  if (!p.valid() || !on_device(x, count(p.x) * element_bytes(p.x.type)) ||
      !on_device(dy, count(p.y) * element_bytes(p.y.type)) ||
      !on_device(dw, count(p.w) * element_bytes(p.w.type)) || !workspace_ok(ws, ws_bytes))
    return CUDNN_STATUS_BAD_PARAM;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  return queue("cudnnConvolutionBackwardFilter", handle, [=] {
    const std::vector<float> xv = read_all(x, count(p.x), p.x.type);
    const std::vector<float> g = read_all(dy, count(p.y), p.y.type);
    const int kg = p.w.k / p.conv.groups;
    const int64_t plane = int64_t(p.out_h) * p.out_w;
    std::vector<float> out(count(p.w), 0.0f);
    for (int grp = 0; grp < p.conv.groups; ++grp) {
      float* gw = out.data() + size_t(grp) * kg * p.kc();
      for (int n = 0; n < p.x.n; ++n) {
        const float* gy = g.data() + (size_t(n) * p.y.c + size_t(grp) * kg) * plane;
        const std::vector<float> col = im2col(p, xv, n, grp);
        host_gemm(false, true, kg, p.kc(), plane, gy, plane, col.data(), plane, gw, p.kc(), true);
      }
    }
    blend(dw, p.w.type, out, a, b);
  });
}

cudnnStatus_t cudnnConvolutionBackwardBias(cudnnHandle_t handle, const void* alpha,
                                           const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                           const void* beta, const cudnnTensorDescriptor_t db_desc,
                                           void* db) {
  const cudnnTensorStruct g = *dy_desc, d = *db_desc;
  if (!g.set || !d.set || d.n != 1 || d.c != g.c || d.h != 1 || d.w != 1 ||
      !on_device(dy, count(g) * element_bytes(g.type)) ||
      !on_device(db, count(d) * element_bytes(d.type)))
    return CUDNN_STATUS_BAD_PARAM;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  return queue("cudnnConvolutionBackwardBias", handle, [=] {
    std::vector<double> sums(size_t(g.c), 0.0);
    const size_t plane = size_t(g.h) * g.w;
    for (size_t i = 0; i < count(g); ++i) sums[i / plane % size_t(g.c)] += load(dy, i, g.type);
    blend(db, d.type, std::vector<float>(sums.begin(), sums.end()), a, b);
  });
}

cudnnStatus_t cudnnAddTensor(cudnnHandle_t handle, const void* alpha,
                             const cudnnTensorDescriptor_t a_desc, const void* a, const void* beta,
                             const cudnnTensorDescriptor_t c_desc, void* c) {
  const cudnnTensorStruct ad = *a_desc, cd = *c_desc;
  auto fits = [](int from, int to) { return from == to || from == 1; };
  if (!ad.set || !cd.set || !fits(ad.n, cd.n) || !fits(ad.c, cd.c) || !fits(ad.h, cd.h) ||
      !fits(ad.w, cd.w) || !on_device(a, count(ad) * element_bytes(ad.type)) ||
      !on_device(c, count(cd) * element_bytes(cd.type)))
    return CUDNN_STATUS_BAD_PARAM;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  return queue("cudnnAddTensor", handle, [=] {
    std::vector<float> value(count(cd));
    for (int n = 0; n < cd.n; ++n)
      for (int ch = 0; ch < cd.c; ++ch)
        for (int h = 0; h < cd.h; ++h)
          for (int w = 0; w < cd.w; ++w) {
            const size_t src = ((size_t(ad.n == 1 ? 0 : n) * ad.c + (ad.c == 1 ? 0 : ch)) * ad.h +
                                (ad.h == 1 ? 0 : h)) *
                                   ad.w +
                               (ad.w == 1 ? 0 : w);
            value[((size_t(n) * cd.c + ch) * cd.h + h) * cd.w + w] = load(a, src, ad.type);
          }
    blend(c, cd.type, value, al, be);
  });
}

// ---- cuDNN: the backend API, which the emulator does not offer ---------------------------------

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t,
                                           cudnnBackendDescriptor_t* d) {
  *d = nullptr;
  return CUDNN_STATUS_NOT_SUPPORTED;
}
cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t) {
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t,
                                       cudnnBackendAttributeType_t, int64_t, const void*) {
  return CUDNN_STATUS_NOT_SUPPORTED;
}
cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const, cudnnBackendAttributeName_t,
                                       cudnnBackendAttributeType_t, int64_t, int64_t*, void*) {
  return CUDNN_STATUS_NOT_SUPPORTED;
}
cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t) {
  return CUDNN_STATUS_NOT_SUPPORTED;
}
cudnnStatus_t cudnnBackendExecute(cudnnHandle_t, cudnnBackendDescriptor_t,
                                  cudnnBackendDescriptor_t) {
  return CUDNN_STATUS_NOT_SUPPORTED;
}

// ---- cuBLAS ------------------------------------------------------------------------------------

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE (CUDA emulator: arguments that do not match)";
    default:
      return "CUBLAS_STATUS (CUDA emulator)";
  }
}

// C = alpha op(A) op(B) + beta C, column-major, as BLAS defines it (C not read when beta is 0).
cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const float* alpha,
                              const float* A, int lda, const float* B, int ldb, const float* beta,
                              float* C, int ldc) {
  const int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
  const int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if ((k > 0 && (!on_device(A, sizeof(float) * (size_t(lda) * (a_cols - 1) + a_rows)) ||
                 !on_device(B, sizeof(float) * (size_t(ldb) * (b_cols - 1) + b_rows)))) ||
      !on_device(C, sizeof(float) * (size_t(ldc) * (n - 1) + m)))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *alpha, be = *beta;
  nnx::emu::count("cublasSgemm");
  const cudaError_t queued = nnx::emu::submit_host_work(handle->stream, [=] {
    // Column-major C [m, n] is row-major C^T [n, m] = op(B)^T op(A)^T, where a column-major
    // operand read row-major is its transpose: the row-major product takes B and A with the
    // same transpose flags, swapped.
    std::vector<float> product(size_t(m) * n);
    host_gemm(transb != CUBLAS_OP_N, transa != CUBLAS_OP_N, n, m, k, B, ldb, A, lda, product.data(),
              m, false);
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        float& c = C[size_t(j) * ldc + i];
        const float v = al * product[size_t(j) * m + i];
        c = be == 0.0f ? v : v + be * c;
      }
    }
  });
  return queued == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // extern "C"
