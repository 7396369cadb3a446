// nnx.Affine (see affine.h); the body is kernels/cpu/layernorm.h's affine().
#include "ops/affine.h"

#include "kernels/cpu/layernorm.h"
#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/normalization.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

AffineOp::AffineOp(const Call& call) {
  Args args(call, {{"scale"}, {"shift"}});
  scale_ = args.get_double("scale", 1.0);
  shift_ = args.get_double("shift", 0.0);
}

std::string AffineOp::repr() const {
  return "Affine(scale=" + op_util::float_repr(scale_) + ", shift=" + op_util::float_repr(shift_) +
         ")";
}

std::vector<TensorSpec> AffineOp::infer_shapes(std::span<const TensorSpec> inputs,
                                               int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported,
            "Affine: expected a float32 input, found ", dtype_name(inputs[0].dtype));
  return {inputs[0]};
}

int64_t AffineOp::flops(std::span<const TensorSpec> inputs, std::span<const TensorSpec>) const {
  return inputs.empty() ? 0 : 2 * inputs[0].shape.numel();
}

void AffineOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<Tensor> outputs) const {
  const Tensor x = inputs[0].contiguous();
  cpu::affine(x.data<float>(), x.numel(), float(scale_), float(shift_), outputs[0].data<float>(),
              ctx.pool);
}

void AffineOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                            std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                            std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  if (!grad_inputs[0].defined()) return;
  const Tensor g = grad_outputs[0].contiguous();
  cpu::affine(g.data<float>(), g.numel(), float(scale_), 0.0f, grad_inputs[0].data<float>(),
              ctx.pool);
}

std::shared_ptr<Op> make_affine(const Call& call) {
  return std::make_shared<AffineOp>(call);
}

void AffineOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Affine");
  const Tensor x = scope.input(inputs[0]);
  cuda::affine(x.data<float>(), x.numel(), float(scale_), float(shift_), scope.output(outputs[0]),
               scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
