// The registry lines of the built-in ops: canonical class name -> factory. Adding an op adds
// its line here (and its declaration above the table).
#include "ops/builtin_ops.h"

namespace nnx {

// ---- layers: convolution, linear, normalisation, pooling, resampling
std::shared_ptr<Op> make_conv2d(const Call& call);
std::shared_ptr<Op> make_linear(const Call& call);
std::shared_ptr<Op> make_batchnorm2d(const Call& call);
std::shared_ptr<Op> make_maxpool2d(const Call& call);
std::shared_ptr<Op> make_avgpool2d(const Call& call);
std::shared_ptr<Op> make_adaptive_avgpool2d(const Call& call);
std::shared_ptr<Op> make_upsample(const Call& call);
std::shared_ptr<Op> make_upsampling_nearest2d(const Call& call);
std::shared_ptr<Op> make_upsampling_bilinear2d(const Call& call);
std::shared_ptr<Op> make_layer_norm(const Call& call);
// ---- elementwise, activations, structure, constants, pruners
std::shared_ptr<Op> make_add(const Call& call);
std::shared_ptr<Op> make_sub(const Call& call);
std::shared_ptr<Op> make_mul(const Call& call);
std::shared_ptr<Op> make_relu(const Call& call);
std::shared_ptr<Op> make_relu6(const Call& call);
std::shared_ptr<Op> make_leaky_relu(const Call& call);
std::shared_ptr<Op> make_hardtanh(const Call& call);
std::shared_ptr<Op> make_sigmoid(const Call& call);
std::shared_ptr<Op> make_tanh(const Call& call);
std::shared_ptr<Op> make_silu(const Call& call);
std::shared_ptr<Op> make_mish(const Call& call);
std::shared_ptr<Op> make_hardswish(const Call& call);
std::shared_ptr<Op> make_hardsigmoid(const Call& call);
std::shared_ptr<Op> make_elu(const Call& call);
std::shared_ptr<Op> make_gelu(const Call& call);
std::shared_ptr<Op> make_softplus(const Call& call);
std::shared_ptr<Op> make_softmax(const Call& call);
std::shared_ptr<Op> make_log_softmax(const Call& call);
std::shared_ptr<Op> make_cat(const Call& call);
std::shared_ptr<Op> make_identity(const Call& call);
std::shared_ptr<Op> make_flatten(const Call& call);
std::shared_ptr<Op> make_unflatten(const Call& call);
std::shared_ptr<Op> make_dropout(const Call& call);
std::shared_ptr<Op> make_dropout1d(const Call& call);
std::shared_ptr<Op> make_dropout2d(const Call& call);
std::shared_ptr<Op> make_dropout3d(const Call& call);
std::shared_ptr<Op> make_constant(const Call& call);
std::shared_ptr<Op> make_variable(const Call& call);
std::shared_ptr<Op> make_pruner(const Call& call);
std::shared_ptr<Op> make_all_or_nothing_pruner(const Call& call);
// ---- this project's own ops (files write them as nnx.Name; docs/FORMAT_EXTENSIONS.md)
std::shared_ptr<Op> make_reshape(const Call& call);
std::shared_ptr<Op> make_permute(const Call& call);
std::shared_ptr<Op> make_split(const Call& call);
std::shared_ptr<Op> make_mean(const Call& call);
std::shared_ptr<Op> make_affine(const Call& call);
std::shared_ptr<Op> make_stochastic_depth(const Call& call);

const std::vector<BuiltinOp>& builtin_ops() {
  static const std::vector<BuiltinOp> table = {
      // ---- layers
      {"Conv2d", make_conv2d},
      {"Linear", make_linear},
      {"BatchNorm2d", make_batchnorm2d},
      {"MaxPool2d", make_maxpool2d},
      {"AvgPool2d", make_avgpool2d},
      {"AdaptiveAvgPool2d", make_adaptive_avgpool2d},
      {"Upsample", make_upsample},
      {"UpsamplingNearest2d", make_upsampling_nearest2d},
      {"UpsamplingBilinear2d", make_upsampling_bilinear2d},
      {"LayerNorm", make_layer_norm},
      // ---- elementwise and the rest
      {"Add", make_add},
      {"Sub", make_sub},
      {"Mul", make_mul},
      {"ReLU", make_relu},
      {"ReLU6", make_relu6},
      {"LeakyReLU", make_leaky_relu},
      {"Hardtanh", make_hardtanh},
      {"Sigmoid", make_sigmoid},
      {"Tanh", make_tanh},
      {"SiLU", make_silu},
      {"Mish", make_mish},
      {"Hardswish", make_hardswish},
      {"Hardsigmoid", make_hardsigmoid},
      {"ELU", make_elu},
      {"GELU", make_gelu},
      {"Softplus", make_softplus},
      {"Softmax", make_softmax},
      {"LogSoftmax", make_log_softmax},
      {"Cat", make_cat},
      {"Identity", make_identity},
      {"Flatten", make_flatten},
      {"Unflatten", make_unflatten},
      {"Dropout", make_dropout},
      {"Dropout1d", make_dropout1d},
      {"Dropout2d", make_dropout2d},
      {"Dropout3d", make_dropout3d},
      {"Constant", make_constant},
      {"Variable", make_variable},
      {"Pruner", make_pruner},
      {"AllOrNothingPruner", make_all_or_nothing_pruner},
      // ---- nnx.
      {"Reshape", make_reshape},
      {"Permute", make_permute},
      {"Split", make_split},
      {"Mean", make_mean},
      {"Affine", make_affine},
      {"StochasticDepth", make_stochastic_depth},
  };
  return table;
}

}  // namespace nnx
