// Add, Sub, Mul: argument parsing, channel and shape rules, and the CPU forward as a left fold
// (the first step writes the output, later steps update it in place).
#include "ops/elementwise.h"

#include <algorithm>

#include "kernels/cpu/layernorm.h"
#include "nnx/error.h"
#include "ops/activation.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/activation.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/train.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {
namespace {

const char* kind_name(cpu::BinaryOp kind) {
  switch (kind) {
    case cpu::BinaryOp::add:
      return "Add";
    case cpu::BinaryOp::sub:
      return "Sub";
    case cpu::BinaryOp::mul:
      return "Mul";
  }
  return "?";
}

// Channels of a broadcast, where an unknown count could still be 1 or match the other.
int64_t broadcast_channels(int64_t a, int64_t b) {
  if (a == kUnknownChannels) return b == 1 ? kUnknownChannels : b;
  if (b == kUnknownChannels) return a == 1 ? kUnknownChannels : a;
  if (a == b || b == 1) return a;
  if (a == 1) return b;
  fail(ErrorKind::shape, "expected inputs with broadcastable channels, found ", a, " and ", b);
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  Shape out;
  const int rank = std::max(a.size(), b.size());
  out.resize(rank);
  for (int i = 0; i < rank; ++i) {
    int ia = i - (rank - a.size()), ib = i - (rank - b.size());
    int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    NNX_CHECK(da == db || da == 1 || db == 1, ErrorKind::shape,
              "expected broadcastable shapes, found ", a.str(), " and ", b.str(), " (dimension ", i,
              ": ", da, " against ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

BroadcastFoldOp::BroadcastFoldOp(const Call& call, cpu::BinaryOp kind) : kind_(kind) {
  Args args(call, {{"num"}});
  num_ = args.get_int("num", 1);
}

std::string BroadcastFoldOp::type() const {
  return kind_name(kind_);
}

std::string BroadcastFoldOp::repr() const {
  return type() + "(num=" + std::to_string(num_) + ")";
}

void BroadcastFoldOp::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, INT32_MAX);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> BroadcastFoldOp::infer_channels(std::span<const int64_t> in_channels,
                                                     int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  int64_t c = in_channels[0];
  for (size_t i = 1; i < in_channels.size(); ++i) c = broadcast_channels(c, in_channels[i]);
  return {c};
}

std::vector<TensorSpec> BroadcastFoldOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                      int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  Shape shape = inputs[0].shape;
  for (const TensorSpec& in : inputs) {
    NNX_CHECK(in.dtype == DType::f32, ErrorKind::unsupported, type(),
              ": expected float32 inputs, found ", dtype_name(in.dtype));
    shape = broadcast_shapes(shape, in.shape);
  }
  return {{shape, DType::f32}};
}

int64_t BroadcastFoldOp::flops(std::span<const TensorSpec> inputs,
                               std::span<const TensorSpec> outputs) const {
  if (outputs.empty() || inputs.size() < 2) return 0;
  return outputs[0].shape.numel() * int64_t(inputs.size() - 1);
}

void BroadcastFoldOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                                  std::span<Tensor> outputs) const {
  forward_fused(ctx, inputs, {}, outputs[0]);
}

void BroadcastFoldOp::forward_fused(const ExecContext& ctx, std::span<const Tensor> inputs,
                                    const cpu::Epilogue& epilogue, Tensor& out) const {
  if (inputs.size() == 1) {
    out.copy_from(inputs[0]);
    cpu::apply_epilogue(epilogue, out.data<float>(), out.numel());
    return;
  }
  Tensor a = inputs[0].contiguous(), b = inputs[1].contiguous();
  const auto last = [&](size_t i) { return i + 1 == inputs.size() ? epilogue : cpu::Epilogue{}; };
  float* y = out.data<float>();
  // The plan may have put the output over an operand (in_place_inputs): the other is folded
  // into it, for the second operand as b op a (Add and Mul only: the same bits).
  if (a.data<float>() == y || (b.data<float>() == y && kind_ != cpu::BinaryOp::sub)) {
    const Tensor& other = a.data<float>() == y ? b : a;
    cpu::binary_broadcast_inplace(kind_, y, out.shape(), other.data<float>(), other.shape(),
                                  ctx.pool, last(1));
  } else {
    cpu::binary_broadcast(kind_, a.data<float>(), a.shape(), b.data<float>(), b.shape(), y,
                          out.shape(), ctx.pool, last(1));
  }
  for (size_t i = 2; i < inputs.size(); ++i) {
    Tensor next = inputs[i].contiguous();
    cpu::binary_broadcast_inplace(kind_, out.data<float>(), out.shape(), next.data<float>(),
                                  next.shape(), ctx.pool, last(i));
  }
}

std::vector<int> BroadcastFoldOp::in_place_inputs(std::span<const TensorSpec> inputs,
                                                  const TensorSpec& output) const {
  std::vector<int> k;
  if (inputs.size() < 2 || output.dtype != DType::f32) return k;
  for (int i = 0; i < 2; ++i)
    if (inputs[size_t(i)] == output && (i == 0 || kind_ != cpu::BinaryOp::sub)) k.push_back(i);
  return k;
}

BackwardNeeds BroadcastFoldOp::backward_needs() const {
  const bool mul = kind_ == cpu::BinaryOp::mul;
  return {mul, false};
}

void BroadcastFoldOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                                   std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                                   std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  const Tensor g = grad_outputs[0].contiguous();
  const Shape& out_shape = g.shape();
  for (size_t i = 0; i < grad_inputs.size(); ++i) {
    Tensor& gi = grad_inputs[i];
    if (!gi.defined()) continue;
    Tensor src = g;
    if (kind_ == cpu::BinaryOp::mul && inputs.size() > 1) {
      // gout times every other input, at the output's shape.
      src = Tensor::empty(out_shape, DType::f32);
      bool first = true;
      for (size_t j = 0; j < inputs.size(); ++j) {
        if (j == i) continue;
        Tensor x = inputs[j].contiguous();
        if (first)
          cpu::binary_broadcast(kind_, g.data<float>(), out_shape, x.data<float>(), x.shape(),
                                src.data<float>(), out_shape, ctx.pool);
        else
          cpu::binary_broadcast_inplace(kind_, src.data<float>(), out_shape, x.data<float>(),
                                        x.shape(), ctx.pool);
        first = false;
      }
    }
    cpu::sum_to_shape(src.data<float>(), out_shape, gi.data<float>(), gi.shape(), ctx.pool);
    if (kind_ == cpu::BinaryOp::sub && i > 0)
      cpu::affine(gi.data<float>(), gi.numel(), -1.0f, 0.0f, gi.data<float>(), ctx.pool);
  }
}

