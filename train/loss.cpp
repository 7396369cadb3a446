// Losses and their gradients, following ATen's formulas (Loss.cpp, LossNLL.cpp) in double.
#include "nnx/loss.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/loss_terms.h"
#include "nnx/error.h"
#include "train/loss_device.h"

#ifdef NNX_WITH_CUDA
#include <cstring>

#include "kernels/cuda/loss.h"
#include "runtime/cuda/cuda_runtime.h"
#endif

namespace nnx {
namespace {

Tensor grad_on_host(const Tensor& prediction, const std::vector<double>& values);

void check_floating(const Tensor& t, const char* loss, const char* what) {
  NNX_CHECK(t.defined(), ErrorKind::usage, loss, ": the ", what, " is undefined");
  NNX_CHECK(dtype_is_floating(t.dtype()), ErrorKind::usage, loss, ": expected a floating-point ",
            what, ", found ", t.str());
}

// The tensor as contiguous doubles on the CPU, checked: floating point.
Tensor as_f64(const Tensor& t, const char* loss, const char* what) {
  check_floating(t, loss, what);
  // The host's path: a device tensor (where on_device declined it) is copied.
  return t.to(Device::cpu()).to(DType::f64).contiguous();
}

// A tensor of the prediction's shape and dtype holding `values`, on its device.
Tensor grad_tensor(const Tensor& prediction, const std::vector<double>& values) {
  Tensor g = grad_on_host(prediction, values);
  return prediction.device().is_cpu() ? g : g.to(prediction.device());
}

Tensor grad_on_host(const Tensor& prediction, const std::vector<double>& values) {
  Tensor g = Tensor::empty(prediction.shape(), prediction.dtype());
  if (prediction.dtype() == DType::f64) {
    std::copy(values.begin(), values.end(), g.data<double>());
  } else if (prediction.dtype() == DType::f32) {
    float* out = g.data<float>();
    for (size_t i = 0; i < values.size(); ++i) out[i] = float(values[i]);
  } else {
    Tensor d = Tensor::empty(prediction.shape(), DType::f64);
    std::copy(values.begin(), values.end(), d.data<double>());
    g.copy_from(d);
  }
  return g;
}

// `w` broadcast (NumPy rules) to `shape`, as doubles; empty if w is undefined.
std::vector<double> broadcast(const Tensor& w, const Shape& shape, const char* loss,
                              const char* what) {
  if (!w.defined()) return {};
  Tensor wd = as_f64(w, loss, what);
  int nd = shape.size(), wn = wd.dim();
  NNX_CHECK(wn <= nd, ErrorKind::shape, loss, ": ", what, " of shape ", wd.shape().str(),
            " does not broadcast to the prediction's ", shape.str());
  std::vector<int64_t> strides(size_t(nd), 0);
  int64_t s = 1;
  for (int k = wn - 1; k >= 0; --k) {
    int d = nd - wn + k;
    NNX_CHECK(wd.size(k) == shape[d] || wd.size(k) == 1, ErrorKind::shape, loss, ": ", what,
              " of shape ", wd.shape().str(), " does not broadcast to the prediction's ",
              shape.str());
    strides[size_t(d)] = wd.size(k) == 1 ? 0 : s;
    s *= wd.size(k);
  }
  std::vector<double> out(size_t(shape.numel()));
  const double* src = wd.data<double>();
  std::vector<int64_t> index(size_t(nd), 0);
  int64_t offset = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = src[offset];
    for (int d = nd - 1; d >= 0; --d) {  // odometer over the output index
      offset += strides[size_t(d)];
      if (++index[size_t(d)] < shape[d]) break;
      offset -= strides[size_t(d)] * shape[d];
      index[size_t(d)] = 0;
    }
  }
  return out;
}

// The loss runs on the prediction's CUDA device when the prediction is a contiguous float32
// tensor there and the target (`target_dtype` f32: float32 values; otherwise class indices of
// any integer dtype) is contiguous on that device or on the host.
bool on_device(const Tensor& prediction, const Tensor& target, DType target_dtype) {
#ifdef NNX_WITH_CUDA
  if (!prediction.defined() || !target.defined() || !prediction.device().is_cuda() ||
      prediction.dtype() != DType::f32 || !prediction.is_contiguous())
    return false;
  const bool dtype_ok = target_dtype == DType::f32 ? target.dtype() == DType::f32
                                                   : !dtype_is_floating(target.dtype());
  return dtype_ok && (target.device().is_cpu() ||
                      (target.device() == prediction.device() && target.is_contiguous()));
#else
  (void)prediction;
  (void)target;
  (void)target_dtype;
  return false;
#endif
}

#ifdef NNX_WITH_CUDA
// Doubles on `device` (undefined for none).
Tensor doubles_on(const std::vector<double>& values, Device device) {
  if (values.empty()) return {};
  Tensor host = Tensor::empty(Shape{int64_t(values.size())}, DType::f64);
  std::copy(values.begin(), values.end(), host.data<double>());
  return host.to(device);
}

const double* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<double>() : nullptr;
}

