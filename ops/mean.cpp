// nnx.Mean (see mean.h): the reduced dims are merged into runs of adjacent dims, and each run is
// averaged as an (outer, run, inner) block by kernels/cpu/reduce.h, innermost run first.
#include "ops/mean.h"

#include <utility>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/reduce.h"
#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/reduce.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

MeanOp::MeanOp(const Call& call) {
  Args args(call, {{"dim", true}, {"keepdim"}});
  const Value* dim = args.get("dim");
  if (dim == nullptr || !(dim->is_int() || dim->is_sequence()))
    args.bad_type("dim", "an int or a tuple of ints");
  dims_ = args.get_ints("dim", 0, {});
  keepdim_ = args.get_bool("keepdim", false);
  NNX_CHECK(!dims_.empty(), ErrorKind::format, "Mean: dim must list at least one dim");
}

std::string MeanOp::repr() const {
  return "Mean(dim=" + op_util::tuple_repr(dims_) + ", keepdim=" + (keepdim_ ? "True" : "False") +
         ")";
}

std::vector<int64_t> MeanOp::infer_channels(std::span<const int64_t> in_channels,
                                            int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  bool reduces_0 = false, reduces_1 = false;
  for (int64_t d : dims_) {
    if (d < 0) return {kUnknownChannels};  // where it lands depends on the rank
    reduces_0 |= d == 0;
    reduces_1 |= d == 1;
  }
  if (reduces_1) return {keepdim_ ? 1 : kUnknownChannels};
  if (reduces_0 && !keepdim_) return {kUnknownChannels};
  return {in_channels[0]};
}

std::vector<bool> MeanOp::reduced_dims(const Shape& in) const {
  std::vector<bool> reduced(size_t(in.size()), false);
  for (int64_t d : dims_) {
    NNX_CHECK(d >= -in.size() && d < in.size(), ErrorKind::shape,
              "Mean(dim=", op_util::tuple_repr(dims_), "): dim ", d,
              " is out of range for an input of shape ", in.str());
    const int w = wrap_dim(d, in.size());
    NNX_CHECK(!reduced[size_t(w)], ErrorKind::shape, "Mean(dim=", op_util::tuple_repr(dims_),
              "): dim ", w, " appears more than once");
    reduced[size_t(w)] = true;
  }
  return reduced;
}

std::vector<TensorSpec> MeanOp::infer_shapes(std::span<const TensorSpec> inputs,
                                             int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  const Shape& in = inputs[0].shape;
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported,
            "Mean: expected a float32 input, found ", dtype_name(inputs[0].dtype));
  std::vector<bool> reduced = reduced_dims(in);
  Shape out;
  for (int k = 0; k < in.size(); ++k) {
    if (!reduced[size_t(k)])
      out.push_back(in[k]);
    else if (keepdim_)
      out.push_back(1);
  }
  return {{out, DType::f32}};
}

int64_t MeanOp::flops(std::span<const TensorSpec> inputs, std::span<const TensorSpec>) const {
  return inputs.empty() ? 0 : inputs[0].shape.numel();
}

void MeanOp::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                         std::span<Tensor> outputs) const {
  Tensor x = inputs[0].contiguous();
  Shape shape = x.shape();
  std::vector<bool> reduced = reduced_dims(shape);
  // Runs of adjacent reduced dims as [begin, end), innermost first.
  std::vector<std::pair<int, int>> runs;
  for (int end = shape.size(); end > 0;) {
    if (!reduced[size_t(end - 1)]) {
      --end;
      continue;
    }
    int begin = end - 1;
    while (begin > 0 && reduced[size_t(begin - 1)]) --begin;
    runs.emplace_back(begin, end);
    end = begin;
  }
  // Each pass leaves its run as size-1 dims; the last one writes the output.
  for (size_t r = 0; r < runs.size(); ++r) {
    auto [begin, end] = runs[r];
    int64_t outer = 1, run = 1, inner = 1;
    for (int k = 0; k < begin; ++k) outer *= shape[k];
    for (int k = begin; k < end; ++k) run *= shape[k];
    for (int k = end; k < shape.size(); ++k) inner *= shape[k];
    Shape next = shape;
    for (int k = begin; k < end; ++k) next[k] = 1;
    Tensor y = r + 1 == runs.size() ? outputs[0] : Tensor::empty(next, DType::f32);
    cpu::mean_middle(x.data<float>(), outer, run, inner, y.data<float>(), ctx.pool);
    x = y;
    shape = next;
  }
}

void MeanOp::backward_cpu(const ExecContext& ctx, std::span<const Tensor>, std::span<const Tensor>,
                          std::span<const Tensor> grad_outputs, std::span<Tensor> grad_inputs,
                          std::span<Tensor>) const {
  Tensor& gin = grad_inputs[0];
  if (!gin.defined() || gin.numel() == 0) return;
  const Shape& in = gin.shape();
  std::vector<bool> reduced = reduced_dims(in);
  Shape kept = in;  // the output's shape with the reduced dims kept as 1
  int64_t count = 1;
  for (int k = 0; k < in.size(); ++k) {
    if (!reduced[size_t(k)]) continue;
    count *= in[k];
    kept[k] = 1;
  }
  const Tensor g = grad_outputs[0].contiguous();
  const float scale = 1.0f / float(count);
  cpu::binary_broadcast(cpu::BinaryOp::mul, g.data<float>(), kept, &scale, Shape{},
                        gin.data<float>(), in, ctx.pool);
}

std::shared_ptr<Op> make_mean(const Call& call) {
  return std::make_shared<MeanOp>(call);
}

void MeanOp::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                          std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, "Mean");
  Tensor x = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  Shape shape = x.shape();
  std::vector<bool> reduced = reduced_dims(shape);
  // As on the CPU: runs of adjacent reduced dims, innermost first, each pass leaving its run as
  // size-1 dims; the last pass writes the output.
  std::vector<std::pair<int, int>> runs;
  for (int end = shape.size(); end > 0;) {
    if (!reduced[size_t(end - 1)]) {
      --end;
      continue;
    }
    int begin = end - 1;
    while (begin > 0 && reduced[size_t(begin - 1)]) --begin;
    runs.emplace_back(begin, end);
    end = begin;
  }
  if (runs.empty()) {  // nothing reduced: a copy
    scope.copy(outputs[0], x.view(outputs[0].shape()));
    return;
  }
  for (size_t r = 0; r < runs.size(); ++r) {
    auto [begin, end] = runs[r];
    int64_t outer = 1, run = 1, inner = 1;
    for (int k = 0; k < begin; ++k) outer *= shape[k];
    for (int k = begin; k < end; ++k) run *= shape[k];
    for (int k = end; k < shape.size(); ++k) inner *= shape[k];
    Shape next = shape;
    for (int k = begin; k < end; ++k) next[k] = 1;
    const bool last = r + 1 == runs.size();
    Tensor y = last ? Tensor() : scope.empty(next);
    cuda::mean_middle(x.data<float>(), outer, run, inner, last ? output : y.data<float>(),
                      scope.stream());
    if (!last) x = y;
    shape = next;
  }
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
