// Constant and Variable: the literal (or the state dict's "t") copied to the output.
#include "ops/constant.h"

#include <cctype>
#include <cmath>

#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {
namespace {

// Does `text` hold "torch.tensor" followed (spaces aside) by "((", i.e. a tuple argument?
bool spells_tensor_of_tuple(std::string_view text) {
  constexpr std::string_view kName = "torch.tensor";
  for (size_t at = text.find(kName); at != std::string_view::npos; at = text.find(kName, at + 1)) {
    size_t i = at + kName.size();
    int parens = 0;
    for (; i < text.size() && parens < 2; ++i) {
      if (std::isspace(static_cast<unsigned char>(text[i]))) continue;
      if (text[i] != '(') break;
      ++parens;
    }
    if (parens == 2) return true;
  }
  return false;
}

}  // namespace

Tensor constant_literal(const Tensor& parsed, std::string_view source_text) {
  if (parsed.dim() != 1 || !spells_tensor_of_tuple(source_text)) return parsed;
  Shape shape;
  for (int64_t i = 0; i < parsed.numel(); ++i) {
    double v = parsed.at_flat(i);
    if (!(v >= 0 && v == std::floor(v) && v < 9.0e15)) return parsed;
    if (shape.size() == Shape::kMaxDims) return parsed;
    shape.push_back(int64_t(v));
  }
  // The same cap as a literal's elements (call_parser.cpp): a shape spelt as a tuple must not
  // let a description ask for more than a literal could hold.
  constexpr int64_t kMaxElements = int64_t(1) << 24;
  int64_t numel = 1;
  for (int64_t d : shape.span()) {
    NNX_CHECK(d == 0 || numel <= kMaxElements / d, ErrorKind::format, "the constant's shape ",
              shape.str(), " has more than ", kMaxElements,
              " elements, the most a literal may describe");
    numel *= d;
  }
  return Tensor::zeros(shape, parsed.dtype());
}

ConstantOp::ConstantOp(const Call& call, bool trainable) : trainable_(trainable) {
  Args args(call, {{"t", true}});
  const Value* t = args.get("t");
  if (!t->is_tensor()) args.bad_type("t", "a tensor literal such as torch.zeros((1, 5))");
  Tensor value = constant_literal(t->as_tensor(), call.text);
  add_param("t", value.shape(), trainable, value.dtype());
  mutable_param("t") = value.contiguous().clone();
}

std::string ConstantOp::repr() const {
  const Tensor& t = params()[0].value;
  // The package's own spelling, without a space before dtype.
  return type() + "(t=torch.zeros(" + op_util::tuple_repr(t.shape().span()) + ",dtype=torch." +
         std::string(dtype_name(t.dtype())) + "))";
}

void ConstantOp::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 0, 0);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> ConstantOp::infer_channels(std::span<const int64_t> in_channels,
                                                int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  const Tensor& t = params()[0].value;
  return {t.dim() >= 2 ? t.size(1) : kUnknownChannels};
}

std::vector<TensorSpec> ConstantOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                 int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Tensor& t = params()[0].value;
  return {{t.shape(), t.dtype()}};
}

void ConstantOp::forward_cpu(const ExecContext&, std::span<const Tensor>,
                             std::span<Tensor> outputs) const {
  outputs[0].copy_from(params()[0].value);
}

void ConstantOp::backward_cpu(const ExecContext&, std::span<const Tensor>, std::span<const Tensor>,
                              std::span<const Tensor> grad_outputs, std::span<Tensor>,
                              std::span<Tensor> grad_params) const {
  if (!grad_params.empty() && grad_params[0].defined()) grad_params[0].copy_from(grad_outputs[0]);
}

std::shared_ptr<Op> make_constant(const Call& call) {
  return std::make_shared<ConstantOp>(call, false);
}

std::shared_ptr<Op> make_variable(const Call& call) {
  return std::make_shared<ConstantOp>(call, true);
}

void ConstantOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                              std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, type());
  scope.copy(outputs[0], cuda::device_param(params()[0].value, scope.device()));
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
