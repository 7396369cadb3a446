// SGD, Adam and AdamW as torch/optim/{sgd,adam,adamw}.py's _single_tensor_* functions compute
// them in float32, and clip_grad_norm as torch.nn.utils.clip_grad_norm_.
#include "nnx/optim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#if defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#include "importer/pth.h"
#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/train.h"
#include "runtime/cuda/cuda_runtime.h"
#endif

namespace nnx {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per thread chunk at least

void check_param(const Parameter& p, size_t index) {
  NNX_CHECK(p.value.defined(), ErrorKind::usage, "optimizer: parameter ", index, " (", p.name,
            ") has no value");
  const Device device = p.value.device();
  NNX_CHECK((device.is_cpu() || device.is_cuda()) && p.value.dtype() == DType::f32 &&
                p.value.is_contiguous(),
            ErrorKind::unsupported, "optimizer: parameter ", index, " (", p.name,
            ") must be a contiguous float32 tensor on the CPU or a CUDA device, found ",
            p.value.str(), " on ", device.str());
  NNX_CHECK(p.grad.shape() == p.value.shape(), ErrorKind::shape, "optimizer: the grad of ", p.name,
            " has shape ", p.grad.shape().str(), ", its value ", p.value.shape().str());
  NNX_CHECK(p.grad.device() == device && p.grad.dtype() == DType::f32 &&
                (device.is_cpu() || p.grad.is_contiguous()),
            ErrorKind::unsupported, "optimizer: the grad of ", p.name, " must be float32 on ",
            device.str(), " like its value", device.is_cpu() ? "" : " (and contiguous)", ", found ",
            p.grad.str(), " on ", p.grad.device().str());
}

// A state buffer for `value`: on its device, zero-filled or not.
Tensor state_buffer(const Tensor& value, bool zero) {
  if (value.device().is_cpu())
    return zero ? Tensor::zeros(value.shape()) : Tensor::empty(value.shape());
  Tensor t = Tensor::empty(value.shape(), DType::f32, value.device());
#ifdef NNX_WITH_CUDA
  if (zero) {
    cuda::DeviceGuard guard(value.device().index);
    cuda::fill_zero(t.raw_data(), t.nbytes(), cuda::current_cuda_stream(value.device().index));
  }
#endif
  return t;
}

// SGD over [0, n): Fresh: the momentum buffer is created from this step's direction.
template <bool Momentum, bool Fresh, bool Nesterov>
void sgd_kernel(float* __restrict p, const float* __restrict g, float* __restrict buf, int64_t n,
                float sign, float wd, float lr, float momentum, float keep) {
  for (int64_t i = 0; i < n; ++i) {
    float d = sign * g[i] + wd * p[i];
    if constexpr (Momentum) {
      float b = Fresh ? d : buf[i] * momentum + keep * d;
      buf[i] = b;
      d = Nesterov ? d + momentum * b : b;
    }
    p[i] = p[i] - lr * d;
  }
}

struct AdamScalars {
  float sign, wd, b1, b2, one_minus_b1, one_minus_b2, step_size, bc2_sqrt, eps, decay;
};

// Moments of one tile; leaves the second moment (or its running max) in `second`.
void adam_moments(const float* __restrict p, const float* __restrict g, float* __restrict m,
                  float* __restrict v, float* __restrict vmax, float* __restrict second, int64_t n,
                  const AdamScalars& s) {
  for (int64_t i = 0; i < n; ++i) {
    float gi = s.sign * g[i] + s.wd * p[i];
    m[i] = m[i] * s.b1 + s.one_minus_b1 * gi;
    float vi = v[i] * s.b2 + s.one_minus_b2 * gi * gi;
    v[i] = vi;
    second[i] = vi;
  }
  if (vmax != nullptr)
    for (int64_t i = 0; i < n; ++i) second[i] = vmax[i] = std::max(vmax[i], second[i]);
}

// Correctly rounded square roots in place. GCC does not vectorise std::sqrt without
// -fno-math-errno, hence the intrinsics.
void sqrt_in_place(float* s, int64_t n) {
  int64_t i = 0;
#if defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_sqrt_ps(_mm256_loadu_ps(s + i)));
#elif defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(s + i, _mm_sqrt_ps(_mm_loadu_ps(s + i)));
#endif
  for (; i < n; ++i) s[i] = std::sqrt(s[i]);
}

void adam_apply(float* __restrict p, const float* __restrict m, const float* __restrict root,
                int64_t n, const AdamScalars& s) {
  for (int64_t i = 0; i < n; ++i) {
    float denom = root[i] / s.bc2_sqrt + s.eps;
    p[i] = p[i] * s.decay - s.step_size * m[i] / denom;
  }
}

float* buffer_data(const std::vector<Tensor>& buffers, size_t k) {
  return k < buffers.size() && buffers[k].defined() ? buffers[k].data<float>() : nullptr;
}

}  // namespace

