// The ops torchvision networks need beyond numerical parity (op_parity_test covers that):
// this project's nnx. ops and LayerNorm (reprs as files write them, argument and shape errors,
// load-time channel rules past channels-last tensors), and whole networks written by
// python/fixture_network_ops.py, run and written back as `nnx convert` does.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "importer/call_parser.h"
#include "importer/json.h"
#include "nnx/nnx.hpp"
#include "nnx/registry.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;
using Channels = std::vector<int64_t>;
constexpr int64_t kUnknown = kUnknownChannels;

std::shared_ptr<Op> make(const std::string& text) {
  return make_op(parse_call(text));
}

template <class Fn>
void expect_error(Fn&& fn, ErrorKind kind, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one saying \"" << fragment << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.message();
    EXPECT_NE(e.message().find(fragment), std::string::npos)
        << "message \"" << e.message() << "\" lacks \"" << fragment << "\"";
  }
}

void expect_format_error(const std::string& text, const std::string& fragment) {
  expect_error([&] { make(text); }, ErrorKind::format, fragment);
}

std::vector<TensorSpec> specs(std::initializer_list<Shape> shapes) {
  std::vector<TensorSpec> out;
  for (const Shape& s : shapes) out.push_back({s, DType::f32});
  return out;
}

TEST(NetworkOps, ReprsAreWhatFilesHold) {
  // {as written, repr}: the file form is python_module() + "." + repr().
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"nnx.Reshape(shape=(0, -1))", "Reshape(shape=(0, -1))"},
      {"nnx.Reshape(shape=[0, 2, 58, 7, 7])", "Reshape(shape=(0, 2, 58, 7, 7))"},
      {"nnx.Reshape(shape=(-1,))", "Reshape(shape=(-1,))"},
      {"nnx.Permute(dims=(0, 2, 3, 1))", "Permute(dims=(0, 2, 3, 1))"},
      {"nnx.Permute(dims=[0, -1, 1, 2])", "Permute(dims=(0, -1, 1, 2))"},
      {"nnx.Split(sizes=[58, 58], dim=1)", "Split(sizes=[58, 58], dim=1)"},
      {"nnx.Split(sizes=(1, 2))", "Split(sizes=[1, 2], dim=0)"},
      {"nnx.Mean(dim=(2, 3), keepdim=False)", "Mean(dim=(2, 3), keepdim=False)"},
      {"nnx.Mean(dim=1)", "Mean(dim=(1,), keepdim=False)"},
      {"nnx.Mean(dim=[-1, -2], keepdim=True)", "Mean(dim=(-1, -2), keepdim=True)"},
      {"nnx.Affine(scale=0.5, shift=3.0)", "Affine(scale=0.5, shift=3.0)"},
      {"nnx.Affine(scale=0.16666666666666666, shift=0.0)",
       "Affine(scale=0.16666666666666666, shift=0.0)"},
      {"nnx.Affine(scale=-1.0, shift=3.0)", "Affine(scale=-1.0, shift=3.0)"},
      {"nnx.Affine(scale=1e-05, shift=1e+16)", "Affine(scale=1e-05, shift=1e+16)"},
      {"nnx.Affine(scale=2, shift=1)", "Affine(scale=2.0, shift=1.0)"},
      {"nnx.Affine()", "Affine(scale=1.0, shift=0.0)"},
      {"nnx.StochasticDepth(p=0.1, mode=row)", "StochasticDepth(p=0.1, mode=row)"},
      {"nnx.StochasticDepth(0.2, 'batch')", "StochasticDepth(p=0.2, mode=batch)"},
      {"torch.nn.modules.normalization.LayerNorm((96,), eps=1e-06, elementwise_affine=True)",
       "LayerNorm((96,), eps=1e-06, elementwise_affine=True)"},
      {"LayerNorm(96)", "LayerNorm((96,), eps=1e-05, elementwise_affine=True)"},
      {"LayerNorm([4, 5], 1e-3, False)", "LayerNorm((4, 5), eps=0.001, elementwise_affine=False)"},
      {"LayerNorm(8, eps=1)", "LayerNorm((8,), eps=1, elementwise_affine=True)"},
  };
  for (const auto& [text, repr] : cases) {
    auto op = make(text);
    EXPECT_EQ(op->repr(), repr) << text;
    // Reading the repr back gives the same op.
    EXPECT_EQ(make(op->python_module() + "." + op->repr())->repr(), repr) << text;
  }
  for (const char* text :
       {"nnx.Reshape(shape=(0, -1))", "nnx.Permute(dims=(1, 0))", "nnx.Split(sizes=[1], dim=0)",
        "nnx.Mean(dim=1)", "nnx.Affine()", "nnx.StochasticDepth(p=0.1, mode=row)"})
    EXPECT_EQ(make(text)->python_module(), "nnx") << text;
  EXPECT_EQ(make("LayerNorm(3)")->python_module(), "torch.nn.modules.normalization");
}