// A device loss's scratch: its head holds the three values finish_device_loss reads.
Tensor new_scratch(Device device) {
  return Tensor::empty(Shape{int64_t(cuda::loss_scratch_doubles())}, DType::f64, device);
}

// Waits for a queued loss (the copy follows it on the current stream) and gives its value.
double read_queued(const detail::QueuedLoss& q) {
  double head[3] = {0, 0, 0};
  if (q.launched) {
    const Tensor h = q.scratch.slice(0, 0, 3).to(Device::cpu());
    std::copy_n(h.data<double>(), 3, head);
  }
  return detail::finish_device_loss(q, head);
}
#endif

// mse, l1, smooth_l1 and bce_with_logits on the prediction's device.
LossResult point_loss_on_device(const Tensor& prediction, const Tensor& target, LossKind kind,
                                const LossOptions& options) {
#ifdef NNX_WITH_CUDA
  const Device device = prediction.device();
  cuda::DeviceGuard guard(device.index);
  const Tensor t = target.to(device);  // contiguous there (on_device)
  LossOptions o = options;
  o.kind = kind;
  const detail::QueuedLoss q =
      detail::queue_device_loss(prediction, t, o, detail::device_loss_constants(prediction, o),
                                cuda::current_cuda_stream(device.index));
  return {read_queued(q), q.grad};
#else
  (void)target, (void)kind, (void)options;
  fail(ErrorKind::device, "loss on ", prediction.device().str(),
       ": this build has no CUDA backend");
#endif
}

void check_same_shape(const Tensor& prediction, const Tensor& target, const char* loss) {
  NNX_CHECK(target.defined(), ErrorKind::usage, loss, ": the target is undefined");
  NNX_CHECK(prediction.shape() == target.shape(), ErrorKind::shape, loss,
            ": expected a target of the prediction's shape ", prediction.shape().str(), ", found ",
            target.shape().str());
}

LossResult reduce(const Tensor& prediction, double total, std::vector<double>& grad,
                  Reduction reduction) {
  if (reduction == Reduction::mean) {
    double n = double(grad.size());
    total /= n;
    for (double& g : grad) g /= n;
  }
  return {total, grad_tensor(prediction, grad)};
}

// Elementwise losses of prediction - target: f(d) and f'(d).
template <class Fn>
LossResult elementwise(const Tensor& prediction, const Tensor& target, const LossOptions& options,
                       const char* loss, LossKind kind, Fn fn) {
  if (on_device(prediction, target, DType::f32)) {
    check_same_shape(prediction, target, loss);
    return point_loss_on_device(prediction, target, kind, options);
  }
  if (prediction.defined() && target.defined() && prediction.device().is_cpu() &&
      target.device().is_cpu() && prediction.dtype() == DType::f32 &&
      target.dtype() == DType::f32 && prediction.shape() == target.shape()) {
    // float32 (training's case): one pass, no double copies of the tensors. The same double
    // arithmetic, in the same order, as the general path below.
    const Tensor xc = prediction.contiguous(), yc = target.contiguous();
    const float* xp = xc.data<float>();
    const float* yp = yc.data<float>();
    Tensor grad = Tensor::empty(prediction.shape(), DType::f32);
    float* gp = grad.data<float>();
    const int64_t n = xc.numel();
    const bool mean = options.reduction == Reduction::mean;
    const double count = double(n);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      double g = 0;
      total += fn(double(xp[i]) - double(yp[i]), g);
      gp[i] = float(mean ? g / count : g);
    }
    return {mean ? total / count : total, grad};
  }
  Tensor x = as_f64(prediction, loss, "prediction");
  check_same_shape(prediction, target, loss);
  Tensor y = as_f64(target, loss, "target");
  const double* xp = x.data<double>();
  const double* yp = y.data<double>();
  std::vector<double> grad(size_t(x.numel()));
  double total = 0;
  for (size_t i = 0; i < grad.size(); ++i) total += fn(xp[i] - yp[i], grad[i]);
  return reduce(prediction, total, grad, options.reduction);
}