// ---- names ----

OptimizerKind parse_optimizer_name(std::string_view name) {
  if (name == "sgd") return OptimizerKind::sgd;
  if (name == "adam") return OptimizerKind::adam;
  if (name == "adamw") return OptimizerKind::adamw;
  fail(ErrorKind::usage, "unknown optimizer '", std::string(name),
       "' (expected sgd, adam or adamw)");
}

const char* optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::sgd:
      return "sgd";
    case OptimizerKind::adam:
      return "adam";
    case OptimizerKind::adamw:
      return "adamw";
  }
  return "?";
}

// ---- Optimizer ----

Optimizer::Optimizer(OptimizerKind kind, OptimizerOptions options)
    : kind_(kind), options_(std::move(options)) {
  if (!options_.weight_decay) options_.weight_decay = kind == OptimizerKind::adamw ? 0.01 : 0.0;
  const OptimizerOptions& o = options_;
  const char* name = optimizer_name(kind);
  NNX_CHECK(o.lr >= 0, ErrorKind::usage, name, ": invalid learning rate ", o.lr);
  NNX_CHECK(*o.weight_decay >= 0, ErrorKind::usage, name, ": invalid weight_decay ",
            *o.weight_decay);
  if (kind == OptimizerKind::sgd) {
    NNX_CHECK(o.momentum >= 0, ErrorKind::usage, "sgd: invalid momentum ", o.momentum);
    NNX_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), ErrorKind::usage,
              "sgd: nesterov needs a momentum and zero dampening, found momentum ", o.momentum,
              ", dampening ", o.dampening);
  } else {
    NNX_CHECK(o.eps >= 0, ErrorKind::usage, name, ": invalid eps ", o.eps);
    NNX_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, ErrorKind::usage, name,
              ": betas must be in [0, 1), found (", o.beta1, ", ", o.beta2, ")");
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::set_lr(double lr) {
  NNX_CHECK(lr >= 0, ErrorKind::usage, name(), ": invalid learning rate ", lr);
  options_.lr = lr;
  ++version_;
}

void Optimizer::reset_state() {
  state_.clear();
  steps_ = 0;
  ++version_;
}

std::vector<std::string> Optimizer::buffer_names() const {
  if (kind_ == OptimizerKind::sgd) return {"momentum_buffer"};
  std::vector<std::string> names = {"exp_avg", "exp_avg_sq"};
  if (options_.amsgrad) names.push_back("max_exp_avg_sq");
  return names;
}

void Optimizer::step(std::span<Parameter> params, ThreadPool* pool) {
  step_impl(params, pool, nullptr, nullptr);
}