TEST(NetworkOps, ArgumentErrors) {
  expect_format_error("nnx.Reshape(shape=(0, -1, -1))", "only one dimension can be inferred");
  expect_format_error("nnx.Reshape(shape=(0, -2))", "invalid size -2");
  expect_format_error("nnx.Reshape(shape=())", "1 to 8 dims");
  expect_format_error("nnx.Reshape(shape=(1, 1, 1, 1, 1, 1, 1, 1, 1))", "1 to 8 dims");
  expect_format_error("nnx.Reshape(shape=4)", "shape");
  expect_format_error("nnx.Reshape()", "shape");
  expect_format_error("nnx.Permute(dims=(0, 2, 2, 1))", "not a permutation");
  expect_format_error("nnx.Permute(dims=(0, 1, 4))", "not a permutation");
  expect_format_error("nnx.Permute(dims=(0, -4, 1))", "not a permutation");
  expect_format_error("nnx.Permute(dims=(0, 1), foo=1)", "foo");
  expect_format_error("nnx.Split(sizes=[], dim=1)", "at least one size");
  expect_format_error("nnx.Split(sizes=[4, -1], dim=1)", "must not be negative");
  expect_format_error("nnx.Split(sizes=[4, 4], dim=1.5)", "dim");
  expect_format_error("nnx.Mean(dim=())", "at least one dim");
  expect_format_error("nnx.Mean(dim=(2, 3), keepdim=1)", "keepdim");
  expect_format_error("nnx.Affine(scale='x')", "scale");
  expect_format_error("nnx.StochasticDepth(p=1.5, mode=row)", "between 0 and 1");
  expect_format_error("nnx.StochasticDepth(p=0.1, mode=column)", "'batch' or 'row'");
  expect_format_error("nnx.StochasticDepth(p=0.1)", "mode");
  expect_format_error("LayerNorm((0,))", "positive sizes");
  expect_format_error("LayerNorm(8, eps=-1.0)", "eps");
  expect_format_error("LayerNorm()", "normalized_shape");
  expect_error([] { make("LayerNorm(8, dtype=torch.float16)"); }, ErrorKind::unsupported, "dtype");
}