// Logits viewed as [N, C, S].
struct ClassLayout {
  int64_t n = 1, c = 1, s = 1;
};

ClassLayout class_layout(const Tensor& logits) {
  NNX_CHECK(logits.dim() >= 1, ErrorKind::shape,
            "cross_entropy: expected logits of shape N,C or N,C,d1..dk, found ", logits.str());
  ClassLayout l;
  if (logits.dim() == 1) {
    l.c = logits.size(0);
  } else {
    l.n = logits.size(0);
    l.c = logits.size(1);
    for (int d = 2; d < logits.dim(); ++d) l.s *= logits.size(d);
  }
  return l;
}

// cross_entropy's class weights as doubles (empty for none), checked: shape [C].
std::vector<double> class_weights(const LossOptions& options, const ClassLayout& l) {
  if (!options.weight.defined()) return {};
  NNX_CHECK(options.weight.numel() == l.c && options.weight.dim() == 1, ErrorKind::shape,
            "cross_entropy: expected a class weight of shape [", l.c, "], found ",
            options.weight.str());
  return broadcast(options.weight, Shape{l.c}, "cross_entropy", "weight");
}

// The shape class indices must have: the logits' without dim 1.
Shape label_shape(const Tensor& logits) {
  Shape s = logits.shape();
  if (s.size() == 1) return Shape{};
  s.erase(1);
  return s;
}

void check_label_shape(const Tensor& labels, const Tensor& logits, const char* what) {
  Shape expected = label_shape(logits);
  NNX_CHECK(labels.shape() == expected, ErrorKind::shape, what,
            ": expected class indices of shape ", expected.str(), " for logits ",
            logits.shape().str(), ", found ", labels.shape().str());
}

std::vector<int64_t> labels_as_i64(const Tensor& labels, const Tensor& logits, const char* what) {
  check_label_shape(labels, logits, what);
  Tensor l = labels.to(Device::cpu()).to(DType::i64).contiguous();
  const int64_t* p = l.data<int64_t>();
  return std::vector<int64_t>(p, p + l.numel());
}

// log(sum(exp)) of the C values at stride s from z, shifted by their maximum.
double log_sum_exp(const double* z, int64_t c, int64_t s) {
  double m = -INFINITY;
  for (int64_t k = 0; k < c; ++k) m = std::max(m, z[k * s]);
  if (std::isinf(m)) return m;
  double sum = 0;
  for (int64_t k = 0; k < c; ++k) sum += std::exp(z[k * s] - m);
  return m + std::log(sum);
}