void Optimizer::step_impl(std::span<Parameter> params, ThreadPool* pool, void* stream,
                          const int64_t* device_steps) {
  if (state_.empty()) state_.resize(params.size());
  NNX_CHECK(state_.size() == params.size(), ErrorKind::usage, name(), ": step() with ",
            params.size(), " parameters, but the optimizer's state is for ", state_.size());
  for (size_t k = 0; k < params.size(); ++k) {
    Parameter& p = params[k];
    if (!p.grad.defined()) continue;
    check_param(p, k);
    ParamState& st = state_[k];
    for (const Tensor& b : st.buffers)
      NNX_CHECK(!b.defined() || b.shape() == p.value.shape(), ErrorKind::shape, name(),
                ": parameter ", k, " (", p.name, ") has shape ", p.value.shape().str(),
                " but its state ", b.shape().str());
  }
  for (size_t k = 0; k < params.size(); ++k) {
    Parameter& p = params[k];
    if (!p.grad.defined()) continue;
    ParamState& st = state_[k];
    prepare(st, p.value);
    st.present = true;
    ++st.step;
    if (p.value.device().is_cuda()) {
      update_on_device(p, st, stream, device_steps != nullptr ? device_steps + k : nullptr);
      st.fresh = false;
      continue;
    }
    Tensor grad = p.grad.contiguous();
    float* value = p.value.data<float>();
    const float* g = grad.data<float>();
    parallel_for(pool, p.value.numel(), kGrain,
                 [&](int64_t begin, int64_t end) { update(value, g, st, begin, end); });
    st.fresh = false;
  }
  ++steps_;
}

// The same update on a CUDA device (kernels/cuda/train.h), on `stream` (null: the legacy one).
void Optimizer::update_on_device(Parameter& p, ParamState& st, void* stream,
                                 const int64_t* device_step) const {
#ifdef NNX_WITH_CUDA
  const OptimizerOptions& o = options_;
  cuda::DeviceGuard guard(p.value.device().index);
  auto buffer = [&](size_t k) {
    return k < st.buffers.size() && st.buffers[k].defined() ? st.buffers[k].data<float>() : nullptr;
  };
  if (kind_ == OptimizerKind::sgd) {
    cuda::SgdStep s;
    s.lr = float(o.lr);
    s.momentum = float(o.momentum);
    s.dampening = float(o.dampening);
    s.weight_decay = float(*o.weight_decay);
    s.nesterov = o.nesterov;
    s.maximize = o.maximize;
    s.first = st.fresh;
    cuda::sgd_update(s, p.value.data<float>(), p.grad.data<float>(), buffer(0), p.value.numel(),
                     stream);
    return;
  }
  cuda::AdamStep s;
  s.lr = o.lr;
  s.beta1 = o.beta1;
  s.beta2 = o.beta2;
  s.eps = o.eps;
  s.weight_decay = *o.weight_decay;
  s.step = st.step;
  s.decoupled = kind_ == OptimizerKind::adamw;
  s.amsgrad = o.amsgrad;
  s.maximize = o.maximize;
  cuda::adam_update(s, p.value.data<float>(), p.grad.data<float>(), buffer(0), buffer(1), buffer(2),
                    p.value.numel(), stream, device_step);
#else
  (void)st, (void)stream, (void)device_step;
  fail(ErrorKind::device, "optimizer: parameter ", p.name, " is on ", p.value.device().str(),
       ", and this build has no CUDA backend");
#endif
}

// ---- SGD ----

SGD::SGD(OptimizerOptions options) : Optimizer(OptimizerKind::sgd, std::move(options)) {}

void SGD::prepare(ParamState& st, const Tensor& value) const {
  if (st.buffers.empty()) st.buffers.resize(1);
  if (options_.momentum != 0 && !st.buffers[0].defined()) {
    st.buffers[0] = state_buffer(value, false);
    st.fresh = true;
  }
}

void SGD::update(float* value, const float* grad, ParamState& st, int64_t begin,
                 int64_t end) const {
  const OptimizerOptions& o = options_;
  float* buf = buffer_data(st.buffers, 0);
  float sign = o.maximize ? -1.f : 1.f, wd = float(*o.weight_decay), lr = float(o.lr);
  float m = float(o.momentum), keep = float(1 - o.dampening);
  float* p = value + begin;
  const float* g = grad + begin;
  float* b = buf != nullptr ? buf + begin : nullptr;
  int64_t n = end - begin;
  if (o.momentum == 0) return sgd_kernel<false, false, false>(p, g, b, n, sign, wd, lr, m, keep);
  if (st.fresh) {
    if (o.nesterov) return sgd_kernel<true, true, true>(p, g, b, n, sign, wd, lr, m, keep);
    return sgd_kernel<true, true, false>(p, g, b, n, sign, wd, lr, m, keep);
  }
  if (o.nesterov) return sgd_kernel<true, false, true>(p, g, b, n, sign, wd, lr, m, keep);
  sgd_kernel<true, false, false>(p, g, b, n, sign, wd, lr, m, keep);
}