TEST(NetworkOps, ShapeRules) {
  auto reshape = make("nnx.Reshape(shape=(0, -1))");
  EXPECT_EQ(reshape->infer_shapes(specs({{2, 64, 7, 7}}), 1)[0].shape, (Shape{2, 64 * 49}));
  EXPECT_EQ(make("nnx.Reshape(shape=(0, 2, 58, 0, -1))")
                ->infer_shapes(specs({{2, 116, 7, 7}}), 1)[0]
                .shape,
            (Shape{2, 2, 58, 7, 7}));
  expect_error(
      [&] {
        make("nnx.Reshape(shape=(0, 5, -1))")->infer_shapes(specs({{2, 7, 3}}), 1);
      },
      ErrorKind::shape, "cannot reshape an input of shape [2, 7, 3]");
  expect_error(
      [&] {
        make("nnx.Reshape(shape=(0, 5))")->infer_shapes(specs({{2, 7, 3}}), 1);
      },
      ErrorKind::shape, "cannot reshape");
  expect_error(
      [&] {
        make("nnx.Reshape(shape=(0, 0, 0))")->infer_shapes(specs({{6, 7}}), 1);
      },
      ErrorKind::shape, "size 0 at dimension 2");
  expect_error(
      [&] {
        make("nnx.Reshape(shape=(0, 0, -1))")->infer_shapes(specs({{2, 0, 3}}), 1);
      },
      ErrorKind::shape, "cannot reshape");

  auto permute = make("nnx.Permute(dims=(0, 2, 3, 1))");
  EXPECT_EQ(permute->infer_shapes(specs({{2, 96, 14, 13}}), 1)[0].shape, (Shape{2, 14, 13, 96}));
  expect_error(
      [&] {
        permute->infer_shapes(specs({{2, 96, 14}}), 1);
      },
      ErrorKind::shape, "expected an input of rank 4");

  auto split = make("nnx.Split(sizes=[58, 58], dim=1)");
  auto pieces = split->infer_shapes(specs({{2, 116, 7, 7}}), 2);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[1].shape, (Shape{2, 58, 7, 7}));
  expect_error(
      [&] {
        split->infer_shapes(specs({{2, 100, 7, 7}}), 2);
      },
      ErrorKind::shape, "the sizes sum to 116, but dimension 1 of the input has 100");
  expect_error([&] { split->check_arity(1, 3); }, ErrorKind::shape,
               "expected 2 outputs (one per size), found 3");
  expect_error(
      [&] {
        make("nnx.Split(sizes=[1], dim=4)")->infer_shapes(specs({{2, 1}}), 1);
      },
      ErrorKind::shape, "");

  auto mean = make("nnx.Mean(dim=(2, 3), keepdim=False)");
  EXPECT_EQ(mean->infer_shapes(specs({{2, 40, 7, 7}}), 1)[0].shape, (Shape{2, 40}));
  EXPECT_EQ(make("nnx.Mean(dim=(-1, -2), keepdim=True)")
                ->infer_shapes(specs({{2, 40, 7, 7}}), 1)[0]
                .shape,
            (Shape{2, 40, 1, 1}));
  expect_error(
      [&] {
        mean->infer_shapes(specs({{2, 40, 7}}), 1);
      },
      ErrorKind::shape, "dim 3 is out of range");
  expect_error(
      [&] {
        make("nnx.Mean(dim=(1, -2))")->infer_shapes(specs({{2, 3, 4}}), 1);
      },
      ErrorKind::shape, "appears more than once");

  auto ln = make("LayerNorm((96,), eps=1e-06, elementwise_affine=True)");
  EXPECT_EQ(ln->infer_shapes(specs({{2, 7, 7, 96}}), 1)[0].shape, (Shape{2, 7, 7, 96}));
  expect_error(
      [&] {
        ln->infer_shapes(specs({{2, 96, 7, 7}}), 1);
      },
      ErrorKind::shape, "expects an input of shape [*, 96], found [2, 96, 7, 7]");
  expect_error([&] { make("LayerNorm((4, 5))")->infer_shapes(specs({{5}}), 1); }, ErrorKind::shape,
               "[*, 4, 5]");

  EXPECT_EQ(make("Linear(96, 384)")->infer_shapes(specs({{2, 14, 14, 96}}), 1)[0].shape,
            (Shape{2, 14, 14, 384}));
}