LossResult cross_entropy_indices(const Tensor& prediction, const Tensor& x, const Tensor& target,
                                 const std::vector<double>& w, const LossOptions& o) {
  ClassLayout l = class_layout(x);
  std::vector<int64_t> labels = labels_as_i64(target, x, "cross_entropy");
  const double* z = x.data<double>();
  std::vector<double> grad(size_t(x.numel()), 0.0);
  const double eps = o.label_smoothing;
  double w_sum = 0;  // sum of all class weights (smoothing term)
  for (int64_t k = 0; k < l.c; ++k) w_sum += w.empty() ? 1.0 : w[size_t(k)];
  double nll = 0, smooth = 0, denom = 0;
  for (int64_t n = 0; n < l.n; ++n) {
    for (int64_t s = 0; s < l.s; ++s) {
      int64_t y = labels[size_t(n * l.s + s)];
      if (y == o.ignore_index) continue;
      NNX_CHECK(y >= 0 && y < l.c, ErrorKind::usage, "cross_entropy: class index ", y,
                " at position ", n * l.s + s, " is out of range [0, ", l.c, ") (ignore_index ",
                o.ignore_index, ")");
      int64_t base = n * l.c * l.s + s;
      const double* zs = z + base;
      double lse = log_sum_exp(zs, l.c, l.s);
      double wy = w.empty() ? 1.0 : w[size_t(y)];
      denom += wy;
      nll -= wy * (zs[y * l.s] - lse);
      for (int64_t k = 0; k < l.c; ++k) {
        double logp = zs[k * l.s] - lse, p = std::exp(logp);
        double wk = w.empty() ? 1.0 : w[size_t(k)];
        double g = (1 - eps) * wy * (p - (k == y ? 1.0 : 0.0));
        if (eps != 0) {
          smooth -= wk * logp;
          g += eps / double(l.c) * (p * w_sum - wk);
        }
        grad[size_t(base + k * l.s)] = g;
      }
    }
  }
  double total = (1 - eps) * nll + (eps != 0 ? eps / double(l.c) * smooth : 0.0);
  if (o.reduction == Reduction::mean) {
    total /= denom;  // NaN when every position is ignored, as in PyTorch
    if (denom != 0)
      for (double& g : grad) g /= denom;
  }
  return {total, grad_tensor(prediction, grad)};
}

void check_probability_shape(const Tensor& target, const Tensor& logits) {
  NNX_CHECK(target.shape() == logits.shape(), ErrorKind::shape,
            "cross_entropy: expected class probabilities of the logits' shape ",
            logits.shape().str(), " or class indices of shape ", label_shape(logits).str(),
            ", found ", target.str());
}

// Cross entropy on the logits' device (on_device said yes): class indices as int64 or class
// probabilities as float32 there.
LossResult cross_entropy_on_device(const Tensor& logits, const Tensor& target,
                                   const LossOptions& o) {
#ifdef NNX_WITH_CUDA
  const Device device = logits.device();
  cuda::DeviceGuard guard(device.index);
  Tensor t;
  if (dtype_is_floating(target.dtype())) {
    check_probability_shape(target, logits);
    t = target.to(device);
  } else {
    check_label_shape(target, logits, "cross_entropy");
    t = target.dtype() == DType::i64 ? target.to(device)
                                     : target.to(Device::cpu()).to(DType::i64).to(device);
  }
  const detail::QueuedLoss q =
      detail::queue_device_loss(logits, t, o, detail::device_loss_constants(logits, o),
                                cuda::current_cuda_stream(device.index));
  return {read_queued(q), q.grad};
#else
  (void)target, (void)o;
  fail(ErrorKind::device, "loss on ", logits.device().str(), ": this build has no CUDA backend");
#endif
}

LossResult cross_entropy_probabilities(const Tensor& prediction, const Tensor& x,
                                       const Tensor& target, const std::vector<double>& w,
                                       const LossOptions& o) {
  ClassLayout l = class_layout(x);
  check_probability_shape(target, x);
  Tensor q = as_f64(target, "cross_entropy", "target");
  const double* z = x.data<double>();
  const double* qp = q.data<double>();
  std::vector<double> grad(size_t(x.numel()), 0.0);
  const double eps = o.label_smoothing;
  double total = 0;
  for (int64_t n = 0; n < l.n; ++n) {
    for (int64_t s = 0; s < l.s; ++s) {
      int64_t base = n * l.c * l.s + s;
      double lse = log_sum_exp(z + base, l.c, l.s);
      double wq_sum = 0;
      for (int64_t k = 0; k < l.c; ++k) {
        int64_t i = base + k * l.s;
        double qk = qp[i] * (1 - eps) + eps / double(l.c);
        double wq = (w.empty() ? 1.0 : w[size_t(k)]) * qk;
        total -= wq * (z[i] - lse);
        wq_sum += wq;
        grad[size_t(i)] = -wq;
      }
      for (int64_t k = 0; k < l.c; ++k) {
        int64_t i = base + k * l.s;
        grad[size_t(i)] += std::exp(z[i] - lse) * wq_sum;
      }
    }
  }
  if (o.reduction == Reduction::mean) {
    double count = double(l.n * l.s);
    total /= count;
    for (double& g : grad) g /= count;
  }
  return {total, grad_tensor(prediction, grad)};
}

}  // namespace

