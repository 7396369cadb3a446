// Reshape, Permute and Split (see layout.h): argument checks, shape rules, and forwards through
// kernels/cpu/layout.h (Reshape is a view and needs no kernel).
#include "ops/layout.h"

#include <algorithm>
#include <numeric>

#include "kernels/cpu/cat.h"
#include "kernels/cpu/layout.h"
#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/tensor_ops.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {
namespace {

// A tuple or list of ints (a bare int only where `single_ok`), as written.
std::vector<int64_t> int_sequence(const Args& args, std::string_view name, bool single_ok = false) {
  const Value* v = args.get(name);
  if (v == nullptr || !(v->is_sequence() || (single_ok && v->is_int())))
    args.bad_type(name, single_ok ? "an int or a tuple of ints" : "a tuple of ints");
  return args.get_ints(name, 0, {});
}

std::string list_repr(std::span<const int64_t> values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out + "]";
}

}  // namespace

// ---- Reshape

ReshapeOp::ReshapeOp(const Call& call) {
  Args args(call, {{"shape", true}});
  shape_ = int_sequence(args, "shape");
  const std::string text = op_util::tuple_repr(shape_);
  NNX_CHECK(!shape_.empty() && shape_.size() <= size_t(Shape::kMaxDims), ErrorKind::format,
            "Reshape: shape must have 1 to ", Shape::kMaxDims, " dims, found ", text);
  NNX_CHECK(std::count(shape_.begin(), shape_.end(), -1) <= 1, ErrorKind::format,
            "Reshape: only one dimension can be inferred (-1), found shape=", text);
  for (int64_t s : shape_)
    NNX_CHECK(s >= -1, ErrorKind::format, "Reshape: invalid size ", s, " in shape=", text,
              " (sizes are >= 0, 0 copying the input's, or one -1)");
}

std::string ReshapeOp::repr() const {
  return "Reshape(shape=" + op_util::tuple_repr(shape_) + ")";
}

std::vector<int64_t> ReshapeOp::infer_channels(std::span<const int64_t> in_channels,
                                               int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  if (shape_.size() != 2 && shape_.size() != 4) return {kUnknownChannels};
  if (shape_[1] > 0) return {shape_[1]};
  return {shape_[1] == 0 ? in_channels[0] : kUnknownChannels};
}

Shape ReshapeOp::target(const Shape& in) const {
  Shape out;
  int inferred = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape_.size(); ++i) {
    int64_t s = shape_[i];
    if (s == 0) {
      NNX_CHECK(int(i) < in.size(), ErrorKind::shape, "Reshape(shape=", op_util::tuple_repr(shape_),
                "): size 0 at dimension ", i, " copies the input's, but the input has shape ",
                in.str());
      s = in[int(i)];
    }
    if (s == -1)
      inferred = int(i);
    else
      known *= s;
    out.push_back(s);
  }
  const int64_t numel = in.numel();
  if (inferred >= 0) {
    NNX_CHECK(known != 0 && numel % known == 0, ErrorKind::shape,
              "Reshape(shape=", op_util::tuple_repr(shape_), "): cannot reshape an input of shape ",
              in.str(), " (", numel, " elements) into ", out.str());
    out[inferred] = numel / known;
  } else {
    NNX_CHECK(known == numel, ErrorKind::shape, "Reshape(shape=", op_util::tuple_repr(shape_),
              "): cannot reshape an input of shape ", in.str(), " (", numel, " elements) into ",
              out.str(), " (", known, " elements)");
  }
  return out;
}

std::vector<TensorSpec> ReshapeOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  return {{target(inputs[0].shape), inputs[0].dtype}};
}

void ReshapeOp::forward_cpu(const ExecContext&, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  outputs[0] = inputs[0].reshape(target(inputs[0].shape()));
}

// ---- Permute

