// Argument, arity and channel errors of the elementwise, activation, softmax, structure,
// constant and pruner ops, their reprs (as PyTorch 1.13 prints them), views, and the Pruner's
// generation switch. Numbers are checked against PyTorch in op_parity_test.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "importer/call_parser.h"
#include "nnx/error.h"
#include "nnx/registry.h"
#include "ops/constant.h"
#include "ops/pruner.h"

namespace nnx {
namespace {

std::shared_ptr<Op> op_of(const std::string& text) {
  return make_op(parse_call(text));
}

// Runs fn, expecting an nnx::Error of `kind` whose message contains `part`.
template <class F>
void expect_error(F&& fn, ErrorKind kind, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing \"" << part << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(e.message().find(part), std::string::npos)
        << "message \"" << e.message() << "\" lacks \"" << part << "\"";
  }
}

std::vector<TensorSpec> specs(std::initializer_list<Shape> shapes) {
  std::vector<TensorSpec> out;
  for (const Shape& s : shapes) out.push_back({s, DType::f32});
  return out;
}

TEST(ElementwiseOps, ReprsMatchPyTorch) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"torch.nn.ReLU()", "ReLU()"},
      {"ReLU(inplace=True)", "ReLU(inplace=True)"},
      {"ReLU(False)", "ReLU()"},
      {"LeakyReLU()", "LeakyReLU(negative_slope=0.01)"},
      {"LeakyReLU(0.2, True)", "LeakyReLU(negative_slope=0.2, inplace=True)"},
      {"LeakyReLU(negative_slope=1)", "LeakyReLU(negative_slope=1)"},
      {"ReLU6()", "ReLU6()"},
      {"ReLU6(inplace=True)", "ReLU6(inplace=True)"},
      {"Sigmoid()", "Sigmoid()"},
      {"Tanh()", "Tanh()"},
      {"SiLU(inplace=True)", "SiLU(inplace=True)"},
      {"Hardswish(inplace=True)", "Hardswish()"},
      {"Hardsigmoid()", "Hardsigmoid()"},
      {"ELU()", "ELU(alpha=1.0)"},
      {"ELU(0.5, True)", "ELU(alpha=0.5, inplace=True)"},
      {"GELU()", "GELU(approximate='none')"},
      {"GELU(approximate='tanh')", "GELU(approximate='tanh')"},
      {"Hardtanh()", "Hardtanh(min_val=-1.0, max_val=1.0)"},
      {"Hardtanh(-2.0, 3.0, True)", "Hardtanh(min_val=-2.0, max_val=3.0, inplace=True)"},
      {"Softplus()", "Softplus(beta=1, threshold=20)"},
      {"Softplus(2.5, 10.5)", "Softplus(beta=2.5, threshold=10.5)"},
      {"Mish()", "Mish()"},
      {"Softmax()", "Softmax(dim=None)"},
      {"Softmax(1)", "Softmax(dim=1)"},
      {"LogSoftmax(dim=-1)", "LogSoftmax(dim=-1)"},
      {"Flatten()", "Flatten(start_dim=1, end_dim=-1)"},
      {"Flatten(0, 2)", "Flatten(start_dim=0, end_dim=2)"},
      {"Unflatten(1, (2, 3))", "Unflatten(dim=1, unflattened_size=(2, 3))"},
      {"Unflatten(1, [2, 3])", "Unflatten(dim=1, unflattened_size=[2, 3])"},
      {"Dropout()", "Dropout(p=0.5, inplace=False)"},
      {"Dropout(0.1, True)", "Dropout(p=0.1, inplace=True)"},
      {"Dropout2d(p=0.2)", "Dropout2d(p=0.2, inplace=False)"},
      {"torch.nn.Identity(54, unused=0.1)", "Identity()"},
      {"Add(num=2)", "Add(num=2)"},
      {"Sub()", "Sub(num=1)"},
      {"Mul(3)", "Mul(num=3)"},
      {"Cat()", "Cat(dim=1)"},
      {"Constant(torch.tensor((1, 5),dtype=torch.float32))",
       "Constant(t=torch.zeros((1, 5),dtype=torch.float32))"},
      {"Variable(torch.ones((3,)))", "Variable(t=torch.zeros((3,),dtype=torch.float32))"},
      {"Pruner(8)",
       "Pruner(ch=8, prunable=False, activated=True, threshold=0.75, num_of_appearances=1)"},
      {"Pruner(ch=5, prunable=True, activated=True, threshold={self.threshold}, "
       "num_of_appearances={self.num_of_appearances})",
       "Pruner(ch=5, prunable=True, activated=True, threshold=0.75, num_of_appearances=1)"},
      {"AllOrNothingPruner(4, threshold=0.5)",
       "AllOrNothingPruner(ch=4, prunable=False, activated=True, threshold=0.5, "
       "num_of_appearances=1)"},
  };
  for (const auto& [text, expected] : cases) {
    SCOPED_TRACE(text);
    std::shared_ptr<Op> op = op_of(text);
    EXPECT_EQ(op->repr(), expected);
    EXPECT_EQ(op_of(op->repr())->repr(), expected) << "the repr does not read back";
  }
}