LossKind parse_loss_name(std::string_view name) {
  if (name == "cross_entropy") return LossKind::cross_entropy;
  if (name == "mse") return LossKind::mse;
  if (name == "l1") return LossKind::l1;
  if (name == "smooth_l1") return LossKind::smooth_l1;
  if (name == "bce_with_logits") return LossKind::bce_with_logits;
  fail(ErrorKind::usage, "unknown loss '", std::string(name),
       "' (expected cross_entropy, mse, l1, smooth_l1 or bce_with_logits)");
}

const char* loss_name(LossKind kind) {
  switch (kind) {
    case LossKind::cross_entropy:
      return "cross_entropy";
    case LossKind::mse:
      return "mse";
    case LossKind::l1:
      return "l1";
    case LossKind::smooth_l1:
      return "smooth_l1";
    case LossKind::bce_with_logits:
      return "bce_with_logits";
  }
  return "?";
}

LossResult cross_entropy_loss(const Tensor& logits, const Tensor& target,
                              const LossOptions& options) {
  check_floating(logits, "cross_entropy", "logits");
  NNX_CHECK(target.defined(), ErrorKind::usage, "cross_entropy: the target is undefined");
  NNX_CHECK(options.label_smoothing >= 0 && options.label_smoothing <= 1, ErrorKind::usage,
            "cross_entropy: label_smoothing must be in [0, 1], found ", options.label_smoothing);
  ClassLayout l = class_layout(logits);
  const std::vector<double> w = class_weights(options, l);
  const bool probabilities = dtype_is_floating(target.dtype());
  if (on_device(logits, target, probabilities ? DType::f32 : DType::i64))
    return cross_entropy_on_device(logits, target, options);
  Tensor x = as_f64(logits, "cross_entropy", "logits");
  if (probabilities) return cross_entropy_probabilities(logits, x, target, w, options);
  return cross_entropy_indices(logits, x, target, w, options);
}

LossResult mse_loss(const Tensor& prediction, const Tensor& target, const LossOptions& options) {
  return elementwise(prediction, target, options, "mse", LossKind::mse,
                     [](double d, double& g) { return loss_terms::mse(d, g); });
}

LossResult l1_loss(const Tensor& prediction, const Tensor& target, const LossOptions& options) {
  return elementwise(prediction, target, options, "l1", LossKind::l1,
                     [](double d, double& g) { return loss_terms::l1(d, g); });
}

LossResult smooth_l1_loss(const Tensor& prediction, const Tensor& target,
                          const LossOptions& options) {
  const double beta = options.beta;
  NNX_CHECK(beta >= 0, ErrorKind::usage, "smooth_l1: beta must be >= 0, found ", beta);
  if (beta == 0) return l1_loss(prediction, target, options);
  return elementwise(prediction, target, options, "smooth_l1", LossKind::smooth_l1,
                     [beta](double d, double& g) { return loss_terms::smooth_l1(d, beta, g); });
}

LossResult bce_with_logits_loss(const Tensor& logits, const Tensor& target,
                                const LossOptions& options) {
  const char* loss = "bce_with_logits";
  if (on_device(logits, target, DType::f32)) {
    check_same_shape(logits, target, loss);
    return point_loss_on_device(logits, target, LossKind::bce_with_logits, options);
  }
  Tensor x = as_f64(logits, loss, "logits");
  check_same_shape(logits, target, loss);
  Tensor t = as_f64(target, loss, "target");
  std::vector<double> w = broadcast(options.weight, x.shape(), loss, "weight");
  std::vector<double> pw = broadcast(options.pos_weight, x.shape(), loss, "pos_weight");
  const double* xp = x.data<double>();
  const double* tp = t.data<double>();
  std::vector<double> grad(size_t(x.numel()));
  double total = 0;
  for (size_t i = 0; i < grad.size(); ++i)
    total += loss_terms::bce_with_logits(xp[i], tp[i], w.empty() ? 1.0 : w[i], !pw.empty(),
                                         pw.empty() ? 1.0 : pw[i], grad[i]);
  return reduce(logits, total, grad, options.reduction);
}