TEST(NetworkOps, ParametersAsPyTorchInitialisesThem) {
  auto ln = make("LayerNorm((4, 5), eps=1e-06)");
  ASSERT_EQ(ln->params().size(), 2u);
  EXPECT_EQ(ln->params()[0].name, "weight");
  EXPECT_EQ(ln->params()[1].name, "bias");
  EXPECT_EQ(ln->params()[0].value.shape(), (Shape{4, 5}));
  RandomEngine rng(3);
  ln->init_params(rng);
  for (int64_t i = 0; i < 20; ++i) {
    EXPECT_EQ(ln->params()[0].value.at_flat(i), 1.0);
    EXPECT_EQ(ln->params()[1].value.at_flat(i), 0.0);
  }
  EXPECT_TRUE(make("LayerNorm(4, elementwise_affine=False)")->params().empty());
  EXPECT_EQ(make("LayerNorm(4, bias=False)")->params().size(), 1u);
  for (const char* text :
       {"nnx.Reshape(shape=(0, -1))", "nnx.Permute(dims=(1, 0))", "nnx.Split(sizes=[1], dim=0)",
        "nnx.Mean(dim=1)", "nnx.Affine()", "nnx.StochasticDepth(p=0.1, mode=row)"})
    EXPECT_TRUE(make(text)->params().empty()) << text;
}

TEST(NetworkOps, ChannelRules) {
  // Dim 1 where it is known without spatial sizes, kUnknownChannels elsewhere.
  EXPECT_EQ(make("nnx.Permute(dims=(0, 2, 3, 1))")->infer_channels(Channels{96}, 1),
            Channels{kUnknown});
  EXPECT_EQ(make("nnx.Permute(dims=(0, 1, 3, 2))")->infer_channels(Channels{96}, 1), Channels{96});
  EXPECT_EQ(make("nnx.Reshape(shape=(0, -1))")->infer_channels(Channels{64}, 1),
            Channels{kUnknown});
  EXPECT_EQ(make("nnx.Reshape(shape=(0, 0, 4, -1))")->infer_channels(Channels{64}, 1),
            Channels{64});
  EXPECT_EQ(make("nnx.Reshape(shape=(0, 128, 4, -1))")->infer_channels(Channels{64}, 1),
            Channels{128});
  EXPECT_EQ(make("nnx.Reshape(shape=(0, 2, 58, 7, 7))")->infer_channels(Channels{116}, 1),
            Channels{kUnknown});
  EXPECT_EQ(make("nnx.Split(sizes=[58, 58], dim=1)")->infer_channels(Channels{116}, 2),
            (Channels{58, 58}));
  EXPECT_EQ(make("nnx.Split(sizes=[58, 58], dim=1)")->infer_channels(Channels{kUnknown}, 2),
            (Channels{58, 58}));
  EXPECT_EQ(make("nnx.Split(sizes=[3, 4], dim=3)")->infer_channels(Channels{16}, 2),
            (Channels{16, 16}));
  EXPECT_EQ(make("nnx.Split(sizes=[3, 4], dim=-1)")->infer_channels(Channels{16}, 2),
            (Channels{kUnknown, kUnknown}));
  expect_error([] { make("nnx.Split(sizes=[58, 50], dim=1)")->infer_channels(Channels{116}, 2); },
               ErrorKind::shape, "expected 108 input channels (the sum of the sizes), found 116");
  EXPECT_EQ(make("nnx.Mean(dim=(2, 3))")->infer_channels(Channels{40}, 1), Channels{40});
  EXPECT_EQ(make("nnx.Mean(dim=(1,), keepdim=True)")->infer_channels(Channels{40}, 1), Channels{1});
  EXPECT_EQ(make("nnx.Mean(dim=(1,))")->infer_channels(Channels{40}, 1), Channels{kUnknown});
  EXPECT_EQ(make("nnx.Mean(dim=(-1, -2))")->infer_channels(Channels{40}, 1), Channels{kUnknown});
  EXPECT_EQ(make("nnx.Affine(scale=0.5)")->infer_channels(Channels{40}, 1), Channels{40});
  EXPECT_EQ(make("nnx.StochasticDepth(p=0.1, mode=row)")->infer_channels(Channels{40}, 1),
            Channels{40});
  // LayerNorm keeps the shape; its trailing-dims check needs the shape.
  EXPECT_EQ(make("LayerNorm(96)")->infer_channels(Channels{14}, 1), Channels{14});
  // Linear: a known count is its features (rank 2); an unknown one stays unknown.
  EXPECT_EQ(make("Linear(96, 384)")->infer_channels(Channels{96}, 1), Channels{384});
  EXPECT_EQ(make("Linear(96, 384)")->infer_channels(Channels{kUnknown}, 1), Channels{kUnknown});
  expect_error([] { make("Linear(96, 384)")->infer_channels(Channels{14}, 1); }, ErrorKind::shape,
               "expected 96 input features, found 14");
}

