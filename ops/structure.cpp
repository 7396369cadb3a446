// Cat, Identity, Flatten, Unflatten and Dropout: shape rules, and forwards that assign views
// (Cat alone copies, through kernels/cpu/cat.h).
#include "ops/structure.h"

#include <cstring>
#include <vector>

#include "kernels/cpu/cat.h"
#include "kernels/cpu/elementwise.h"
#include "nnx/error.h"
#include "nnx/thread_pool.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/tensor_ops.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {
namespace {

// A numeric argument as Python's str() shows it in an extra_repr: as given, else the default.
std::string number_text(const Args& args, std::string_view name, std::string fallback) {
  const Value* v = args.get(name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) args.bad_type(name, "a number");
  return v->repr();
}

// grad_input = grad_output with the input's shape (same elements in the same order).
void pass_gradient(Tensor& grad_input, const Tensor& grad_output) {
  if (grad_input.defined()) grad_input.copy_from(grad_output.reshape(grad_input.shape()));
}

// One training draw per element of `shape`: 0 with probability p, else `keep`. Bits of the
// generator are used directly, so the draws are the same with every standard library.
Tensor draw_mask(const Shape& shape, double p, float keep, RandomEngine& rng) {
  Tensor mask = Tensor::empty(shape, DType::f32);
  float* m = mask.data<float>();
  const double survive = 1.0 - p;
  for (int64_t i = 0; i < mask.numel(); ++i) {
    const double u = double(rng() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
    m[i] = u < survive ? keep : 0.0f;
  }
  return mask;
}

// A training forward: outputs[0] = x * mask (broadcast), the mask saved for the backward.
void masked_forward(const ExecContext& ctx, std::string_view type, const Tensor& input,
                    const Shape& mask_shape, double p, Tensor& output) {
  NNX_CHECK(ctx.rng != nullptr && ctx.saved != nullptr, ErrorKind::usage, type,
            ": a training forward needs ctx.rng and ctx.saved");
  NNX_CHECK(input.dtype() == DType::f32, ErrorKind::unsupported, type,
            ": training needs a float32 input, found ", dtype_name(input.dtype()));
  // PyTorch divides the draws by (1 - p) in float; with p = 1 nothing is kept.
  const float keep = p < 1 ? 1.0f / float(1.0 - p) : 0.0f;
  Tensor mask = draw_mask(mask_shape, p, keep, *ctx.rng);
  Tensor x = input.contiguous();
  Tensor y = Tensor::empty(x.shape(), DType::f32);
  cpu::binary_broadcast(cpu::BinaryOp::mul, x.data<float>(), x.shape(), mask.data<float>(),
                        mask.shape(), y.data<float>(), y.shape(), ctx.pool);
  output = y;
  ctx.saved->push_back(mask);
}

// The backward of masked_forward (or of the identity when no mask was saved).
void masked_backward(const ExecContext& ctx, const Tensor& grad_output, Tensor& grad_input) {
  if (!grad_input.defined()) return;
  if (ctx.saved == nullptr || ctx.saved->empty()) return pass_gradient(grad_input, grad_output);
  const Tensor& mask = ctx.saved->front();
  Tensor g = grad_output.contiguous();
  cpu::binary_broadcast(cpu::BinaryOp::mul, g.data<float>(), g.shape(), mask.data<float>(),
                        mask.shape(), grad_input.data<float>(), grad_input.shape(), ctx.pool);
}

}  // namespace

// ---- views

void ViewOp::backward_cpu(const ExecContext&, std::span<const Tensor>, std::span<const Tensor>,
                          std::span<const Tensor> grad_outputs, std::span<Tensor> grad_inputs,
                          std::span<Tensor>) const {
  for (size_t k = 0; k < grad_outputs.size(); ++k) {
    const std::optional<int> in = output_view_of(int(k));
    if (in && size_t(*in) < grad_inputs.size())
      pass_gradient(grad_inputs[size_t(*in)], grad_outputs[k]);
  }
}

// ---- Cat

CatOp::CatOp(const Call& call) {
  Args args(call, {{"dim"}});
  dim_ = args.get_int("dim", 1);
}

std::string CatOp::repr() const {
  return "Cat(dim=" + std::to_string(dim_) + ")";
}

void CatOp::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, INT32_MAX);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> CatOp::infer_channels(std::span<const int64_t> in_channels,
                                           int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  if (dim_ < 0) return {kUnknownChannels};
  if (dim_ == 1) {
    int64_t sum = 0;
    for (int64_t c : in_channels) {
      if (c == kUnknownChannels) return {kUnknownChannels};
      sum += c;
    }
    return {sum};
  }
  int64_t c = kUnknownChannels;
  for (int64_t found : in_channels) {
    if (found == kUnknownChannels) continue;
    NNX_CHECK(c == kUnknownChannels || c == found, ErrorKind::shape, "Cat(dim=", dim_,
              "): expected inputs with equal channels, found ", c, " and ", found);
    c = found;
  }
  return {c};
}