PermuteOp::PermuteOp(const Call& call) {
  Args args(call, {{"dims", true}});
  dims_ = int_sequence(args, "dims");
  const int rank = int(dims_.size());
  const std::string text = op_util::tuple_repr(dims_);
  NNX_CHECK(rank >= 1 && rank <= Shape::kMaxDims, ErrorKind::format,
            "Permute: dims must list 1 to ", Shape::kMaxDims, " dims, found ", text);
  std::vector<bool> seen(size_t(rank), false);
  for (int64_t d : dims_) {
    NNX_CHECK(d >= -rank && d < rank, ErrorKind::format, "Permute: dims=", text,
              " is not a permutation of ", rank, " dims (", d, " is out of range)");
    const int w = int(d < 0 ? d + rank : d);
    NNX_CHECK(!seen[size_t(w)], ErrorKind::format, "Permute: dims=", text,
              " is not a permutation of ", rank, " dims (dim ", w, " repeats)");
    seen[size_t(w)] = true;
    order_.push_back(w);
  }
}

std::string PermuteOp::repr() const {
  return "Permute(dims=" + op_util::tuple_repr(dims_) + ")";
}

std::vector<int64_t> PermuteOp::infer_channels(std::span<const int64_t> in_channels,
                                               int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  return {order_.size() >= 2 && order_[1] == 1 ? in_channels[0] : kUnknownChannels};
}

std::vector<TensorSpec> PermuteOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Shape& in = inputs[0].shape;
  NNX_CHECK(in.size() == int(order_.size()), ErrorKind::shape,
            "Permute(dims=", op_util::tuple_repr(dims_), "): expected an input of rank ",
            order_.size(), ", found shape ", in.str());
  Shape out;
  for (int d : order_) out.push_back(in[d]);
  return {{out, inputs[0].dtype}};
}

void PermuteOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  const Tensor& in = inputs[0];
  Shape strides;
  for (int d : order_) strides.push_back(in.strides()[d]);
  cpu::strided_gather(in.raw_data(), outputs[0].shape().span(), strides.span(), in.element_size(),
                      outputs[0].raw_data(), ctx.pool);
}

void PermuteOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                             std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                             std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  Tensor& gin = grad_inputs[0];
  if (!gin.defined()) return;
  const Tensor g = grad_outputs[0].contiguous();
  // Input dim order_[j] is output dim j: read g at its stride j.
  Shape strides = gin.shape();
  for (size_t j = 0; j < order_.size(); ++j) strides[order_[j]] = g.strides()[int(j)];
  cpu::strided_gather(g.raw_data(), gin.shape().span(), strides.span(), g.element_size(),
                      gin.raw_data(), ctx.pool);
}

// ---- Split

SplitOp::SplitOp(const Call& call) {
  Args args(call, {{"sizes", true}, {"dim"}});
  sizes_ = int_sequence(args, "sizes");
  dim_ = args.get_int("dim", 0);
  NNX_CHECK(!sizes_.empty(), ErrorKind::format, "Split: sizes must list at least one size");
  for (int64_t s : sizes_)
    NNX_CHECK(s >= 0, ErrorKind::format,
              "Split: sizes must not be negative, found sizes=", list_repr(sizes_));
}

std::string SplitOp::repr() const {
  return "Split(sizes=" + list_repr(sizes_) + ", dim=" + std::to_string(dim_) + ")";
}

void SplitOp::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, 1);
  NNX_CHECK(num_outputs == int(sizes_.size()), ErrorKind::shape, "Split(sizes=", list_repr(sizes_),
            "): expected ", sizes_.size(), sizes_.size() == 1 ? " output" : " outputs",
            " (one per size), found ", num_outputs);
}

std::vector<int64_t> SplitOp::infer_channels(std::span<const int64_t> in_channels,
                                             int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  if (dim_ == 1) {
    const int64_t total = std::accumulate(sizes_.begin(), sizes_.end(), int64_t(0));
    op_util::expect_channels(total, in_channels[0], "input channels (the sum of the sizes)");
    return sizes_;
  }
  return std::vector<int64_t>(sizes_.size(), dim_ >= 0 ? in_channels[0] : kUnknownChannels);
}