// ---- Adam, AdamW ----

Adam::Adam(OptimizerOptions options) : Adam(OptimizerKind::adam, std::move(options)) {}
Adam::Adam(OptimizerKind kind, OptimizerOptions options) : Optimizer(kind, std::move(options)) {}
AdamW::AdamW(OptimizerOptions options) : Adam(OptimizerKind::adamw, std::move(options)) {}

void Adam::prepare(ParamState& st, const Tensor& value) const {
  size_t count = options_.amsgrad ? 3 : 2;
  if (st.buffers.size() < count) st.buffers.resize(count);
  for (size_t k = 0; k < count; ++k)
    if (!st.buffers[k].defined()) st.buffers[k] = state_buffer(value, true);
}

void Adam::update(float* value, const float* grad, ParamState& st, int64_t begin,
                  int64_t end) const {
  const OptimizerOptions& o = options_;
  const bool decoupled = kind_ == OptimizerKind::adamw;
  const double step = double(st.step);
  const double bc1 = 1 - std::pow(o.beta1, step), bc2 = 1 - std::pow(o.beta2, step);
  AdamScalars s;
  s.sign = o.maximize ? -1.f : 1.f;
  s.wd = decoupled ? 0.f : float(*o.weight_decay);
  s.b1 = float(o.beta1);
  s.b2 = float(o.beta2);
  s.one_minus_b1 = float(1 - o.beta1);
  s.one_minus_b2 = float(1 - o.beta2);
  s.step_size = float(o.lr / bc1);
  s.bc2_sqrt = float(std::sqrt(bc2));
  s.eps = float(o.eps);
  s.decay = decoupled ? float(1 - o.lr * *o.weight_decay) : 1.f;
  float* m = buffer_data(st.buffers, 0);
  float* v = buffer_data(st.buffers, 1);
  float* vmax = o.amsgrad ? buffer_data(st.buffers, 2) : nullptr;
  // Tiles small enough for L1: one pass over memory, with a vectorised sqrt between.
  constexpr int64_t kTile = 512;
  alignas(64) float second[kTile];
  for (int64_t t = begin; t < end; t += kTile) {
    int64_t n = std::min(kTile, end - t);
    adam_moments(value + t, grad + t, m + t, v + t, vmax != nullptr ? vmax + t : nullptr, second, n,
                 s);
    sqrt_in_place(second, n);
    adam_apply(value + t, m + t, second, n, s);
  }
}

std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, OptimizerOptions options) {
  switch (kind) {
    case OptimizerKind::sgd:
      return std::make_unique<SGD>(std::move(options));
    case OptimizerKind::adam:
      return std::make_unique<Adam>(std::move(options));
    case OptimizerKind::adamw:
      return std::make_unique<AdamW>(std::move(options));
  }
  fail(ErrorKind::usage, "make_optimizer: unknown kind ", int(kind));
}

std::unique_ptr<Optimizer> make_optimizer(std::string_view name, OptimizerOptions options) {
  return make_optimizer(parse_optimizer_name(name), std::move(options));
}

// ---- clip_grad_norm ----