std::vector<TensorSpec> CatOp::infer_shapes(std::span<const TensorSpec> inputs,
                                            int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const TensorSpec& first = inputs[0];
  const int rank = first.shape.size();
  NNX_CHECK(rank > 0, ErrorKind::shape, "Cat: zero-dimensional inputs cannot be concatenated");
  const int d = wrap_dim(dim_, rank);
  Shape out = first.shape;
  out[d] = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Shape& s = inputs[i].shape;
    NNX_CHECK(inputs[i].dtype == first.dtype, ErrorKind::shape, "Cat: expected input ", i,
              " of dtype ", dtype_name(first.dtype), ", found ", dtype_name(inputs[i].dtype));
    NNX_CHECK(s.size() == rank, ErrorKind::shape, "Cat: expected input ", i, " of rank ", rank,
              " like input 0, found shape ", s.str());
    for (int k = 0; k < rank; ++k) {
      NNX_CHECK(k == d || s[k] == first.shape[k], ErrorKind::shape, "Cat(dim=", dim_,
                "): expected input ", i, " to match input 0 in dimension ", k, ", found shapes ",
                first.shape.str(), " and ", s.str());
    }
    out[d] += s[d];
  }
  return {{out, first.dtype}};
}

std::optional<int> CatOp::concat_dim(int rank) const {
  if (rank <= 0 || dim_ < -rank || dim_ >= rank) return std::nullopt;
  return wrap_dim(dim_, rank);
}

void CatOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                        std::span<Tensor> outputs) const {
  Tensor& out = outputs[0];
  const Shape& shape = out.shape();
  const int d = wrap_dim(dim_, shape.size());
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  // This thread's lists, grown once (no allocation per run); `held` keeps contiguous copies of
  // strided inputs alive while the kernel reads them, and is emptied on the way out.
  static thread_local std::vector<Tensor> held;
  static thread_local std::vector<cpu::CatPiece> pieces;
  struct Release {
    ~Release() {
      held.clear();
      pieces.clear();
    }
  } release;
  held.clear();
  pieces.clear();
  for (const Tensor& in : inputs) {
    const Tensor* piece = &in;
    if (!in.is_contiguous()) piece = &held.emplace_back(in.contiguous());
    pieces.push_back({piece->raw_data(), piece->size(d) * inner * int64_t(piece->element_size())});
  }
  cpu::cat_rows(pieces, outer, out.raw_data(), ctx.pool);
  if (ctx.saved != nullptr && inputs.size() > 1) {
    Tensor sizes = Tensor::empty(Shape{int64_t(inputs.size())}, DType::i64);
    for (size_t i = 0; i < inputs.size(); ++i) sizes.data<int64_t>()[i] = inputs[i].size(d);
    ctx.saved->push_back(sizes);
  }
}

void CatOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                         std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                         std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  const Tensor g = grad_outputs[0].contiguous();
  const Shape& shape = g.shape();
  const int d = wrap_dim(dim_, shape.size());
  const size_t n = grad_inputs.size();
  const std::vector<int64_t> sizes = input_sizes(ctx, inputs, grad_inputs, shape[d]);
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  const int64_t row = shape[d] * inner;
  const char* src = static_cast<const char*>(g.raw_data());
  parallel_for(ctx.pool, outer,
               std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, row)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t o = begin; o < end; ++o) {
                   int64_t at = o * row;
                   for (size_t i = 0; i < n; ++i) {
                     const int64_t len = sizes[i] * inner;
                     if (grad_inputs[i].defined())
                       std::memcpy(static_cast<char*>(grad_inputs[i].raw_data()) +
                                       size_t(o * len) * sizeof(float),
                                   src + size_t(at) * sizeof(float), size_t(len) * sizeof(float));
                     at += len;
                   }
                 }
               });
}

std::vector<int64_t> CatOp::input_sizes(const ExecContext& ctx, std::span<const Tensor> inputs,
                                        std::span<const Tensor> grad_inputs, int64_t total) const {
  const size_t n = grad_inputs.size();
  std::vector<int64_t> sizes(n, -1);
  const Tensor* saved = ctx.saved != nullptr && !ctx.saved->empty() ? &ctx.saved->front() : nullptr;
  int unknown = 0;
  int64_t known = 0;
  for (size_t i = 0; i < n; ++i) {
    if (grad_inputs[i].defined()) {
      const int d = wrap_dim(dim_, grad_inputs[i].dim());
      sizes[i] = grad_inputs[i].size(d);
    } else if (i < inputs.size() && inputs[i].defined()) {
      sizes[i] = inputs[i].size(wrap_dim(dim_, inputs[i].dim()));
    } else if (saved != nullptr && saved->numel() == int64_t(n) && saved->device().is_cpu()) {
      sizes[i] = saved->data<int64_t>()[i];
    }
    if (sizes[i] < 0)
      ++unknown;
    else
      known += sizes[i];
  }
  if (unknown == 1) {
    for (int64_t& s : sizes)
      if (s < 0) s = total - known;
  }
  NNX_CHECK(unknown <= 1, ErrorKind::usage,
            "Cat: backward cannot place the gradients without "
            "the sizes of inputs that need none (the forward saves them in ctx.saved)");
  return sizes;
}

void ViewOp::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                           std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
  if (ctx.saved != nullptr && !ctx.saved->empty()) {
    backward_on_host(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
    return;
  }
  // Device-to-device copies (Tensor::copy_from), on the current stream.
  ViewOp::backward_cpu(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
}

// ---- Identity

IdentityOp::IdentityOp(const Call& call)
    // torch.nn.Identity(*args, **kwargs) ignores its arguments; the package's takes none.
    : module_(call.prefix().starts_with("torch") ? "torch.nn.modules.linear"
                                                 : "nn_executor.models") {}

void IdentityOp::check_arity(int num_inputs, int num_outputs) const {
  NNX_CHECK(num_inputs > 0, ErrorKind::shape, "Identity: expected at least 1 input, found 0");
  NNX_CHECK(num_outputs == num_inputs, ErrorKind::shape, "Identity: expected ", num_inputs,
            num_inputs == 1 ? " output" : " outputs", " (one per input), found ", num_outputs);
}

std::vector<int64_t> IdentityOp::infer_channels(std::span<const int64_t> in_channels,
                                                int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  return {in_channels.begin(), in_channels.end()};
}

std::vector<TensorSpec> IdentityOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                 int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  return {inputs.begin(), inputs.end()};
}

void IdentityOp::forward_cpu(const ExecContext&, std::span<const Tensor> inputs,
                             std::span<Tensor> outputs) const {
  for (size_t i = 0; i < outputs.size(); ++i) outputs[i] = inputs[i];
}

// ---- Flatten

FlattenOp::FlattenOp(const Call& call) {
  Args args(call, {{"start_dim"}, {"end_dim"}});
  start_dim_ = args.get_int("start_dim", 1);
  end_dim_ = args.get_int("end_dim", -1);
}

std::string FlattenOp::repr() const {
  return "Flatten(start_dim=" + std::to_string(start_dim_) +
         ", end_dim=" + std::to_string(end_dim_) + ")";
}

std::vector<int64_t> FlattenOp::infer_channels(std::span<const int64_t> in_channels,
                                               int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  // Dimension 1 survives when the flattened range starts after it or is a single dimension;
  // otherwise the count depends on sizes only known at run time.
  const bool keeps_channels = start_dim_ >= 2 || start_dim_ == end_dim_;
  return {keeps_channels ? in_channels[0] : kUnknownChannels};
}

