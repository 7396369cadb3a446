// torch.nn.Upsample and friends (see upsample.h). PyTorch's module defers every check to
// F.interpolate at forward time; here the argument checks run when the op is built, with
// F.interpolate's wording, and the size checks at shape inference.
#include "ops/upsample.h"

#include <cmath>

#include "kernels/cpu/pooling.h"
#include "nnx/error.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cuda/pooling.h"
#include "kernels/cuda/upsample.h"
#include "runtime/cuda/op_support.h"
#endif

namespace nnx {

namespace {

Args bind_args(const Call& call, bool fixed_mode) {
  // PyTorch prints the subclasses with their fixed mode ("UpsamplingNearest2d(scale_factor=2.0,
  // mode=nearest)"), so a description holds that keyword although their __init__ lacks it.
  if (fixed_mode) return Args(call, {{"size"}, {"scale_factor"}, {"mode"}});
  return Args(
      call, {{"size"}, {"scale_factor"}, {"mode"}, {"align_corners"}, {"recompute_scale_factor"}});
}

}  // namespace

Upsample::Upsample(const Call& call, std::string type) : type_(std::move(type)) {
  const bool fixed_mode = type_ != "Upsample";
  const Args args = bind_args(call, fixed_mode);

  const Value* size = args.get("size");
  if (size != nullptr && !size->is_none()) {
    auto entry = [&](const Value& v) {
      if (!v.is_int()) args.bad_type("size", "an int or a pair of ints");
      NNX_CHECK(v.as_int() >= 0, ErrorKind::format, type_, ": size must not be negative, got ",
                size->repr());
      return v.as_int();
    };
    if (size->is_sequence()) {
      NNX_CHECK(size->items().size() == 2, ErrorKind::format, type_,
                ": size must be an int or a pair (height, width) for a 4-D input, got ",
                size->repr());
      size_ = std::array<int64_t, 2>{entry(size->items()[0]), entry(size->items()[1])};
    } else {
      size_ = std::array<int64_t, 2>{entry(*size), entry(*size)};
    }
  }

  // PyTorch keeps a tuple as floats and turns a number into a float, or into None when it is 0.
  const Value* scale = args.get("scale_factor");
  std::string scale_repr;
  if (scale != nullptr && !scale->is_none()) {
    auto entry = [&](const Value& v) {
      if (!v.is_number()) args.bad_type("scale_factor", "a number or a pair of numbers");
      return v.as_double();
    };
    if (scale->is_sequence()) {
      NNX_CHECK(scale->items().size() == 2, ErrorKind::format, type_,
                ": scale_factor must be a number or a pair (height, width) for a 4-D input, got ",
                scale->repr());
      scale_factor_ = std::array<double, 2>{entry(scale->items()[0]), entry(scale->items()[1])};
      scale_repr = "(";
      scale_repr += op_util::float_repr((*scale_factor_)[0]);
      scale_repr += ", ";
      scale_repr += op_util::float_repr((*scale_factor_)[1]);
      scale_repr += ")";
    } else if (entry(*scale) != 0) {
      scale_factor_ = std::array<double, 2>{scale->as_double(), scale->as_double()};
      scale_repr = op_util::float_repr(scale->as_double());
    }
  }

  const std::string fixed = type_ == "UpsamplingNearest2d"    ? "nearest"
                            : type_ == "UpsamplingBilinear2d" ? "bilinear"
                                                              : "";
  const std::string mode = args.get_text("mode", fixed_mode ? fixed : "nearest");
  NNX_CHECK(!fixed_mode || mode == fixed, ErrorKind::format, type_, " always uses mode=", fixed,
            ", got mode=", mode);
  if (mode == "nearest")
    mode_ = Mode::nearest;
  else if (mode == "nearest-exact")
    mode_ = Mode::nearest_exact;
  else if (mode == "bilinear")
    mode_ = Mode::bilinear;
  else if (mode == "bicubic")
    mode_ = Mode::bicubic;
  else if (mode == "area")
    mode_ = Mode::area;
  else if (mode == "linear" || mode == "trilinear")
    fail(ErrorKind::unsupported, type_, ": mode=", mode, " resamples ",
         mode == "linear" ? "3-D (N, C, L)" : "5-D (N, C, D, H, W)",
         " inputs; for 4-D (N, C, H, W) inputs use nearest, nearest-exact, bilinear, bicubic or "
         "area");
  else
    fail(ErrorKind::format, type_, ": unknown mode '", mode,
         "', expected one of nearest, nearest-exact, bilinear, bicubic, area");

  const bool interpolating = mode_ == Mode::bilinear || mode_ == Mode::bicubic;
  if (fixed_mode) {
    align_corners_ = type_ == "UpsamplingBilinear2d";
  } else if (args.has("align_corners")) {
    NNX_CHECK(interpolating, ErrorKind::format,
              "align_corners option can only be set with the interpolating modes: linear | "
              "bilinear | bicubic | trilinear (mode=",
              mode, ")");
    align_corners_ = args.get_bool("align_corners", false);
  }
  if (!fixed_mode) recompute_scale_factor_ = args.get_bool("recompute_scale_factor", false);

  NNX_CHECK(!(size_ && scale_factor_), ErrorKind::format, type_,
            ": only one of size or scale_factor should be defined");
  NNX_CHECK(size_ || scale_factor_, ErrorKind::format, type_,
            ": either size or scale_factor should be defined");
  NNX_CHECK(!(recompute_scale_factor_ && size_), ErrorKind::format, type_,
            ": recompute_scale_factor is not meaningful with an explicit size.");

  repr_ = type_ + "(" +
          (scale_factor_ ? "scale_factor=" + scale_repr
                         : "size=" + (size != nullptr ? size->repr() : std::string("None"))) +
          ", mode=" + mode;
  // PyTorch's repr stops there; what changes results follows when not the default, so that a
  // written file loses nothing (the fixed-mode classes imply theirs).
  if (!fixed_mode && align_corners_) repr_ += ", align_corners=True";
  if (recompute_scale_factor_) repr_ += ", recompute_scale_factor=True";
  repr_ += ")";
}

void Upsample::check_arity(int num_inputs, int num_outputs) const {
  op_util::expect_inputs(num_inputs, 1, 1);
  op_util::expect_outputs(num_outputs, 1, 1);
}

std::vector<int64_t> Upsample::infer_channels(std::span<const int64_t> in_channels,
                                              int num_outputs) const {
  check_arity(int(in_channels.size()), num_outputs);
  return {in_channels[0]};
}

cpu::Resample2dShape Upsample::geometry(const Shape& input) const {
  cpu::Resample2dShape s;
  s.planes = input[0] * input[1];
  s.in_h = input[2];
  s.in_w = input[3];
  if (size_) {
    s.out_h = (*size_)[0];
    s.out_w = (*size_)[1];
  } else {
    auto scaled = [&](int64_t in, double factor) {
      const double out = std::floor(double(in) * factor);
      NNX_CHECK(std::isfinite(out) && std::abs(out) < 9.0e15, ErrorKind::shape, type_,
                ": scale_factor ", factor, " gives an output size out of range for input ",
                input.str());
      return int64_t(out);
    };
    s.out_h = scaled(s.in_h, (*scale_factor_)[0]);
    s.out_w = scaled(s.in_w, (*scale_factor_)[1]);
    // Without recomputing, PyTorch hands the scale factor down and maps coordinates by it.
    if (!recompute_scale_factor_ && mode_ != Mode::area) {
      s.scale_factor_h = (*scale_factor_)[0];
      s.scale_factor_w = (*scale_factor_)[1];
    }
  }
  NNX_CHECK(s.in_h > 0 && s.in_w > 0 && s.out_h > 0 && s.out_w > 0, ErrorKind::shape, type_,
            ": input and output sizes should be greater than 0, but got input (H: ", s.in_h,
            ", W: ", s.in_w, ") output (H: ", s.out_h, ", W: ", s.out_w, ")");
  return s;
}

std::vector<TensorSpec> Upsample::infer_shapes(std::span<const TensorSpec> inputs,
                                               int num_outputs) const {
  check_arity(int(inputs.size()), num_outputs);
  op_util::expect_rank(inputs[0], 4);
  NNX_CHECK(inputs[0].dtype == DType::f32, ErrorKind::unsupported, type_,
            " takes float32 input, found ", dtype_name(inputs[0].dtype));
  const Shape& in = inputs[0].shape;
  const cpu::Resample2dShape s = geometry(in);
  return {TensorSpec{Shape{in[0], in[1], s.out_h, s.out_w}, DType::f32}};
}

int64_t Upsample::flops(std::span<const TensorSpec> inputs,
                        std::span<const TensorSpec> outputs) const {
  if (outputs.empty()) return 0;
  const int64_t taps = mode_ == Mode::bilinear ? 4 : mode_ == Mode::bicubic ? 16 : 0;
  return 2 * outputs[0].shape.numel() * taps;
}

void Upsample::forward_cpu(const ExecContext& ctx, std::span<const Tensor> inputs,
                           std::span<Tensor> outputs) const {
  const Tensor input = inputs[0].contiguous();
  const cpu::Resample2dShape s = geometry(input.shape());
  if (mode_ == Mode::area) {
    cpu::adaptive_avg_pool2d(s.planes, s.in_h, s.in_w, s.out_h, s.out_w, input.data<float>(),
                             outputs[0].data<float>(), ctx.pool);
    return;
  }
  const cpu::ResampleMode mode = mode_ == Mode::nearest         ? cpu::ResampleMode::nearest
                                 : mode_ == Mode::nearest_exact ? cpu::ResampleMode::nearest_exact
                                 : mode_ == Mode::bilinear      ? cpu::ResampleMode::bilinear
                                                                : cpu::ResampleMode::bicubic;
  cpu::resample2d(mode, align_corners_, s, input.data<float>(), outputs[0].data<float>(), ctx.pool);
}

void Upsample::backward_cpu(const ExecContext& ctx, std::span<const Tensor>,
                            std::span<const Tensor>, std::span<const Tensor> grad_outputs,
                            std::span<Tensor> grad_inputs, std::span<Tensor>) const {
  if (grad_inputs.empty() || !grad_inputs[0].defined()) return;
  const Tensor grad_output = grad_outputs[0].contiguous();
  const cpu::Resample2dShape s = geometry(grad_inputs[0].shape());
  if (mode_ == Mode::area) {
    cpu::adaptive_avg_pool2d_backward(s.planes, s.in_h, s.in_w, s.out_h, s.out_w,
                                      grad_output.data<float>(), grad_inputs[0].data<float>(),
                                      ctx.pool);
    return;
  }
  const cpu::ResampleMode mode = mode_ == Mode::nearest         ? cpu::ResampleMode::nearest
                                 : mode_ == Mode::nearest_exact ? cpu::ResampleMode::nearest_exact
                                 : mode_ == Mode::bilinear      ? cpu::ResampleMode::bilinear
                                                                : cpu::ResampleMode::bicubic;
  cpu::resample2d_backward(mode, align_corners_, s, grad_output.data<float>(),
                           grad_inputs[0].data<float>(), ctx.pool);
}

std::shared_ptr<Op> make_upsample(const Call& call) {
  return std::make_shared<Upsample>(call, "Upsample");
}
std::shared_ptr<Op> make_upsampling_nearest2d(const Call& call) {
  return std::make_shared<Upsample>(call, "UpsamplingNearest2d");
}
std::shared_ptr<Op> make_upsampling_bilinear2d(const Call& call) {
  return std::make_shared<Upsample>(call, "UpsamplingBilinear2d");
}

void Upsample::forward_cuda(const ExecContext& ctx, std::span<const Tensor> inputs,
                            std::span<Tensor> outputs) const {
#ifdef NNX_WITH_CUDA
  const cuda::OpScope scope(ctx, type_);
  const Tensor input = scope.input(inputs[0]);
  float* output = scope.output(outputs[0]);
  const cpu::Resample2dShape s = geometry(input.shape());
  if (mode_ == Mode::area) {
    cuda::adaptive_avg_pool2d(s.planes, s.in_h, s.in_w, s.out_h, s.out_w, input.data<float>(),
                              output, scope.stream());
    return;
  }
  const cuda::ResampleMode mode = mode_ == Mode::nearest         ? cuda::ResampleMode::nearest
                                  : mode_ == Mode::nearest_exact ? cuda::ResampleMode::nearest_exact
                                  : mode_ == Mode::bilinear      ? cuda::ResampleMode::bilinear
                                                                 : cuda::ResampleMode::bicubic;
  cuda::Resample2dGeometry g;
  g.planes = s.planes;
  g.in_h = s.in_h;
  g.in_w = s.in_w;
  g.out_h = s.out_h;
  g.out_w = s.out_w;
  g.scale_factor_h = s.scale_factor_h;
  g.scale_factor_w = s.scale_factor_w;
  cuda::resample2d(mode, align_corners_, g, input.data<float>(), output, scope.stream());
#else
  Op::forward_cuda(ctx, inputs, outputs);
#endif
}

}  // namespace nnx
