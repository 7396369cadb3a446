// Cat, Identity, Flatten, Unflatten and Dropout: shape rules, and forwards that assign views
// (Cat alone copies, through kernels/cpu/cat.h).
#include "ops/structure.h"

#include <vector>

#include "kernels/cpu/cat.h"
#include "nnx/error.h"

namespace nnx {
namespace {

// A numeric argument as Python's str() shows it in an extra_repr: as given, else the default.
std::string number_text(const Args& args, std::string_view name, std::string fallback) {
  const Value* v = args.get(name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) args.bad_type(name, "a number");
  return v->repr();
}

}  // namespace

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

void CatOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                        std::span<Tensor> outputs) const {
  Tensor& out = outputs[0];
  const Shape& shape = out.shape();
  const int d = wrap_dim(dim_, shape.size());
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  std::vector<Tensor> held;  // keeps contiguous copies alive while the kernel reads them
  std::vector<cpu::CatPiece> pieces;
  held.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    held.push_back(in.contiguous());
    pieces.push_back({held.back().raw_data(),
                      held.back().size(d) * inner * int64_t(held.back().element_size())});
  }
  cpu::cat_rows(pieces, outer, out.raw_data(), ctx.pool);
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

std::vector<TensorSpec> FlattenOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Shape& in = inputs[0].shape;
  const int rank = in.size();
  const int start = wrap_dim(start_dim_, rank), end = wrap_dim(end_dim_, rank);
  if (rank == 0) return {{Shape{1}, inputs[0].dtype}};  // torch.flatten of a 0-d tensor
  NNX_CHECK(start <= end, ErrorKind::shape, "Flatten: start_dim cannot come after end_dim (",
            start_dim_, " and ", end_dim_, " for input shape ", in.str(), ")");
  Shape out;
  for (int k = 0; k < start; ++k) out.push_back(in[k]);
  int64_t merged = 1;
  for (int k = start; k <= end; ++k) merged *= in[k];
  out.push_back(merged);
  for (int k = end + 1; k < rank; ++k) out.push_back(in[k]);
  return {{out, inputs[0].dtype}};
}

void FlattenOp::forward_cpu(const ExecContext&, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  TensorSpec in{inputs[0].shape(), inputs[0].dtype()};
  outputs[0] = inputs[0].reshape(infer_shapes({&in, 1}, 1)[0].shape);
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

void DropoutOp::forward_cpu(const ExecContext&, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  outputs[0] = inputs[0];
}

// ---- StochasticDepth

StochasticDepthOp::StochasticDepthOp(const Call& call) {
  Args args(call, {{"p", true}, {"mode", true}});
  double p = args.get_double("p", 0.5);
  NNX_CHECK(p >= 0 && p <= 1, ErrorKind::format,
            "StochasticDepth: drop probability has to be between 0 and 1, but got ",
            op_util::float_repr(p));
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

void StochasticDepthOp::forward_cpu(const ExecContext&, std::span<const Tensor> inputs,
                                    std::span<Tensor> outputs) const {
  outputs[0] = inputs[0];
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

}  // namespace nnx