double clip_grad_norm(std::span<Parameter> params, double max_norm, double norm_type,
                      ThreadPool* pool) {
  NNX_CHECK(norm_type > 0, ErrorKind::usage, "clip_grad_norm: norm_type must be > 0 or inf, found ",
            norm_type);
  const bool inf = std::isinf(norm_type);
  std::vector<Tensor> grads;
  for (size_t k = 0; k < params.size(); ++k) {
    const Tensor& g = params[k].grad;
    if (!g.defined()) continue;
    NNX_CHECK((g.device().is_cpu() || g.device().is_cuda()) && g.dtype() == DType::f32 &&
                  g.is_contiguous() && (grads.empty() || g.device() == grads[0].device()),
              ErrorKind::unsupported, "clip_grad_norm: the grad of ", params[k].name,
              " must be a contiguous float32 tensor on the CPU or one CUDA device, found ", g.str(),
              " on ", g.device().str());
    grads.push_back(g);
  }
#ifdef NNX_WITH_CUDA
  if (!grads.empty() && grads[0].device().is_cuda()) {
    // Summed on the device into one double, read back once; scaled there.
    cuda::DeviceGuard guard(grads[0].device().index);
    Tensor acc = Tensor::empty(Shape{1}, DType::f64, grads[0].device());
    cuda::fill_zero(acc.raw_data(), acc.nbytes(), nullptr);
    for (const Tensor& g : grads)
      cuda::accumulate_norm(g.data<float>(), g.numel(), norm_type, inf, acc.data<double>(),
                            nullptr);
    const double total = acc.to(Device::cpu()).data<double>()[0];
    const double norm = inf ? total : std::pow(total, 1.0 / norm_type);
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1) return norm;
    for (const Tensor& g : grads)
      cuda::scale(g.data<float>(), float(coef), g.data<float>(), g.numel(), nullptr);
    return norm;
  }
#endif
  double total = 0;
  std::mutex mutex;
  for (const Tensor& g : grads) {
    const float* data = g.data<float>();
    parallel_for(pool, g.numel(), kGrain, [&](int64_t begin, int64_t end) {
      double acc = 0;
      if (inf) {
        for (int64_t i = begin; i < end; ++i) acc = std::max(acc, double(std::abs(data[i])));
      } else if (norm_type == 2) {
        for (int64_t i = begin; i < end; ++i) acc += double(data[i]) * double(data[i]);
      } else {
        for (int64_t i = begin; i < end; ++i) acc += std::pow(std::abs(double(data[i])), norm_type);
      }
      std::lock_guard lock(mutex);
      total = inf ? std::max(total, acc) : total + acc;
    });
  }
  double norm = inf ? total : std::pow(total, 1.0 / norm_type);
  double coef = max_norm / (norm + 1e-6);
  if (coef >= 1) return norm;  // a NaN coefficient scales by NaN, as in PyTorch
  const float scale = float(coef);
  for (const Tensor& g : grads) {
    float* data = g.data<float>();
    parallel_for(pool, g.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) data[i] *= scale;
    });
  }
  return norm;
}

// ---- state files ----