std::shared_ptr<Op> make_add(const Call& call) {
  return std::make_shared<BroadcastFoldOp>(call, cpu::BinaryOp::add);
}
std::shared_ptr<Op> make_sub(const Call& call) {
  return std::make_shared<BroadcastFoldOp>(call, cpu::BinaryOp::sub);
}
std::shared_ptr<Op> make_mul(const Call& call) {
  return std::make_shared<BroadcastFoldOp>(call, cpu::BinaryOp::mul);
}

void BroadcastFoldOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                   std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, type());
  Tensor& out = outputs[0];
  float* output = scope.output(out);
  if (inputs.size() == 1) {
    scope.copy(out, scope.input(inputs[0]));
    return;
  }
  const cuda::BinaryOp op = kind_ == cpu::BinaryOp::add   ? cuda::BinaryOp::add
                            : kind_ == cpu::BinaryOp::sub ? cuda::BinaryOp::sub
                                                          : cuda::BinaryOp::mul;
  const Tensor a = scope.input(inputs[0]), b = scope.input(inputs[1]);
  const std::span<const int64_t> out_dims = out.shape().span();
  cuda::binary_broadcast(op, false, a.data<float>(), a.shape().span().data(), a.dim(),
                         b.data<float>(), b.shape().span().data(), b.dim(), output, out_dims.data(),
                         out.dim(), scope.stream());
  // The left fold: later inputs update the output in place.
  for (size_t i = 2; i < inputs.size(); ++i) {
    const Tensor next = scope.input(inputs[i]);
    cuda::binary_broadcast(op, false, output, out_dims.data(), out.dim(), next.data<float>(),
                           next.shape().span().data(), next.dim(), output, out_dims.data(),
                           out.dim(), scope.stream());
  }
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

