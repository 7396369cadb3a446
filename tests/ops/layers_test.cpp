// The layer ops beyond numerical parity (which op_parity_test covers): argument errors and their
// messages, PyTorch's reprs (the expected strings are torch 1.13's printed reprs of the same
// modules), parameters as reset_parameters() leaves them, and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "importer/call_parser.h"
#include "nnx/error.h"
#include "nnx/registry.h"

namespace nnx {
namespace {

std::shared_ptr<Op> make(const std::string& text) {
  return make_op(parse_call(text));
}

// Runs `text` through the registry and returns the error it throws (kind and message).
Error error_of(const std::string& text) {
  try {
    make(text);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << text << " was accepted";
  return Error(ErrorKind::usage, "");
}

void expect_error(const std::string& text, ErrorKind kind, const std::string& fragment) {
  Error e = error_of(text);
  EXPECT_EQ(e.kind(), kind) << text << ": " << e.message();
  EXPECT_NE(e.message().find(fragment), std::string::npos)
      << text << ": message \"" << e.message() << "\" lacks \"" << fragment << "\"";
}

TEST(Layers, ArgumentErrors) {
  expect_error("Conv2d(3, 8, 3, foo=1)", ErrorKind::format, "foo");
  expect_error("Conv2d(3, 8)", ErrorKind::format, "kernel_size");
  expect_error("Conv2d(8, 8, 3, stride=2, padding='same')", ErrorKind::format,
               "padding='same' is not supported for strided convolutions");
  expect_error("Conv2d(8, 8, 3, stride=(1, 2), padding=same)", ErrorKind::format,
               "padding='same' is not supported for strided convolutions");
  expect_error("Conv2d(6, 8, 3, groups=4)", ErrorKind::format,
               "in_channels must be divisible by groups");
  expect_error("Conv2d(8, 6, 3, groups=4)", ErrorKind::format,
               "out_channels must be divisible by groups");
  expect_error("Conv2d(8, 8, 3, groups=0)", ErrorKind::format, "groups must be a positive integer");
  expect_error("Conv2d(3, 8, 3, padding='full')", ErrorKind::format, "Invalid padding string");
  expect_error("Conv2d(3, 8, 3, padding_mode=mirror)", ErrorKind::format,
               "padding_mode must be one of");
  expect_error("Conv2d(3, 8, (3, 3, 3))", ErrorKind::format, "kernel_size");
  expect_error("Conv2d(3, 8, 3, stride=0)", ErrorKind::format, "stride must be at least 1");
  expect_error("Conv2d(3, 8, 3, dtype=torch.float16)", ErrorKind::unsupported, "dtype");
  expect_error("Conv2d(3, 8, 3, device='cuda')", ErrorKind::unsupported, "device");
  expect_error("Linear(10)", ErrorKind::format, "out_features");
  expect_error("BatchNorm2d(8, affine=True, eps=1e-5, bogus=2)", ErrorKind::format, "bogus");
  expect_error("MaxPool2d(2, return_indices=True)", ErrorKind::unsupported, "return_indices");
  expect_error("MaxPool2d(3, padding=2)", ErrorKind::format,
               "pad should be smaller than or equal to half of kernel size");
  expect_error("AvgPool2d(2, divisor_override=0)", ErrorKind::format, "divisor_override");
  expect_error("AdaptiveAvgPool2d((1, 2, 3))", ErrorKind::format, "output_size");
  expect_error("Upsample()", ErrorKind::format, "either size or scale_factor should be defined");
  expect_error("Upsample(size=4, scale_factor=2)", ErrorKind::format,
               "only one of size or scale_factor should be defined");
  expect_error("Upsample(scale_factor=2, align_corners=True)", ErrorKind::format,
               "align_corners option can only be set with the interpolating modes");
  expect_error("Upsample(size=4, recompute_scale_factor=True)", ErrorKind::format,
               "recompute_scale_factor is not meaningful with an explicit size");
  expect_error("Upsample(scale_factor=2, mode=trilinear)", ErrorKind::unsupported, "trilinear");
  expect_error("Upsample(scale_factor=2, mode=lanczos)", ErrorKind::format, "lanczos");
  expect_error("UpsamplingNearest2d(scale_factor=2, mode=bilinear)", ErrorKind::format,
               "mode=nearest");
}

TEST(Layers, ReprsMatchPyTorch) {
  // {constructor string, repr(torch module built with the same arguments)}
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Conv2d(3,64,3,padding=1)",
       "Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"},
      {"Conv2d(8, 8, 3, padding='same', bias=False)",
       "Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=same, bias=False)"},
      {"Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=2, groups=2, "
       "padding_mode='reflect')",
       "Conv2d(4, 6, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 2), "
       "groups=2, padding_mode=reflect)"},
      {"Conv2d(3, 4, 3, padding='valid')",
       "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=valid)"},
      {"Conv2d(3, 4, 1, padding=0, dilation=1, groups=1, bias=True, padding_mode='zeros')",
       "Conv2d(3, 4, kernel_size=(1, 1), stride=(1, 1))"},
      {"BatchNorm2d(64)",
       "BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"},
      {"BatchNorm2d(8, eps=0.001, momentum=None, affine=False)",
       "BatchNorm2d(8, eps=0.001, momentum=None, affine=False, track_running_stats=True)"},
      {"BatchNorm2d(8, momentum=1)",
       "BatchNorm2d(8, eps=1e-05, momentum=1, affine=True, track_running_stats=True)"},
      {"MaxPool2d(kernel_size=2,stride=2)",
       "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"},
      {"MaxPool2d(3, 1, 1)",
       "MaxPool2d(kernel_size=3, stride=1, padding=1, dilation=1, ceil_mode=False)"},
      {"MaxPool2d((2, 3), stride=(1, 2), ceil_mode=True)",
       "MaxPool2d(kernel_size=(2, 3), stride=(1, 2), padding=0, dilation=1, ceil_mode=True)"},
      // PyTorch's repr omits what follows padding; written files keep it where it is not the
      // default, or they would compute something else.
      {"AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)",
       "AvgPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)"},
      {"AvgPool2d(2, divisor_override=3)",
       "AvgPool2d(kernel_size=2, stride=2, padding=0, divisor_override=3)"},
      {"AvgPool2d(2)", "AvgPool2d(kernel_size=2, stride=2, padding=0)"},
      {"AdaptiveAvgPool2d((1, 1))", "AdaptiveAvgPool2d(output_size=(1, 1))"},
      {"AdaptiveAvgPool2d((None, 7))", "AdaptiveAvgPool2d(output_size=(None, 7))"},
      {"Linear(512, 10)", "Linear(in_features=512, out_features=10, bias=True)"},
      {"Linear(in_features=10, out_features=5, bias=False)",
       "Linear(in_features=10, out_features=5, bias=False)"},
      {"Upsample(scale_factor=2)", "Upsample(scale_factor=2.0, mode=nearest)"},
      {"Upsample(size=(4, 5), mode='bilinear', align_corners=True)",
       "Upsample(size=(4, 5), mode=bilinear, align_corners=True)"},
      {"Upsample(scale_factor=1.5, mode='bilinear', align_corners=False, "
       "recompute_scale_factor=True)",
       "Upsample(scale_factor=1.5, mode=bilinear, recompute_scale_factor=True)"},
      {"Upsample(scale_factor=(2, 3))", "Upsample(scale_factor=(2.0, 3.0), mode=nearest)"},
      {"Upsample(scale_factor=0.5, mode='bicubic')", "Upsample(scale_factor=0.5, mode=bicubic)"},
      {"UpsamplingNearest2d(scale_factor=2)",
       "UpsamplingNearest2d(scale_factor=2.0, mode=nearest)"},
      {"UpsamplingBilinear2d(size=(8, 8))", "UpsamplingBilinear2d(size=(8, 8), mode=bilinear)"},
  };
  for (const auto& [text, expected] : cases) {
    SCOPED_TRACE(text);
    EXPECT_EQ(make(text)->repr(), expected);
    EXPECT_EQ(make(expected)->repr(), expected);  // a repr reads back as itself
  }
}

TEST(Layers, PythonModules) {
  EXPECT_EQ(make("Conv2d(3, 4, 3)")->python_module(), "torch.nn.modules.conv");
  EXPECT_EQ(make("Linear(3, 4)")->python_module(), "torch.nn.modules.linear");
  EXPECT_EQ(make("BatchNorm2d(3)")->python_module(), "torch.nn.modules.batchnorm");
  EXPECT_EQ(make("MaxPool2d(2)")->python_module(), "torch.nn.modules.pooling");
  EXPECT_EQ(make("AvgPool2d(2)")->python_module(), "torch.nn.modules.pooling");
  EXPECT_EQ(make("AdaptiveAvgPool2d(1)")->python_module(), "torch.nn.modules.pooling");
  EXPECT_EQ(make("Upsample(scale_factor=2)")->python_module(), "torch.nn.modules.upsampling");
  EXPECT_EQ(make("torch.nn.Conv2d(3, 4, 3)")->type(), "Conv2d");
  EXPECT_EQ(make("nn_executor.models.Upsample(scale_factor=1.0, mode=nearest)")->type(),
            "Upsample");
}

TEST(Layers, ParametersFollowResetParameters) {
  auto conv = make("Conv2d(4, 6, 3, groups=2)");
  ASSERT_EQ(conv->params().size(), 2u);
  EXPECT_EQ(conv->params()[0].name, "weight");
  EXPECT_EQ(conv->params()[0].value.shape(), (Shape{6, 2, 3, 3}));
  EXPECT_EQ(conv->params()[1].name, "bias");
  RandomEngine rng(7);
  conv->init_params(rng);
  const double bound = 1.0 / std::sqrt(2.0 * 9.0);  // 1/sqrt(fan_in)
  for (const Param& p : conv->params()) {
    double largest = 0;
    for (int64_t i = 0; i < p.value.numel(); ++i)
      largest = std::max(largest, std::abs(p.value.at_flat(i)));
    EXPECT_LE(largest, bound) << p.name;
    EXPECT_GT(largest, 0.5 * bound) << p.name;
  }
  EXPECT_EQ(make("Conv2d(4, 6, 3, bias=False)")->params().size(), 1u);
  EXPECT_EQ(make("Linear(5, 3)")->params()[0].value.shape(), (Shape{3, 5}));

  auto bn = make("BatchNorm2d(3)");
  std::vector<std::string> names;
  for (const Param& p : bn->params()) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias", "running_mean", "running_var",
                                             "num_batches_tracked"}));
  EXPECT_EQ(bn->find_param("weight")->value.at_flat(2), 1.0);
  EXPECT_EQ(bn->find_param("running_var")->value.at_flat(0), 1.0);
  EXPECT_FALSE(bn->find_param("running_mean")->trainable);
  EXPECT_EQ(bn->find_param("num_batches_tracked")->value.dtype(), DType::i64);
  EXPECT_EQ(bn->find_param("num_batches_tracked")->value.dim(), 0);
  EXPECT_EQ(make("BatchNorm2d(3, affine=False)")->params().size(), 3u);
  EXPECT_TRUE(make("BatchNorm2d(3, affine=False, track_running_stats=False)")->params().empty());
}