// Runs `op` on `inputs` as the executor does: outputs allocated unless they are views.
std::vector<Tensor> run_op(const Op& op, const std::vector<Tensor>& inputs, int num_outputs) {
  std::vector<TensorSpec> in_specs;
  for (const Tensor& t : inputs) in_specs.push_back({t.shape(), t.dtype()});
  std::vector<TensorSpec> out_specs = op.infer_shapes(in_specs, num_outputs);
  std::vector<Tensor> outputs(static_cast<size_t>(num_outputs));
  for (int i = 0; i < num_outputs; ++i)
    if (!op.output_view_of(i))
      outputs[size_t(i)] = Tensor::empty(out_specs[size_t(i)].shape, out_specs[size_t(i)].dtype);
  op.forward(ExecContext{}, inputs, outputs);
  return outputs;
}

Tensor counting(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(i) * 0.5f - 7.0f;
  return t;
}

TEST(NetworkOps, StridedInputs) {
  // A channels-last view of an NCHW tensor (as a Permute would leave it if it were a view).
  Tensor base = counting(Shape{2, 6, 3, 4});
  Tensor nhwc = base.as_strided(Shape{2, 3, 4, 6}, Shape{72, 4, 1, 12}, 0);
  ASSERT_FALSE(nhwc.is_contiguous());
  const Tensor dense = nhwc.contiguous();  // the same values, laid out in C order

  // Reshape: a copy for a strided input, a view of a contiguous one.
  auto reshape = make("nnx.Reshape(shape=(0, -1))");
  Tensor flat = run_op(*reshape, {nhwc}, 1)[0];
  EXPECT_EQ(flat.shape(), (Shape{2, 72}));
  EXPECT_EQ(testing_util::relative_error(flat, dense.reshape(Shape{2, 72})), 0.0);
  EXPECT_EQ(run_op(*reshape, {base}, 1)[0].storage(), base.storage());

  // Permute of a strided input back to NCHW gives the base tensor.
  Tensor back = run_op(*make("nnx.Permute(dims=(0, 3, 1, 2))"), {nhwc}, 1)[0];
  EXPECT_TRUE(back.bitwise_equal(base));
  // Split and Mean read strided inputs as their values.
  auto split = make("nnx.Split(sizes=[1, 2], dim=1)");
  std::vector<Tensor> a = run_op(*split, {nhwc}, 2), b = run_op(*split, {dense}, 2);
  EXPECT_TRUE(a[0].bitwise_equal(b[0]));
  EXPECT_TRUE(a[1].bitwise_equal(b[1]));
  auto mean = make("nnx.Mean(dim=(1, 2))");
  EXPECT_TRUE(run_op(*mean, {nhwc}, 1)[0].bitwise_equal(run_op(*mean, {dense}, 1)[0]));
  auto ln = make("LayerNorm(6)");
  EXPECT_TRUE(run_op(*ln, {nhwc}, 1)[0].bitwise_equal(run_op(*ln, {dense}, 1)[0]));
}

TEST(NetworkOps, PermuteAndSplitMoveAnyElementType) {
  for (DType dtype : {DType::f64, DType::i64, DType::f16, DType::u8}) {
    Tensor x = Tensor::empty(Shape{2, 3, 5, 2}, DType::f64);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<double>()[i] = double(i);
    x = x.to(dtype);
    Tensor p = run_op(*make("nnx.Permute(dims=(3, 1, 0, 2))"), {x}, 1)[0];
    Tensor expected = x.as_strided(Shape{2, 3, 2, 5}, Shape{1, 10, 30, 2}, 0).contiguous();
    EXPECT_TRUE(p.bitwise_equal(expected)) << dtype_name(dtype);
    std::vector<Tensor> s = run_op(*make("nnx.Split(sizes=[2, 3], dim=2)"), {x}, 2);
    EXPECT_TRUE(s[1].bitwise_equal(x.slice(2, 2, 5).contiguous())) << dtype_name(dtype);
  }
}