TEST(ElementwiseOps, PythonModules) {
  EXPECT_EQ(op_of("ReLU()")->python_module(), "torch.nn.modules.activation");
  EXPECT_EQ(op_of("Softmax(1)")->python_module(), "torch.nn.modules.activation");
  EXPECT_EQ(op_of("Flatten()")->python_module(), "torch.nn.modules.flatten");
  EXPECT_EQ(op_of("Dropout()")->python_module(), "torch.nn.modules.dropout");
  EXPECT_EQ(op_of("torch.nn.Identity()")->python_module(), "torch.nn.modules.linear");
  EXPECT_EQ(op_of("nn_executor.models.Identity()")->python_module(), "nn_executor.models");
  EXPECT_EQ(op_of("Add(num=2)")->python_module(), "nn_executor.models");
  EXPECT_EQ(op_of("Pruner(3)")->python_module(), "nn_executor.models");
  EXPECT_EQ(op_of("AllOrNothingPruner(3)")->python_module(), "nn_executor.pruning.pruners");
}

TEST(ElementwiseOps, ArgumentErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"ReLU(foo=1)", "unknown keyword argument 'foo'"},
      {"Sigmoid(1)", "positional"},
      {"LeakyReLU(negative_slope='a')", "negative_slope"},
      {"ReLU(inplace=3)", "inplace"},
      {"GELU(approximate='fast')", "approximate must be 'none' or 'tanh'"},
      {"Hardtanh(1.0, -1.0)", "expected max_val > min_val"},
      {"Dropout(p=1.5)", "dropout probability has to be between 0 and 1, but got 1.5"},
      {"Softmax(dim='x')", "dim"},
      {"Add(num=2.5)", "num"},
      {"Cat(dim=None, x=1)", "unknown keyword argument 'x'"},
      {"Flatten(start_dim=1.5)", "start_dim"},
      {"Unflatten(1)", "missing required argument 'unflattened_size'"},
      {"Unflatten(1, (2, -1, -1))", "at most one -1"},
      {"Constant()", "missing required argument 't'"},
      {"Constant(5)", "a tensor literal"},
      {"Pruner()", "missing required argument 'ch'"},
      {"Pruner(0)", "ch must be positive"},
      {"Pruner(4, prunable=1)", "prunable"},
  };
  for (const auto& [text, part] : cases) {
    SCOPED_TRACE(text);
    expect_error([&] { op_of(text); }, ErrorKind::format, part);
  }
}

TEST(ElementwiseOps, RefusedPackageClassesAreNotRegistered) {
  for (const char* name : {"ModuleWithConstArgs", "MultiWithConst", "WithBatchNorm2d", "Parallel",
                           "StaticPruner", "ResidualPruner"}) {
    SCOPED_TRACE(name);
    expect_error([&] { op_of(std::string("nn_executor.models.") + name + "()"); },
                 ErrorKind::unsupported, name);
  }
}