Shape FlattenOp::flattened(const Shape& in) const {
  const int rank = in.size();
  const int start = wrap_dim(start_dim_, rank), end = wrap_dim(end_dim_, rank);
  if (rank == 0) return Shape{1};  // torch.flatten of a 0-d tensor
  NNX_CHECK(start <= end, ErrorKind::shape, "Flatten: start_dim cannot come after end_dim (",
            start_dim_, " and ", end_dim_, " for input shape ", in.str(), ")");
  Shape out;
  for (int k = 0; k < start; ++k) out.push_back(in[k]);
  int64_t merged = 1;
  for (int k = start; k <= end; ++k) merged *= in[k];
  out.push_back(merged);
  for (int k = end + 1; k < rank; ++k) out.push_back(in[k]);
  return out;
}

std::vector<TensorSpec> FlattenOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  return {{flattened(inputs[0].shape), inputs[0].dtype}};
}

void FlattenOp::forward_cpu(const ExecContext&, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  outputs[0] = inputs[0].reshape(flattened(inputs[0].shape()));
}

// ---- Unflatten

UnflattenOp::UnflattenOp(const Call& call) {
  Args args(call, {{"dim", true}, {"unflattened_size", true}});
  dim_ = args.get_int("dim", 0);
  sizes_ = args.get_ints("unflattened_size", 0, {});
  sizes_repr_ = args.get("unflattened_size")->repr();
  int inferred = 0;
  for (int64_t s : sizes_) {
    NNX_CHECK(s >= 0 || s == -1, ErrorKind::format, "Unflatten: invalid size ", s,
              " in unflattened_size ", sizes_repr_);
    inferred += s == -1;
  }
  NNX_CHECK(!sizes_.empty() && inferred <= 1, ErrorKind::format,
            "Unflatten: unflattened_size must be non-empty with at most one -1, found ",
            sizes_repr_);
}

std::string UnflattenOp::repr() const {
  return "Unflatten(dim=" + std::to_string(dim_) + ", unflattened_size=" + sizes_repr_ + ")";
}

std::vector<int64_t> UnflattenOp::infer_channels(std::span<const int64_t> in_channels,
                                                 int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  if (dim_ >= 2) return {in_channels[0]};
  if (dim_ == 1 && sizes_[0] != -1) return {sizes_[0]};
  return {kUnknownChannels};
}

std::vector<TensorSpec> UnflattenOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                  int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Shape& in = inputs[0].shape;
  NNX_CHECK(in.size() > 0, ErrorKind::shape, "Unflatten: expected an input with dimensions");
  const int d = wrap_dim(dim_, in.size());
  int64_t known = 1;
  for (int64_t s : sizes_)
    if (s != -1) known *= s;
  std::vector<int64_t> sizes = sizes_;
  for (int64_t& s : sizes) {
    if (s != -1) continue;
    NNX_CHECK(known != 0 && in[d] % known == 0, ErrorKind::shape, "Unflatten: cannot split size ",
              in[d], " of dimension ", dim_, " into ", sizes_repr_);
    s = in[d] / known;
    known *= s;
  }
  NNX_CHECK(known == in[d], ErrorKind::shape, "Unflatten: expected dimension ", dim_, " of size ",
            known, " (the product of ", sizes_repr_, "), found shape ", in.str());
  Shape out;
  for (int k = 0; k < in.size(); ++k) {
    if (k != d) {
      out.push_back(in[k]);
      continue;
    }
    for (int64_t s : sizes) out.push_back(s);
  }
  return {{out, inputs[0].dtype}};
}

void UnflattenOp::forward_cpu(const ExecContext&, std::span<const Tensor> inputs,
                              std::span<Tensor> outputs) const {
  TensorSpec in{inputs[0].shape(), inputs[0].dtype()};
  outputs[0] = inputs[0].reshape(infer_shapes({&in, 1}, 1)[0].shape);
}

// ---- Dropout

