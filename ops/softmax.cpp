// Softmax and LogSoftmax: the input is viewed as (outer, dim, inner) around the reduced
// dimension and handed to the kernel.
#include "ops/softmax.h"

#include "kernels/cpu/softmax.h"
#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/softmax.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

SoftmaxOp::SoftmaxOp(const Call& call, bool log) : log_(log) {
  Args args(call, {{"dim"}});
  if (args.has("dim")) dim_ = args.get_int("dim", 0);
}

std::string SoftmaxOp::repr() const {
  return type() + "(dim=" + (dim_ ? std::to_string(*dim_) : std::string("None")) + ")";
}

int SoftmaxOp::reduced_dim(int rank) const {
  // torch.nn.functional._get_softmax_dim, the rule PyTorch applies when dim is None.
  if (!dim_) return (rank == 0 || rank == 1 || rank == 3) ? 0 : 1;
  return wrap_dim(*dim_, rank);
}

std::vector<TensorSpec> SoftmaxOp::infer_shapes(std::span<const TensorSpec> inputs,
                                                int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported, type(),
            ": expected a float32 input, found ", dtype_name(inputs[0].dtype));
  reduced_dim(inputs[0].shape.size());  // throws when dim is out of range
  return {inputs[0]};
}

int64_t SoftmaxOp::flops(std::span<const TensorSpec> inputs,
                         std::span<const TensorSpec> outputs) const {
  // max, subtract-exp, sum, scale: about four operations per element.
  return inputs.empty() ? 0 : 4 * inputs[0].shape.numel();
}

namespace {

struct Rows {
  int64_t outer = 1, dim = 1, inner = 1;
};

// The (outer, dim, inner) view around the reduced dimension; a 0-d input is one row of one.
Rows rows_of(const SoftmaxOp& op, const Shape& shape) {
  Rows r;
  if (shape.size() == 0) return r;
  const int d = op.reduced_dim(shape.size());
  for (int i = 0; i < d; ++i) r.outer *= shape[i];
  r.dim = shape[d];
  for (int i = d + 1; i < shape.size(); ++i) r.inner *= shape[i];
  return r;
}

}  // namespace

void SoftmaxOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
  Tensor x = inputs[0].contiguous();
  const Rows r = rows_of(*this, x.shape());
  cpu::softmax(x.data<float>(), outputs[0].data<float>(), r.outer, r.dim, r.inner, log_, ctx.pool);
}

void SoftmaxOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                             std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs,
                             std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  if (!grad_inputs[0].defined()) return;
  Tensor y = outputs[0].contiguous(), g = grad_outputs[0].contiguous();
  const Rows r = rows_of(*this, y.shape());
  cpu::softmax_backward(y.data<float>(), g.data<float>(), grad_inputs[0].data<float>(), r.outer,
                        r.dim, r.inner, log_, ctx.pool);
}

std::shared_ptr<Op> make_softmax(const Call& call) {
  return std::make_shared<SoftmaxOp>(call, false);
}

std::shared_ptr<Op> make_log_softmax(const Call& call) {
  return std::make_shared<SoftmaxOp>(call, true);
}

void SoftmaxOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                             std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, type());
  const Tensor x = scope.input(inputs[0]);
  const Rows r = rows_of(*this, x.shape());
  cuda::softmax(x.data<float>(), scope.output(outputs[0]), r.outer, r.dim, r.inner, log_,
                scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