namespace {

using py::Object;
using py::ObjectPtr;
using Entries = std::vector<std::pair<ObjectPtr, ObjectPtr>>;

ObjectPtr str(const char* s) {
  return Object::string(s);
}

ObjectPtr shape_list(const Shape& shape) {
  std::vector<ObjectPtr> dims;
  for (int64_t d : shape) dims.push_back(Object::integer(d));
  return Object::list(std::move(dims));
}

// The param group as PyTorch 1.13 writes it, key order included.
ObjectPtr param_group(const Optimizer& opt, size_t count) {
  const OptimizerOptions& o = opt.options();
  std::vector<ObjectPtr> ids;
  for (size_t k = 0; k < count; ++k) ids.push_back(Object::integer(int64_t(k)));
  auto real = [](double v) { return Object::real(v); };
  auto flag = [](bool v) { return Object::boolean(v); };
  Entries e;
  e.emplace_back(str("lr"), real(o.lr));
  if (opt.kind() == OptimizerKind::sgd) {
    e.emplace_back(str("momentum"), real(o.momentum));
    e.emplace_back(str("dampening"), real(o.dampening));
    e.emplace_back(str("weight_decay"), real(opt.weight_decay()));
    e.emplace_back(str("nesterov"), flag(o.nesterov));
    e.emplace_back(str("maximize"), flag(o.maximize));
    e.emplace_back(str("foreach"), Object::none());
    e.emplace_back(str("differentiable"), flag(false));
  } else {
    e.emplace_back(str("betas"), Object::tuple({real(o.beta1), real(o.beta2)}));
    e.emplace_back(str("eps"), real(o.eps));
    e.emplace_back(str("weight_decay"), real(opt.weight_decay()));
    e.emplace_back(str("amsgrad"), flag(o.amsgrad));
    if (opt.kind() == OptimizerKind::adam) {
      e.emplace_back(str("maximize"), flag(o.maximize));
      e.emplace_back(str("foreach"), Object::none());
      e.emplace_back(str("capturable"), flag(false));
      e.emplace_back(str("differentiable"), flag(false));
      e.emplace_back(str("fused"), flag(false));
    } else {
      e.emplace_back(str("foreach"), Object::none());
      e.emplace_back(str("maximize"), flag(o.maximize));
      e.emplace_back(str("capturable"), flag(false));
    }
  }
  e.emplace_back(str("params"), Object::list(std::move(ids)));
  return Object::dict(std::move(e));
}

double number(const Object* o, const std::string& what, const std::string& file) {
  if (o != nullptr && o->kind == Object::Kind::real) return o->d;
  if (o != nullptr && o->kind == Object::Kind::integer) return double(o->i);
  if (o != nullptr && o->kind == Object::Kind::boolean) return o->b ? 1 : 0;
  if (o != nullptr && o->kind == Object::Kind::tensor && o->tensor.numel() == 1)
    return o->tensor.at_flat(0);
  fail(ErrorKind::format, file, ": expected a number for ", what, ", found ",
       o == nullptr ? "nothing" : o->kind_name());
}

bool boolean(const Object* o, const std::string& what, const std::string& file) {
  NNX_CHECK(o != nullptr && o->kind == Object::Kind::boolean, ErrorKind::format, file,
            ": expected True or False for ", what, ", found ",
            o == nullptr ? "nothing" : o->kind_name());
  return o->b;
}

const Object& member(const Object& dict, const char* key, const std::string& file) {
  const Object* o = dict.get(key);
  NNX_CHECK(o != nullptr, ErrorKind::format, file, ": no '", key, "' entry");
  return *o;
}

}  // namespace

void Optimizer::save_state(const std::string& path, std::span<const Parameter> params,
                           const LrSchedule* schedule) const {
  NNX_CHECK(state_.empty() || state_.size() == params.size(), ErrorKind::usage, name(),
            ": save_state with ", params.size(), " parameters, but the state is for ",
            state_.size());
  std::vector<std::string> names = buffer_names();
  Entries state;
  for (size_t k = 0; k < state_.size(); ++k) {
    const ParamState& st = state_[k];
    if (!st.present) continue;
    Entries e;
    if (kind_ != OptimizerKind::sgd)
      e.emplace_back(str("step"), Object::make_tensor(Tensor::scalar(double(st.step))));
    for (size_t b = 0; b < names.size(); ++b) {
      const Tensor& t = b < st.buffers.size() ? st.buffers[b] : Tensor();
      e.emplace_back(Object::string(names[b]),
                     t.defined() ? Object::make_tensor(t.to(Device::cpu())) : Object::none());
    }
    state.emplace_back(Object::integer(int64_t(k)), Object::dict(std::move(e)));
  }
  std::vector<ObjectPtr> param_names, shapes;
  for (size_t k = 0; k < params.size(); ++k) {
    param_names.push_back(Object::string(params[k].name));
    shapes.push_back(shape_list(params[k].value.shape()));
  }
  Entries nnx;
  nnx.emplace_back(str("optimizer"), str(name()));
  nnx.emplace_back(str("steps"), Object::integer(steps_));
  nnx.emplace_back(str("param_names"), Object::list(std::move(param_names)));
  nnx.emplace_back(str("param_shapes"), Object::list(std::move(shapes)));
  if (schedule != nullptr) {
    nnx.emplace_back(str("schedule"),
                     Object::dict({{str("kind"), str(schedule_name(schedule->options().kind))},
                                   {str("epoch"), Object::integer(schedule->epoch())},
                                   {str("lr"), Object::real(schedule->lr())},
                                   {str("last_loss"), Object::real(schedule->last_loss())}}));
  }
  Entries top;
  top.emplace_back(str("state"), Object::dict(std::move(state)));
  top.emplace_back(str("param_groups"), Object::list({param_group(*this, params.size())}));
  top.emplace_back(str("nnx"), Object::dict(std::move(nnx)));
  write_pth(path, *Object::dict(std::move(top)));
}