// ---- descriptions: load-time channel validation past channels-last tensors

std::string load_error(const std::string& description) {
  try {
    load_memory(description, "", {}, "net.json");
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

// One layer of a description: [CALL, [[in], [out]], [[-1, 0]]] (fed from the node before).
std::string layer(const std::string& call, int in, int out) {
  return "[\"" + call + "\", [[" + std::to_string(in) + "], [" + std::to_string(out) +
         "]], [[-1, 0]]]";
}

// A ConvNeXt-style block for C channels on H x H, declaring dim 1 at every port (so H where
// the tensor is channels-last), with `linear` as its first Linear.
std::string convnext_block(int c, int h, const std::string& linear) {
  const std::string C = std::to_string(c);
  const std::vector<std::string> layers = {
      layer("Conv2d(" + C + ", " + C + ", 7, padding=3, groups=" + C + ")", c, c),
      layer("nnx.Permute(dims=(0, 2, 3, 1))", c, h),
      layer("LayerNorm((" + C + ",), eps=1e-06)", h, h),
      layer(linear, h, h),
      layer("GELU()", h, h),
      layer("Linear(" + std::to_string(4 * c) + ", " + C + ")", h, h),
      layer("nnx.Permute(dims=(0, 3, 1, 2))", h, c),
  };
  std::string text = "{\"inputs_channels\": [" + C + "], \"outputs_channels\": [" + C +
                     "], \"outputs\": [[7, 0, 0]], \"layers\": [";
  for (size_t i = 0; i < layers.size(); ++i) text += (i ? ", " : "") + layers[i];
  return text + "]}";
}

TEST(NetworkOps, ChannelsLastBlocksLoadWhateverHIs) {
  for (int h : {5, 8, 32}) {  // 8 == C and 32 == 4C: Linear sees its own feature counts as H
    std::string text = convnext_block(8, h, "Linear(8, 32)");
    EXPECT_EQ(load_error(text), "") << "H=" << h;
  }
  // The network runs, and a Linear whose features do not match fails at plan time, naming
  // the layer.
  Model model = load_memory(convnext_block(8, 5, "Linear(8, 32)"), "", {}, "net.json");
  Executor net(model, {.threads = 1});
  std::vector<Tensor> out = net(Tensor::zeros(Shape{1, 8, 5, 5}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].shape(), (Shape{1, 8, 5, 5}));

  Model bad = load_memory(convnext_block(8, 5, "Linear(6, 32)"), "", {}, "net.json");
  Executor bad_net(bad, {.threads = 1});
  try {
    bad_net(Tensor::zeros(Shape{1, 8, 5, 5}));
    ADD_FAILURE() << "a Linear(6, 32) fed 8 features ran";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("layer 4"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("Linear(6, 32)"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("expected 6 input features"), std::string::npos) << e.message();
  }
}

TEST(NetworkOps, ChecksStayWhereDimOneIsKnown) {
  // A Linear straight after Flatten still sees its features at load time.
  std::string msg = load_error(
      R"j({"inputs_channels": [5], "outputs_channels": [3], "outputs": [[3, 0, 0]],
          "auto_connect": true, "layers": [["AdaptiveAvgPool2d(1)"], ["Flatten()"],
          ["Linear(10,3)", 3]]})j");
  EXPECT_NE(msg.find("layer 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 10 input features, found 5"), std::string::npos) << msg;
  // Split along dim 1 knows its input and output channels.
  msg = load_error(
      R"j({"inputs_channels": [16], "outputs_channels": [8, 8],
          "outputs": [[1, 0, 0], [1, 1, 1]],
          "layers": [["nnx.Split(sizes=[8, 6], dim=1)", [[16], [8, 6]], [[-1, 0]]]]})j");
  EXPECT_NE(msg.find("layer 1 'nnx.Split(sizes=[8, 6], dim=1)'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 14 input channels (the sum of the sizes), found 16"),
            std::string::npos)
      << msg;
  msg = load_error(
      R"j({"inputs_channels": [16], "outputs_channels": [8, 8],
          "outputs": [[1, 0, 0], [1, 1, 1]],
          "layers": [["nnx.Split(sizes=[8, 8], dim=1)", [[16], [8, 6]], [[-1, 0]]]]})j");
  EXPECT_NE(msg.find("declared 6 channels at output 1, but the op gives 8"), std::string::npos)
      << msg;
  // Past a channels-last block, the first op that knows its channels again is checked: the
  // Conv2d after the permute back is fed what its input declares.
  msg = load_error(
      R"j({"inputs_channels": [8], "outputs_channels": [4], "outputs": [[4, 0, 0]],
          "layers": [["nnx.Permute(dims=(0, 2, 3, 1))", [[8], [5]], [[-1, 0]]],
                     ["Linear(8, 8)", [[5], [5]], [[-1, 0]]],
                     ["nnx.Permute(dims=(0, 3, 1, 2))", [[5], [8]], [[-1, 0]]],
                     ["Conv2d(8, 4, 1)", [[8], [6]], [[-1, 0]]]]})j");
  EXPECT_NE(msg.find("layer 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("declared 6 channels at output 0, but the op gives 4"), std::string::npos)
      << msg;
}

// ---- whole networks against PyTorch (python/fixture_network_ops.py)

std::vector<fs::path> network_cases() {
  std::vector<fs::path> folders;
  fs::path root = fs::path(NNX_FIXTURE_DIR) / "network_ops";
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::directory_iterator(root))
    if (fs::exists(entry.path() / "case.json")) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

std::string compare(const std::vector<Tensor>& outputs, const fs::path& folder,
                    const json::Value& meta) {
  std::string failures;
  const auto& refs = meta.find("refs")->array;
  if (outputs.size() != refs.size()) return " output count differs";
  for (size_t k = 0; k < refs.size(); ++k) {
    double err =
        testing_util::relative_error(outputs[k], read_npy((folder / refs[k].str).string()));
    if (!(err <= meta.find("tol")->number))
      failures += " output " + std::to_string(k) + " error " + std::to_string(err);
  }
  return failures;
}

TEST(NetworkOps, NetworksMatchPyTorchAndRoundTrip) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  testing_util::TempDir dir;
  auto folders = network_cases();
  ASSERT_GE(folders.size(), 3u) << "no cases under " << NNX_FIXTURE_DIR << "/network_ops";
  for (const fs::path& folder : folders) {
    SCOPED_TRACE(folder.filename().string());
    json::Value meta = json::parse_file((folder / "case.json").string());
    std::vector<Tensor> inputs;
    for (auto& in : meta.find("inputs")->array)
      inputs.push_back(read_npy((folder / in.str).string()));
    Model model = load((folder / meta.find("arch")->str).string(),
                       (folder / meta.find("weights")->str).string());
    for (int threads : {1, 2}) {
      Executor net(model, {.threads = threads});
      EXPECT_EQ(compare(net(inputs), folder, meta), "") << threads << " threads";
    }
    // Written back and read again: the same network, and writing it again gives the same bytes.
    const std::string a = dir.file(folder.filename().string() + "_a.json");
    const std::string b = dir.file(folder.filename().string() + "_b.json");
    model.save(a);
    Model again = load(a, a.substr(0, a.size() - 5) + ".pth");
    again.save(b);
    const std::string text = testing_util::read_file(a);
    EXPECT_EQ(text, testing_util::read_file(b));
    EXPECT_NE(text.find("\"nnx."), std::string::npos) << text;
    Executor net(again, {.threads = 1});
    EXPECT_EQ(compare(net(inputs), folder, meta), "");
  }
}

}  // namespace
}  // namespace nnx