LossResult compute_loss(const Tensor& prediction, const Tensor& target,
                        const LossOptions& options) {
  switch (options.kind) {
    case LossKind::cross_entropy:
      return cross_entropy_loss(prediction, target, options);
    case LossKind::mse:
      return mse_loss(prediction, target, options);
    case LossKind::l1:
      return l1_loss(prediction, target, options);
    case LossKind::smooth_l1:
      return smooth_l1_loss(prediction, target, options);
    case LossKind::bce_with_logits:
      return bce_with_logits_loss(prediction, target, options);
  }
  fail(ErrorKind::usage, "compute_loss: unknown loss kind ", int(options.kind));
}

int64_t count_correct(const Tensor& logits, const Tensor& labels, int64_t ignore_index) {
  Tensor x = as_f64(logits, "count_correct", "logits");
  ClassLayout l = class_layout(x);
  std::vector<int64_t> y = labels_as_i64(labels, x, "count_correct");
  const double* z = x.data<double>();
  int64_t correct = 0;
  for (int64_t n = 0; n < l.n; ++n) {
    for (int64_t s = 0; s < l.s; ++s) {
      int64_t label = y[size_t(n * l.s + s)];
      if (label == ignore_index) continue;
      const double* zs = z + n * l.c * l.s + s;
      int64_t best = 0;
      for (int64_t k = 1; k < l.c; ++k)
        if (zs[k * l.s] > zs[best * l.s] ||
            (std::isnan(zs[k * l.s]) && !std::isnan(zs[best * l.s])))
          best = k;
      correct += best == label;
    }
  }
  return correct;
}

int64_t count_labelled(const Tensor& labels, int64_t ignore_index) {
  NNX_CHECK(labels.defined() && labels.device().is_cpu(), ErrorKind::unsupported,
            "count_labelled: labels must be a CPU tensor");
  Tensor l = labels.to(DType::i64).contiguous();
  const int64_t* p = l.data<int64_t>();
  return int64_t(std::count_if(p, p + l.numel(), [&](int64_t v) { return v != ignore_index; }));
}

double accuracy(const Tensor& logits, const Tensor& labels, int64_t ignore_index) {
  int64_t correct = count_correct(logits, labels, ignore_index);
  int64_t counted = count_labelled(labels, ignore_index);
  return counted == 0 ? 0.0 : double(correct) / double(counted);
}