void BroadcastFoldOp::forward_cuda_chain(const ExecContext& ctx, std::span<const Tensor> inputs,
                                         const ActivationOp& act, Tensor& output) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, type());
  float* y = scope.output(output);
  const bool relu = act.kind() == cpu::Activation::relu;
  if (relu && inputs.size() == 2 && inputs[0].shape() == output.shape() &&
      inputs[1].shape() == output.shape()) {
    const cuda::BinaryOp op = kind_ == cpu::BinaryOp::add   ? cuda::BinaryOp::add
                              : kind_ == cpu::BinaryOp::sub ? cuda::BinaryOp::sub
                                                            : cuda::BinaryOp::mul;
    const Tensor a = scope.input(inputs[0]), b = scope.input(inputs[1]);
    cuda::binary_same_shape(op, true, a.data<float>(), b.data<float>(), y, output.numel(),
                            scope.stream());
    return;
  }
  Tensor out[1] = {output};
  forward_cuda(ctx, inputs, out);
  cuda::activation(act.kind(), act.args(), y, y, output.numel(), scope.stream());
#else
  (void)inputs;
  (void)act;
  (void)output;
  fail(ErrorKind::device, type(), ": ", ctx.device.str(), ": this build has no CUDA backend");
#endif
}

void BroadcastFoldOp::backward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                                    std::span<const Tensor> outputs,
                                    std::span<const Tensor> grad_outputs,
                                    std::span<Tensor> grad_inputs,
                                    std::span<Tensor> grad_params) const {
#ifdef NNX_WITH_CUDA
  const Shape& out_shape = grad_outputs[0].shape();
  bool same = kind_ != cpu::BinaryOp::mul || grad_inputs.size() == 2;
  for (size_t i = 0; i < grad_inputs.size(); ++i) {
    if (grad_inputs[i].defined()) same = same && grad_inputs[i].shape() == out_shape;
    if (kind_ == cpu::BinaryOp::mul)
      same = same && i < inputs.size() && inputs[i].defined() && inputs[i].shape() == out_shape;
  }
  if (!same) {
    backward_on_host(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
    return;
  }
  const cuda::OpScope scope(ctx, type());
  const Tensor g = scope.input(grad_outputs[0]);
  const int64_t n = g.numel();
  for (size_t i = 0; i < grad_inputs.size(); ++i) {
    Tensor& gi = grad_inputs[i];
    if (!gi.defined()) continue;
    float* out = scope.output(gi);
    if (kind_ == cpu::BinaryOp::mul) {
      const Tensor other = scope.input(inputs[1 - i]);
      cuda::binary_same_shape(cuda::BinaryOp::mul, false, g.data<float>(), other.data<float>(), out,
                              n, scope.stream());
    } else if (kind_ == cpu::BinaryOp::sub && i > 0) {
      cuda::scale(g.data<float>(), -1.0f, out, n, scope.stream());
    } else {
      scope.copy(gi, g);
    }
  }
#else
  Op::backward_cuda(ctx, inputs, outputs, grad_outputs, grad_inputs, grad_params);
#endif
}

}  // namespace nnx