TEST(ElementwiseOps, ArityErrors) {
  expect_error([] { op_of("Identity()")->check_arity(0, 0); }, ErrorKind::shape,
               "expected at least 1 input, found 0");
  expect_error([] { op_of("Identity()")->check_arity(2, 1); }, ErrorKind::shape,
               "expected 2 outputs (one per input), found 1");
  op_of("nn_executor.models.Identity()")->check_arity(3, 3);
  expect_error([] { op_of("Add(num=2)")->check_arity(0, 1); }, ErrorKind::shape,
               "expected at least 1 inputs, found 0");
  expect_error([] { op_of("Add(num=2)")->check_arity(2, 2); }, ErrorKind::shape,
               "expected 1 output, found 2");
  expect_error([] { op_of("Cat()")->check_arity(0, 1); }, ErrorKind::shape, "found 0");
  expect_error([] { op_of("ReLU()")->check_arity(2, 1); }, ErrorKind::shape,
               "expected 1 input, found 2");
  expect_error([] { op_of("Constant(torch.zeros((1, 5)))")->check_arity(1, 1); }, ErrorKind::shape,
               "expected 0 inputs, found 1");
  op_of("Constant(torch.zeros((1, 5)))")->check_arity(0, 1);
}

TEST(ElementwiseOps, ChannelRules) {
  using V = std::vector<int64_t>;
  const int64_t u = kUnknownChannels;
  auto add = op_of("Add(num=2)");
  EXPECT_EQ(add->infer_channels(V{64, 64}, 1), V{64});
  EXPECT_EQ(add->infer_channels(V{1, 64}, 1), V{64});
  EXPECT_EQ(add->infer_channels(V{64, 1, 64}, 1), V{64});
  EXPECT_EQ(add->infer_channels(V{u, 64}, 1), V{64});
  EXPECT_EQ(add->infer_channels(V{u, 1}, 1), V{u});
  expect_error(
      [&] {
        add->infer_channels(V{64, 128}, 1);
      },
      ErrorKind::shape, "expected inputs with broadcastable channels, found 64 and 128");
  expect_error(
      [&] {
        op_of("Mul(num=3)")->infer_channels(V{64, 1, 32}, 1);
      },
      ErrorKind::shape, "found 64 and 32");

  auto cat = op_of("Cat(dim=1)");
  EXPECT_EQ(cat->infer_channels(V{3, 5, 1}, 1), V{9});
  EXPECT_EQ(cat->infer_channels(V{3, u}, 1), V{u});
  EXPECT_EQ(op_of("Cat(dim=2)")->infer_channels(V{8, 8}, 1), V{8});
  expect_error(
      [] {
        op_of("Cat(dim=2)")->infer_channels(V{64, 128}, 1);
      },
      ErrorKind::shape, "expected inputs with equal channels, found 64 and 128");
  EXPECT_EQ(op_of("Cat(dim=-1)")->infer_channels(V{8, 4}, 1), V{u});

  EXPECT_EQ(op_of("Identity()")->infer_channels(V{3, 7}, 2), (V{3, 7}));
  EXPECT_EQ(op_of("Flatten()")->infer_channels(V{16}, 1), V{u});
  EXPECT_EQ(op_of("Flatten(2)")->infer_channels(V{16}, 1), V{16});
  EXPECT_EQ(op_of("Unflatten(1, (4, 4))")->infer_channels(V{16}, 1), V{4});
  EXPECT_EQ(op_of("Dropout()")->infer_channels(V{16}, 1), V{16});
  EXPECT_EQ(op_of("Softmax(1)")->infer_channels(V{10}, 1), V{10});
  EXPECT_EQ(op_of("Constant(torch.zeros((1, 5, 2, 2)))")->infer_channels(V{}, 1), V{5});
  EXPECT_EQ(op_of("Constant(torch.zeros((5,)))")->infer_channels(V{}, 1), V{u});
  EXPECT_EQ(op_of("Pruner(8)")->infer_channels(V{8}, 1), V{8});
  expect_error([] { op_of("Pruner(8)")->infer_channels(V{16}, 1); }, ErrorKind::shape,
               "expected 8 input channels, found 16");
}