void Optimizer::load_state(const std::string& path, std::span<const Parameter> params,
                           LrSchedule* schedule) {
  ObjectPtr top_ptr = read_pth(path);
  const Object& top = *top_ptr;
  NNX_CHECK(top.is_dict(), ErrorKind::format, path, ": expected an optimizer state dict, found ",
            top.kind_name());
  const Object& groups = member(top, "param_groups", path);
  const Object& saved_state = member(top, "state", path);
  NNX_CHECK(groups.is_sequence() && groups.items.size() == 1, ErrorKind::format, path,
            ": expected one parameter group, found ",
            groups.is_sequence() ? std::to_string(groups.items.size()) : groups.kind_name());
  NNX_CHECK(saved_state.is_dict(), ErrorKind::format, path, ": 'state' is a ",
            saved_state.kind_name(), ", not a dict");
  const Object& group = *groups.items[0];
  NNX_CHECK(group.is_dict(), ErrorKind::format, path, ": the parameter group is not a dict");
  const Object* nnx = top.get("nnx");
  if (nnx != nullptr && nnx->is_dict()) {
    const Object* saved = nnx->get("optimizer");
    NNX_CHECK(saved != nullptr && saved->kind == Object::Kind::string && saved->s == name(),
              ErrorKind::format, path, ": holds the state of optimizer '",
              saved != nullptr ? saved->s : std::string("?"), "', expected '", name(), "'");
  }
  bool file_is_sgd = group.get("momentum") != nullptr;
  NNX_CHECK(file_is_sgd == (kind_ == OptimizerKind::sgd), ErrorKind::format, path,
            ": holds the state of ", file_is_sgd ? "an SGD" : "an Adam", " optimizer, expected ",
            name());

  // Names of the saved parameters, for messages.
  std::vector<std::string> saved_names;
  if (nnx != nullptr && nnx->is_dict())
    if (const Object* n = nnx->get("param_names"); n != nullptr && n->is_sequence())
      for (const auto& item : n->items) saved_names.push_back(item->s);
  auto describe = [&](size_t k) {
    std::string s = std::to_string(k) + " (" + params[k].name;
    if (k < saved_names.size() && saved_names[k] != params[k].name)
      s += ", saved as " + saved_names[k];
    return s + ")";
  };

  const Object& ids = member(group, "params", path);
  NNX_CHECK(ids.is_sequence(), ErrorKind::format, path, ": 'params' is not a list");
  NNX_CHECK(ids.items.size() == params.size(), ErrorKind::shape, path, ": holds the state of ",
            ids.items.size(), " parameters, but ", params.size(), " are being trained");
  std::map<int64_t, size_t> position;  // saved id -> index in params
  for (size_t k = 0; k < ids.items.size(); ++k) {
    NNX_CHECK(ids.items[k]->kind == Object::Kind::integer, ErrorKind::format, path,
              ": 'params' holds a ", ids.items[k]->kind_name());
    position[ids.items[k]->i] = k;
  }

  OptimizerOptions o = options_;
  o.lr = number(group.get("lr"), "lr", path);
  o.weight_decay = number(group.get("weight_decay"), "weight_decay", path);
  if (const Object* m = group.get("maximize")) o.maximize = boolean(m, "maximize", path);
  if (kind_ == OptimizerKind::sgd) {
    o.momentum = number(group.get("momentum"), "momentum", path);
    o.dampening = number(group.get("dampening"), "dampening", path);
    o.nesterov = boolean(group.get("nesterov"), "nesterov", path);
  } else {
    const Object& betas = member(group, "betas", path);
    NNX_CHECK(betas.is_sequence() && betas.items.size() == 2, ErrorKind::format, path,
              ": 'betas' is not a pair");
    o.beta1 = number(betas.items[0].get(), "betas[0]", path);
    o.beta2 = number(betas.items[1].get(), "betas[1]", path);
    o.eps = number(group.get("eps"), "eps", path);
    o.amsgrad = boolean(group.get("amsgrad"), "amsgrad", path);
  }

  std::vector<ParamState> state(params.size());
  std::vector<std::string> names;
  {
    OptimizerOptions saved_options = options_;
    options_.amsgrad = o.amsgrad;  // buffer_names() follows the loaded amsgrad
    names = buffer_names();
    options_ = saved_options;
  }
  for (const auto& [key, value] : saved_state.entries) {
    NNX_CHECK(key->kind == Object::Kind::integer && position.count(key->i), ErrorKind::format, path,
              ": state entry for a parameter id not in 'params'");
    size_t k = position[key->i];
    NNX_CHECK(value->is_dict(), ErrorKind::format, path, ": the state of parameter ", describe(k),
              " is not a dict");
    ParamState& st = state[k];
    st.present = true;
    if (kind_ != OptimizerKind::sgd) {
      double step = number(value->get("step"), "step", path);
      NNX_CHECK(step >= 0 && step == std::floor(step), ErrorKind::format, path, ": invalid step ",
                step, " for parameter ", describe(k));
      st.step = int64_t(step);
    }
    for (const std::string& b : names) {
      const Object* t = value->get(b);
      Tensor buffer;
      if (t != nullptr && t->kind == Object::Kind::tensor) {
        NNX_CHECK(t->tensor.shape() == params[k].value.shape(), ErrorKind::shape, path, ": '", b,
                  "' of parameter ", describe(k), " has shape ", t->tensor.shape().str(),
                  ", the parameter ", params[k].value.shape().str());
        buffer = Tensor::empty(t->tensor.shape());
        buffer.copy_from(t->tensor);
        buffer = buffer.to(params[k].value.device());  // where step() updates it
      } else {
        bool optional =
            kind_ == OptimizerKind::sgd && (t == nullptr || t->kind == Object::Kind::none);
        NNX_CHECK(optional, ErrorKind::format, path, ": no tensor '", b,
                  "' in the state of parameter ", describe(k));
      }
      st.buffers.push_back(buffer);
    }
    if (kind_ == OptimizerKind::sgd && o.momentum != 0)
      NNX_CHECK(st.buffers[0].defined(), ErrorKind::format, path,
                ": no momentum_buffer for parameter ", describe(k), " with momentum ", o.momentum);
  }

  int64_t steps = 0;
  if (nnx != nullptr && nnx->is_dict())
    if (const Object* s = nnx->get("steps")) steps = int64_t(number(s, "nnx.steps", path));
  if (schedule != nullptr && nnx != nullptr && nnx->is_dict()) {
    if (const Object* s = nnx->get("schedule"); s != nullptr && s->is_dict()) {
      const Object* kind = s->get("kind");
      std::string expected = schedule_name(schedule->options().kind);
      NNX_CHECK(kind != nullptr && kind->s == expected, ErrorKind::format, path,
                ": holds the state of a '", kind != nullptr ? kind->s : std::string("?"),
                "' schedule, expected '", expected, "'");
      schedule->restore(int(number(s->get("epoch"), "schedule epoch", path)),
                        number(s->get("lr"), "schedule lr", path),
                        number(s->get("last_loss"), "schedule last_loss", path));
    }
  }
  options_ = o;
  state_ = std::move(state);
  steps_ = steps;
  ++version_;
}

}  // namespace nnx