DropoutOp::DropoutOp(const Call& call, std::string type) : type_(std::move(type)) {
  Args args(call, {{"p"}, {"inplace"}});
  double p = args.get_double("p", 0.5);
  NNX_CHECK(p >= 0 && p <= 1, ErrorKind::format, type_,
            ": dropout probability has to be between 0 and 1, but got ", op_util::float_repr(p));
  p_ = p;
  p_repr_ = number_text(args, "p", "0.5");
  inplace_ = args.get_bool("inplace", false);
}

std::string DropoutOp::repr() const {
  return type_ + "(p=" + p_repr_ + ", inplace=" + (inplace_ ? "True" : "False") + ")";
}

std::vector<TensorSpec> DropoutOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  // PyTorch refuses other ranks for Dropout1d even in eval mode (the others only warn).
  const int rank = inputs[0].shape.size();
  NNX_CHECK(type_ != "Dropout1d" || rank == 2 || rank == 3, ErrorKind::shape,
            "Dropout1d: expected a 2-d or 3-d input, found shape ", inputs[0].shape.str());
  return {inputs[0]};
}

Shape DropoutOp::mask_shape(const Shape& in) const {
  if (type_ == "Dropout") return in;
  // Feature dropout draws per (sample, channel). Dropout1d of a 2-d and Dropout3d of a
  // non-5-d input are taken as unbatched (one draw per dim-0 slice); Dropout2d is always
  // batched, as PyTorch 1.13 has them.
  const bool batched = type_ == "Dropout2d" || (type_ == "Dropout1d" && in.size() == 3) ||
                       (type_ == "Dropout3d" && in.size() == 5);
  const int kept = batched ? 2 : 1;
  NNX_CHECK(in.size() >= kept, ErrorKind::shape, type_,
            ": feature dropout needs an input with channels, found shape ", in.str());
  Shape out = in;
  for (int k = kept; k < in.size(); ++k) out[k] = 1;
  return out;
}

void DropoutOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  if (!ctx.training || p_ == 0 || inputs[0].numel() == 0) {
    outputs[0] = inputs[0];
    return;
  }
  masked_forward(ctx, type_, inputs[0], mask_shape(inputs[0].shape()), p_, outputs[0]);
}

void DropoutOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                             std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                             std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  masked_backward(ctx, grad_outputs[0], grad_inputs[0]);
}

// ---- StochasticDepth

StochasticDepthOp::StochasticDepthOp(const Call& call) {
  Args args(call, {{"p", true}, {"mode", true}});
  double p = args.get_double("p", 0.5);
  NNX_CHECK(p >= 0 && p <= 1, ErrorKind::format,
            "StochasticDepth: drop probability has to be between 0 and 1, but got ",
            op_util::float_repr(p));
  p_ = p;
  p_repr_ = number_text(args, "p", "0.5");
  mode_ = args.get_text("mode", "row");
  NNX_CHECK(mode_ == "row" || mode_ == "batch", ErrorKind::format,
            "StochasticDepth: mode has to be either 'batch' or 'row', but got ", mode_);
}

std::string StochasticDepthOp::repr() const {
  // torchvision prints the mode unquoted.
  return "StochasticDepth(p=" + p_repr_ + ", mode=" + mode_ + ")";
}

std::vector<TensorSpec> StochasticDepthOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                        int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  return {inputs[0]};
}

void StochasticDepthOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                                    std::span<Tensor> outputs) const {
  if (!ctx.training || p_ == 0 || inputs[0].numel() == 0) {
    outputs[0] = inputs[0];
    return;
  }
  // One draw per sample (row) or one for the whole batch.
  Shape mask = inputs[0].shape();
  for (int k = 0; k < mask.size(); ++k)
    if (k > 0 || mode_ == "batch") mask[k] = 1;
  masked_forward(ctx, "StochasticDepth", inputs[0], mask, p_, outputs[0]);
}

void StochasticDepthOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                                     std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                                     std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  masked_backward(ctx, grad_outputs[0], grad_inputs[0]);
}

// ---- factories