template <class Fn>
void expect_shape_error(Fn&& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one saying \"" << fragment << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::shape) << e.message();
    EXPECT_NE(e.message().find(fragment), std::string::npos) << e.message();
  }
}

TEST(Layers, ShapeChecks) {
  auto conv = make("Conv2d(64, 8, 3)");
  std::vector<TensorSpec> wrong_channels = {{Shape{1, 128, 8, 8}}};
  expect_shape_error([&] { conv->infer_shapes(wrong_channels, 1); },
                     "expected 64 input channels, found 128");
  std::vector<int64_t> channels = {128};
  expect_shape_error([&] { conv->infer_channels(channels, 1); },
                     "expected 64 input channels, found 128");
  std::vector<TensorSpec> too_small = {{Shape{1, 64, 2, 2}}};
  expect_shape_error([&] { conv->infer_shapes(too_small, 1); }, "smaller than the dilated kernel");
  std::vector<TensorSpec> rank3 = {{Shape{64, 8, 8}}};
  EXPECT_THROW(conv->infer_shapes(rank3, 1), Error);

  auto reflect = make("Conv2d(1, 1, 5, padding=2, padding_mode=reflect)");
  std::vector<TensorSpec> narrow = {{Shape{1, 1, 8, 2}}};
  expect_shape_error([&] { reflect->infer_shapes(narrow, 1); }, "reflect padding");

  std::vector<TensorSpec> same_in = {{Shape{2, 8, 7, 6}}};
  auto same = make("Conv2d(8, 4, 4, padding=same)");
  EXPECT_EQ(same->infer_shapes(same_in, 1)[0].shape, (Shape{2, 4, 7, 6}));
  EXPECT_EQ(same->flops(same_in, same->infer_shapes(same_in, 1)), 2 * 2 * 4 * 7 * 6 * 8 * 16);

  auto linear = make("Linear(10, 5)");
  std::vector<TensorSpec> features = {{Shape{2, 3, 12}}};
  expect_shape_error([&] { linear->infer_shapes(features, 1); }, "expected 10 input features");
  std::vector<TensorSpec> rank3_features = {{Shape{2, 3, 10}}};
  EXPECT_EQ(linear->infer_shapes(rank3_features, 1)[0].shape, (Shape{2, 3, 5}));

  auto bn = make("BatchNorm2d(5)");
  std::vector<TensorSpec> bn_wrong = {{Shape{1, 4, 3, 3}}};
  expect_shape_error([&] { bn->infer_shapes(bn_wrong, 1); }, "expected 5 input channels, found 4");

  auto pool = make("MaxPool2d(3)");
  std::vector<TensorSpec> tiny = {{Shape{1, 2, 2, 2}}};
  expect_shape_error([&] { pool->infer_shapes(tiny, 1); }, "too small");
  std::vector<TensorSpec> ceil_in = {{Shape{1, 2, 5, 5}}};
  EXPECT_EQ(make("MaxPool2d(2, 2, padding=1, ceil_mode=True)")->infer_shapes(ceil_in, 1)[0].shape,
            (Shape{1, 2, 3, 3}));

  auto up = make("Upsample(scale_factor=0.1)");
  expect_shape_error([&] { up->infer_shapes(ceil_in, 1); }, "greater than 0");
  EXPECT_THROW(make("Conv2d(3, 4, 3)")->check_arity(2, 1), Error);
}

}  // namespace
}  // namespace nnx