std::vector<TensorSpec> SplitOp::infer_shapes(std::span<const TensorSpec> inputs,
                                              int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Shape& in = inputs[0].shape;
  NNX_CHECK(in.size() > 0, ErrorKind::shape, "Split: cannot split a zero-dimensional input");
  const int d = wrap_dim(dim_, in.size());
  const int64_t total = std::accumulate(sizes_.begin(), sizes_.end(), int64_t(0));
  NNX_CHECK(total == in[d], ErrorKind::shape, "Split(sizes=", list_repr(sizes_), ", dim=", dim_,
            "): the sizes sum to ", total, ", but dimension ", d, " of the input has ", in[d],
            " (shape ", in.str(), ")");
  std::vector<TensorSpec> out;
  for (int64_t s : sizes_) {
    Shape piece = in;
    piece[d] = s;
    out.push_back({piece, inputs[0].dtype});
  }
  return out;
}

void SplitOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<Tensor> outputs) const {
  const Tensor in = inputs[0].contiguous();
  const Shape& shape = in.shape();
  const int d = wrap_dim(dim_, shape.size());
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  std::vector<cpu::SplitPiece> pieces;
  for (size_t i = 0; i < outputs.size(); ++i)
    pieces.push_back({outputs[i].raw_data(), sizes_[i] * inner * int64_t(in.element_size())});
  cpu::split_rows(in.raw_data(), outer, pieces, ctx.pool);
}

void SplitOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor>, std::span<const Tensor>,
                           std::span<const Tensor> grad_outputs, std::span<Tensor> grad_inputs,
                           std::span<Tensor>) const {
  Tensor& gin = grad_inputs[0];
  if (!gin.defined()) return;
  const Shape& shape = gin.shape();
  const int d = wrap_dim(dim_, shape.size());
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  std::vector<Tensor> held;  // contiguous gradients, alive while the kernel reads them
  std::vector<cpu::CatPiece> pieces;
  held.reserve(grad_outputs.size());
  for (size_t i = 0; i < grad_outputs.size(); ++i) {
    held.push_back(grad_outputs[i].contiguous());
    pieces.push_back({held.back().raw_data(), sizes_[i] * inner * int64_t(sizeof(float))});
  }
  cpu::cat_rows(pieces, outer, gin.raw_data(), ctx.pool);
}

// ---- factories

std::shared_ptr<Op> make_reshape(const Call& call) {
  return std::make_shared<ReshapeOp>(call);
}
std::shared_ptr<Op> make_permute(const Call& call) {
  return std::make_shared<PermuteOp>(call);
}
std::shared_ptr<Op> make_split(const Call& call) {
  return std::make_shared<SplitOp>(call);
}

void PermuteOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                             std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Permute");
  const Tensor& in = scope.on_device(inputs[0]);
  void* output = scope.output_bytes(outputs[0]);
  Shape strides;
  for (int d : order_) strides.push_back(in.strides()[d]);
  cuda::strided_copy(in.raw_data(), outputs[0].shape().span().data(), strides.span().data(),
                     outputs[0].dim(), in.element_size(), output, scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void SplitOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Split");
  const Tensor in = scope.contiguous(inputs[0]);
  const Shape& shape = in.shape();
  const int d = wrap_dim(dim_, shape.size());
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[k];
  for (int k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  const int64_t element = int64_t(in.element_size());
  const int64_t in_row = shape[d] * inner * element;
  int64_t offset = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const int64_t piece = sizes_[i] * inner * element;
    if (piece == 0 || outer == 0) continue;  // an empty piece (its strides may be any)
    cuda::copy_rows(static_cast<const char*>(in.raw_data()) + offset, in_row,
                    scope.output_bytes(outputs[i]), piece, outer, piece, scope.stream());
    offset += piece;
  }
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