TEST(ElementwiseOps, ShapeRules) {
  auto add = op_of("Add(num=2)");
  EXPECT_EQ(add->infer_shapes(specs({{2, 3, 1, 1}, {2, 3, 4, 5}}), 1)[0].shape,
            (Shape{2, 3, 4, 5}));
  EXPECT_EQ(add->infer_shapes(specs({{5}, {2, 1, 4, 1}}), 1)[0].shape, (Shape{2, 1, 4, 5}));
  expect_error(
      [&] {
        add->infer_shapes(specs({{2, 3, 4, 5}, {2, 4, 4, 5}}), 1);
      },
      ErrorKind::shape, "expected broadcastable shapes, found [2, 3, 4, 5] and [2, 4, 4, 5]");
  std::vector<TensorSpec> ints = {{Shape{2}, DType::i64}, {Shape{2}, DType::i64}};
  expect_error([&] { add->infer_shapes(ints, 1); }, ErrorKind::unsupported, "float32");

  auto cat = op_of("Cat(dim=1)");
  EXPECT_EQ(cat->infer_shapes(specs({{2, 3, 4, 5}, {2, 5, 4, 5}}), 1)[0].shape,
            (Shape{2, 8, 4, 5}));
  expect_error(
      [&] {
        cat->infer_shapes(specs({{2, 3, 4, 5}, {2, 5, 3, 5}}), 1);
      },
      ErrorKind::shape, "expected input 1 to match input 0 in dimension 2");
  expect_error(
      [&] {
        cat->infer_shapes(specs({{2, 3, 4, 5}, {2, 5, 4}}), 1);
      },
      ErrorKind::shape, "of rank 4");
  expect_error(
      [] {
        op_of("Cat(dim=4)")->infer_shapes(specs({{2, 3, 4, 5}}), 1);
      },
      ErrorKind::shape, "out of range");

  expect_error(
      [] {
        op_of("Softmax(dim=4)")->infer_shapes(specs({{2, 3, 4, 5}}), 1);
      },
      ErrorKind::shape, "out of range");
  expect_error(
      [] {
        op_of("Flatten(2, 1)")->infer_shapes(specs({{2, 3, 4, 5}}), 1);
      },
      ErrorKind::shape, "start_dim cannot come after end_dim");
  EXPECT_EQ(op_of("Flatten(0, -1)")->infer_shapes(specs({{}}), 1)[0].shape, (Shape{1}));
  expect_error(
      [] {
        op_of("Unflatten(1, (4, 4))")->infer_shapes(specs({{2, 15}}), 1);
      },
      ErrorKind::shape, "of size 16");
  expect_error(
      [] {
        op_of("Dropout1d()")->infer_shapes(specs({{2, 3, 4, 5}}), 1);
      },
      ErrorKind::shape, "2-d or 3-d");
  expect_error(
      [] {
        op_of("Pruner(8)")->infer_shapes(specs({{2, 8, 4}}), 1);
      },
      ErrorKind::shape, "expected a 4-d input");
  expect_error(
      [] {
        op_of("Pruner(8)")->infer_shapes(specs({{2, 4, 3, 3}}), 1);
      },
      ErrorKind::shape, "expected 8 input channels, found 4");
}

TEST(ElementwiseOps, ViewOutputsShareTheInput) {
  Tensor x = Tensor::full(Shape{2, 3, 4, 5}, 1.5);
  Tensor y = Tensor::full(Shape{2, 2}, 2.0);
  ExecContext ctx;
  for (const char* text : {"Flatten()", "Dropout()", "Dropout2d(0.3)", "Identity()",
                           "Pruner(3, activated=False)", "Unflatten(1, (3, 1))"}) {
    SCOPED_TRACE(text);
    auto op = op_of(text);
    ASSERT_EQ(op->output_view_of(0), 0);
    std::vector<Tensor> in = {x}, out(1);
    op->forward(ctx, in, out);
    EXPECT_EQ(out[0].storage(), x.storage());
    EXPECT_EQ(out[0].shape(), op->infer_shapes(specs({x.shape()}), 1)[0].shape);
  }
  auto identity = op_of("nn_executor.models.Identity()");
  std::vector<Tensor> in = {x, y}, out(2);
  identity->forward(ctx, in, out);
  EXPECT_EQ(out[0].storage(), x.storage());
  EXPECT_EQ(out[1].storage(), y.storage());
  EXPECT_FALSE(op_of("Pruner(3)")->output_view_of(0).has_value());
}