std::shared_ptr<Op> make_cat(const Call& call) {
  return std::make_shared<CatOp>(call);
}
std::shared_ptr<Op> make_identity(const Call& call) {
  return std::make_shared<IdentityOp>(call);
}
std::shared_ptr<Op> make_flatten(const Call& call) {
  return std::make_shared<FlattenOp>(call);
}
std::shared_ptr<Op> make_unflatten(const Call& call) {
  return std::make_shared<UnflattenOp>(call);
}
std::shared_ptr<Op> make_dropout(const Call& call) {
  return std::make_shared<DropoutOp>(call, "Dropout");
}
std::shared_ptr<Op> make_dropout1d(const Call& call) {
  return std::make_shared<DropoutOp>(call, "Dropout1d");
}
std::shared_ptr<Op> make_dropout2d(const Call& call) {
  return std::make_shared<DropoutOp>(call, "Dropout2d");
}
std::shared_ptr<Op> make_dropout3d(const Call& call) {
  return std::make_shared<DropoutOp>(call, "Dropout3d");
}

std::shared_ptr<Op> make_stochastic_depth(const Call& call) {
  return std::make_shared<StochasticDepthOp>(call);
}

void CatOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                         std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Cat");
  Tensor& out = outputs[0];
  char* output = static_cast<char*>(scope.output_bytes(out));
  const Shape& shape = out.shape();
  const int d = wrap_dim(dim_, shape.size());
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  const int64_t element = int64_t(out.element_size());
  const int64_t out_row = shape[d] * inner * element;
  int64_t offset = 0;
  for (const Tensor& input : inputs) {
    const Tensor in = scope.contiguous(input);
    NNX_CHECK(in.dtype() == out.dtype(), ErrorKind::unsupported, "Cat on CUDA: input dtype ",
              dtype_name(in.dtype()), " differs from the output's ", dtype_name(out.dtype()));
    const int64_t piece = in.size(d) * inner * element;
    // A piece the planner had computed in its place (Op::concat_dim) is left there.
    if (outer != 1 || in.raw_data() != output + offset)
      cuda::copy_rows(in.raw_data(), piece, output + offset, out_row, outer, piece, scope.stream());
    offset += piece;
  }
  if (ctx.saved != nullptr && inputs.size() > 1) {
    // For the backward, as on the CPU (on the host: the backward reads it there).
    Tensor sizes = Tensor::empty(Shape{int64_t(inputs.size())}, DType::i64);
    for (size_t i = 0; i < inputs.size(); ++i) sizes.data<int64_t>()[i] = inputs[i].size(d);
    ctx.saved->push_back(sizes);
  }
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void CatOp::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                          std::span<Tensor> grad_inputs, std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  (void)outputs;
  (void)grad_params;
  const cuda::OpScope scope(ctx, "Cat");
  const Tensor g = scope.contiguous(grad_outputs[0]);
  const Shape& shape = g.shape();
  const int d = wrap_dim(dim_, shape.size());
  const std::vector<int64_t> sizes = input_sizes(ctx, inputs, grad_inputs, shape[d]);
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  const int64_t element = int64_t(g.element_size());
  const int64_t row = shape[d] * inner * element;
  const char* src = static_cast<const char*>(g.raw_data());
  int64_t offset = 0;
  for (size_t i = 0; i < grad_inputs.size(); ++i) {
    const int64_t piece = sizes[i] * inner * element;
    if (grad_inputs[i].defined())
      cuda::copy_rows(src + offset, row, scope.output_bytes(grad_inputs[i]), piece, outer, piece,
                      scope.stream());
    offset += piece;
  }
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

// In training the mask is drawn on the host from the trainer's generator (the same draws as on
// the CPU) and applied there: the CPU body on host copies.
void DropoutOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                             std::span<Tensor> outputs) const {
  if (ctx.training && p_ != 0 && inputs[0].numel() != 0)
    return forward_on_host(ctx, inputs, outputs);
  outputs[0] = inputs[0];
}

void StochasticDepthOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                     std::span<Tensor> outputs) const {
  if (ctx.training && p_ != 0 && inputs[0].numel() != 0)
    return forward_on_host(ctx, inputs, outputs);
  outputs[0] = inputs[0];
}

}  // namespace nnx