namespace detail {

DeviceLossConstants device_loss_constants(const Tensor& prediction, const LossOptions& options) {
  DeviceLossConstants c;
#ifdef NNX_WITH_CUDA
  const Device device = prediction.device();
  cuda::DeviceGuard guard(device.index);
  if (options.kind == LossKind::cross_entropy) {
    const ClassLayout l = class_layout(prediction);
    const std::vector<double> w = class_weights(options, l);
    c.weight = doubles_on(w, device);
    for (int64_t k = 0; k < l.c; ++k) c.weight_sum += w.empty() ? 1.0 : w[size_t(k)];
  } else if (options.kind == LossKind::bce_with_logits) {
    const char* loss = "bce_with_logits";
    c.weight = doubles_on(broadcast(options.weight, prediction.shape(), loss, "weight"), device);
    c.pos_weight =
        doubles_on(broadcast(options.pos_weight, prediction.shape(), loss, "pos_weight"), device);
  }
#else
  (void)prediction, (void)options;
#endif
  return c;
}

QueuedLoss queue_device_loss(const Tensor& prediction, const Tensor& target,
                             const LossOptions& options, const DeviceLossConstants& constants,
                             void* stream) {
  QueuedLoss q;
#ifdef NNX_WITH_CUDA
  const Device device = prediction.device();
  NNX_CHECK(prediction.device().is_cuda() && prediction.dtype() == DType::f32 &&
                prediction.is_contiguous() && target.defined() && target.device() == device &&
                target.is_contiguous(),
            ErrorKind::usage, loss_name(options.kind),
            ": a device loss needs a contiguous float32 prediction and a contiguous target on one "
            "CUDA device, found ",
            prediction.str(), " on ", prediction.device().str(), " and ", target.str(), " on ",
            target.device().str());
  q.kind = options.kind;
  q.mean = options.reduction == Reduction::mean;
  q.ignore_index = options.ignore_index;
  q.grad = Tensor::empty(prediction.shape(), DType::f32, device);
  q.scratch = new_scratch(device);
  if (options.kind == LossKind::cross_entropy) {
    NNX_CHECK(options.label_smoothing >= 0 && options.label_smoothing <= 1, ErrorKind::usage,
              "cross_entropy: label_smoothing must be in [0, 1], found ", options.label_smoothing);
    const ClassLayout l = class_layout(prediction);
    const bool probabilities = dtype_is_floating(target.dtype());
    if (probabilities) {
      check_probability_shape(target, prediction);
      NNX_CHECK(target.dtype() == DType::f32, ErrorKind::usage,
                "cross_entropy: device class probabilities must be float32, found ", target.str());
    } else {
      check_label_shape(target, prediction, "cross_entropy");
      NNX_CHECK(target.dtype() == DType::i64, ErrorKind::usage,
                "cross_entropy: device class indices must be int64, found ", target.str());
    }
    cuda::CrossEntropyArgs a;
    a.logits = prediction.data<float>();
    a.n = l.n;
    a.c = l.c;
    a.s = l.s;
    a.labels = probabilities ? nullptr : target.data<int64_t>();
    a.probs = probabilities ? target.data<float>() : nullptr;
    a.weight = data_or_null(constants.weight);
    a.weight_sum = constants.weight_sum;
    a.ignore_index = options.ignore_index;
    a.label_smoothing = options.label_smoothing;
    a.mean = q.mean;
    a.grad = q.grad.data<float>();
    q.classes = l.c;
    q.by_count = !probabilities;
    if (!probabilities) q.labels = target;
    q.divisor = double(l.n * l.s);
    if (l.n * l.s > 0) {
      cuda::cross_entropy_loss(a, q.scratch.data<double>(), stream);
      q.launched = true;
    }
    return q;
  }
  const char* loss = loss_name(options.kind);
  check_same_shape(prediction, target, loss);
  NNX_CHECK(target.dtype() == DType::f32, ErrorKind::usage, loss,
            ": a device target must be float32, found ", target.str());
  cuda::PointLossArgs a;
  const bool l1 =
      options.kind == LossKind::l1 || (options.kind == LossKind::smooth_l1 && options.beta == 0);
  NNX_CHECK(options.kind != LossKind::smooth_l1 || options.beta >= 0, ErrorKind::usage,
            "smooth_l1: beta must be >= 0, found ", options.beta);
  a.kind = l1                                    ? cuda::PointLoss::l1
           : options.kind == LossKind::mse       ? cuda::PointLoss::mse
           : options.kind == LossKind::smooth_l1 ? cuda::PointLoss::smooth_l1
                                                 : cuda::PointLoss::bce_with_logits;
  a.x = prediction.data<float>();
  a.t = target.data<float>();
  if (options.kind == LossKind::bce_with_logits) {
    a.weight = data_or_null(constants.weight);
    a.pos_weight = data_or_null(constants.pos_weight);
  }
  a.beta = options.beta;
  a.n = prediction.numel();
  q.divisor = double(a.n);
  a.divisor = q.mean ? q.divisor : 1.0;
  a.grad = q.grad.data<float>();
  if (a.n > 0) {
    cuda::point_loss(a, q.scratch.data<double>(), stream);
    q.launched = true;
  }
#else
  (void)target, (void)constants, (void)stream;
  fail(ErrorKind::device, "loss on ", prediction.device().str(),
       ": this build has no CUDA backend");
#endif
  return q;
}

double finish_device_loss(const QueuedLoss& q, const double head[3]) {
  double sum = 0, counted = 0;
  if (q.launched) {
    sum = head[0];
    counted = head[1];
#ifdef NNX_WITH_CUDA
    int64_t bad = 0;
    std::memcpy(&bad, head + 2, sizeof bad);
    if (q.kind == LossKind::cross_entropy && q.by_count && bad != cuda::kNoBadLabel) {
      const Tensor y = q.labels.view(Shape{q.labels.numel()}).slice(0, bad, bad + 1);
      fail(ErrorKind::usage, "cross_entropy: class index ", y.to(Device::cpu()).data<int64_t>()[0],
           " at position ", bad, " is out of range [0, ", q.classes, ") (ignore_index ",
           q.ignore_index, ")");
    }
#endif
  }
  if (!q.mean) return sum;
  return q.by_count ? sum / counted : sum / q.divisor;
}

}  // namespace detail

}  // namespace nnx