TEST(ElementwiseOps, ConstantLiterals) {
  auto t_of = [](const std::string& text) { return op_of(text)->find_param("t")->value; };
  // The package's older repr: a tuple in torch.tensor(...) is the shape.
  Tensor legacy = t_of("Constant(torch.tensor((1, 5),dtype=torch.float32))");
  EXPECT_EQ(legacy.shape(), (Shape{1, 5}));
  EXPECT_EQ(legacy.at_flat(0), 0.0);
  EXPECT_EQ(t_of("Constant(t=torch.tensor( ( 2, 3 ) ))").shape(), (Shape{2, 3}));
  // A list, or non-integral values, are values.
  Tensor values = t_of("Constant(torch.tensor([1.0, 5.0]))");
  EXPECT_EQ(values.shape(), (Shape{2}));
  EXPECT_EQ(values.at_flat(1), 5.0);
  EXPECT_EQ(t_of("Constant(torch.tensor((1.5, 5)))").shape(), (Shape{2}));
  EXPECT_EQ(t_of("Constant(torch.ones((2, 2)))").at_flat(3), 1.0);

  auto constant = op_of("Constant(torch.zeros((1, 5)))");
  auto variable = op_of("Variable(torch.zeros((1, 5)))");
  EXPECT_FALSE(constant->find_param("t")->trainable);
  EXPECT_TRUE(variable->find_param("t")->trainable);
  expect_error(
      [&] {
        constant->set_param("t", Tensor::zeros(Shape{1, 6}));
      },
      ErrorKind::shape, "expected shape [1, 5], found [1, 6]");
}

TEST(ElementwiseOps, PrunerGenerationFollowsTheStateKey) {
  auto op = op_of("Pruner(ch=4, prunable=True, activated=True)");
  auto& pruner = dynamic_cast<PrunerOp&>(*op);
  ASSERT_EQ(op->params().size(), 1u);
  EXPECT_EQ(op->params()[0].name, "pruner_weight");
  EXPECT_FALSE(pruner.legacy());
  Tensor w = Tensor::full(Shape{1, 4, 1, 1}, 0.9);
  op->set_param("weights", w);
  EXPECT_TRUE(pruner.legacy());
  EXPECT_EQ(op->params()[0].name, "weights");  // saved back under the key it came with
  EXPECT_EQ(op->repr(), "Pruner(ch=4, prunable=True, activated=True)");
  op->set_param("pruner_weight", w);
  EXPECT_FALSE(pruner.legacy());
  expect_error(
      [&] {
        op->set_param("weights", Tensor::zeros(Shape{1, 5, 1, 1}));
      },
      ErrorKind::shape, "expected shape [1, 4, 1, 1]");
  expect_error([&] { op->set_param("bias", w); }, ErrorKind::shape, "unexpected tensor 'bias'");
  // AllOrNothingPruner takes the old spelling too, and keeps its repr (and formula).
  auto all = op_of("AllOrNothingPruner(4)");
  all->set_param("weights", w);
  EXPECT_EQ(all->repr(),
            "AllOrNothingPruner(ch=4, prunable=False, activated=True, threshold=0.75, "
            "num_of_appearances=1)");
}

TEST(ElementwiseOps, PrunerInitialWeights) {
  RandomEngine rng(7);
  auto active = op_of("Pruner(16)");
  EXPECT_FLOAT_EQ(float(active->find_param("pruner_weight")->value.at_flat(0)), 1.0000008f);
  active->init_params(rng);
  const Tensor& w = active->find_param("pruner_weight")->value;
  for (int64_t c = 0; c < 16; ++c) {
    EXPECT_GE(w.at_flat(c), 0.99 - 1e-6);
    EXPECT_LE(w.at_flat(c), 1.0);
  }
  auto idle = op_of("Pruner(4, activated=False)");
  idle->init_params(rng);
  EXPECT_FLOAT_EQ(float(idle->find_param("pruner_weight")->value.at_flat(3)), 1.0000008f);
}

}  // namespace
}  // namespace nnx
