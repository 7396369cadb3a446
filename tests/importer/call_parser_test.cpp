// Tests of the constructor-string reader (every form the seed, tmp.json and PyTorch's reprs
// use, and the Python it must refuse) and of channel expressions.
#include "importer/call_parser.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "nnx/error.h"

namespace nnx {
namespace {

std::string call_error(std::string_view text, const Locals& locals = {}) {
  try {
    parse_call(text, locals);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    return e.message();
  }
  return "";
}

std::string expr_error(std::string_view text, const Locals& locals = {}) {
  try {
    eval_int_expr(text, locals);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    return e.message();
  }
  return "";
}

const Value& kwarg(const Call& c, std::string_view name) {
  for (const auto& [k, v] : c.kwargs) {
    if (k == name) return v;
  }
  static const Value missing = Value::identifier("<missing>");
  ADD_FAILURE() << "no keyword " << name << " in " << c.text;
  return missing;
}

// The call written back in Python syntax: positional, then keyword arguments.
std::string rewrite(const Call& c) {
  std::string out = c.name + "(";
  bool first = true;
  for (const Value& v : c.args) {
    out += (first ? "" : ", ") + v.repr();
    first = false;
  }
  for (const auto& [k, v] : c.kwargs) {
    out += (first ? "" : ", ") + k + "=" + v.repr();
    first = false;
  }
  return out + ")";
}

TEST(CallParser, PyTorchReprsReadBackAsWritten) {
  // parse -> repr gives the text back for PyTorch's own reprs.
  const char* reprs[] = {
      "Conv2d(3, 5, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)",
      "Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=same, padding_mode=reflect)",
      "BatchNorm2d(5, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)",
      "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)",
      "Upsample(scale_factor=1.0, mode=nearest)",
      "LeakyReLU(negative_slope=0.01)",
      "Linear(in_features=10, out_features=5, bias=True)",
      "Softmax(dim=-1)",
      "Dropout(p=0.5, inplace=False)",
      "AdaptiveAvgPool2d(output_size=(1, 1))",
      "ReLU()",
      "Flatten(start_dim=1, end_dim=-1)",
      "own_module.YOLO(anchors=[[3, 4]])",
      "Identity()",
      "Pruner(ch=5, prunable=True, activated=True)",
      "Foo(None, 'text', \"it's\", (3,), (), [], [1, (2, 3)])",
  };
  for (const char* text : reprs) {
    SCOPED_TRACE(text);
    Call c = parse_call(text);
    EXPECT_EQ(c.text, text);
    EXPECT_EQ(rewrite(c), text);
  }
}

TEST(CallParser, Conv2dRepr) {
  Call c =
      parse_call("Conv2d(3, 5, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)");
  EXPECT_EQ(c.name, "Conv2d");
  EXPECT_EQ(c.class_name(), "Conv2d");
  EXPECT_EQ(c.prefix(), "");
  ASSERT_EQ(c.args.size(), 2u);
  EXPECT_EQ(c.args[0].as_int(), 3);
  EXPECT_EQ(c.args[1].as_int(), 5);
  ASSERT_EQ(c.kwargs.size(), 4u);
  EXPECT_EQ(c.kwargs[0].first, "kernel_size");
  EXPECT_EQ(c.kwargs[0].second.kind(), Value::Kind::tuple);
  EXPECT_EQ(c.kwargs[0].second.items().size(), 2u);
  EXPECT_TRUE(kwarg(c, "bias").is_bool());
  EXPECT_FALSE(kwarg(c, "bias").as_bool());
}

TEST(CallParser, SeedForms) {
  Call c = parse_call("torch.nn.Conv2d(3,64,3,padding=1)");
  EXPECT_EQ(c.name, "torch.nn.Conv2d");
  EXPECT_EQ(c.class_name(), "Conv2d");
  EXPECT_EQ(c.prefix(), "torch.nn");
  EXPECT_EQ(c.args.size(), 3u);
  EXPECT_EQ(kwarg(c, "padding").as_int(), 1);

  c = parse_call("torch.nn.Conv2d(3,128,7, padding=3)");
  EXPECT_EQ(c.args[2].as_int(), 7);

  c = parse_call("nn_executor.models.Add(num=2)");
  EXPECT_EQ(c.prefix(), "nn_executor.models");
  EXPECT_EQ(c.class_name(), "Add");
  EXPECT_EQ(kwarg(c, "num").as_int(), 2);

  c = parse_call("own_module.YOLO(anchors=[[3,4]])");
  EXPECT_EQ(c.prefix(), "own_module");
  const Value& anchors = kwarg(c, "anchors");
  ASSERT_EQ(anchors.kind(), Value::Kind::list);
  ASSERT_EQ(anchors.items().size(), 1u);
  EXPECT_EQ(anchors.items()[0].repr(), "[3, 4]");

  c = parse_call("torch.nn.modules.conv.Conv2d(3, 5, kernel_size=(3, 3))");
  EXPECT_EQ(c.prefix(), "torch.nn.modules.conv");
  EXPECT_EQ(c.class_name(), "Conv2d");

  c = parse_call("  torch.nn.ReLU( )  ");
  EXPECT_TRUE(c.args.empty());
  EXPECT_TRUE(c.kwargs.empty());
}

TEST(CallParser, BareIdentifiersAndLocals) {
  Call c = parse_call("Upsample(scale_factor=1.0, mode=nearest)");
  EXPECT_EQ(kwarg(c, "scale_factor").kind(), Value::Kind::real);
  EXPECT_EQ(kwarg(c, "scale_factor").as_double(), 1.0);
  EXPECT_EQ(kwarg(c, "mode").kind(), Value::Kind::identifier);
  EXPECT_EQ(kwarg(c, "mode").as_text(), "nearest");

  c = parse_call(
      "Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=same, padding_mode=reflect)");
  EXPECT_EQ(kwarg(c, "padding").as_text(), "same");
  EXPECT_EQ(kwarg(c, "padding_mode").as_text(), "reflect");
  // torch 1.13 prints Upsample(scale_factor=1.5, mode=nearest-exact) unquoted.
  c = parse_call("Upsample(scale_factor=1.5, mode=nearest-exact)");
  EXPECT_EQ(kwarg(c, "mode").as_text(), "nearest-exact");
  EXPECT_THROW(parse_call("Foo(a=x - 1)"), Error);

  Locals locals{{"C", Value::integer(16)},
                {"k", Value::tuple({Value::integer(3), Value::integer(3)})}};
  c = parse_call("Conv2d(C, C, kernel_size=k, padding=same, groups=-C)", locals);
  EXPECT_EQ(c.args[0].as_int(), 16);
  EXPECT_EQ(kwarg(c, "kernel_size").repr(), "(3, 3)");
  EXPECT_EQ(kwarg(c, "padding").kind(), Value::Kind::identifier);
  EXPECT_EQ(kwarg(c, "groups").as_int(), -16);
  // A keyword's name is never replaced by a local.
  c = parse_call("Foo(C=1)", locals);
  EXPECT_EQ(c.kwargs[0].first, "C");
}

TEST(CallParser, Numbers) {
  Call c =
      parse_call("F(1e-05, -0.5, .5, 1., -3, 0, 1_000, 0x1F, 0o17, 0b101, 2E3, -.25e+2, - 4, +7)");
  ASSERT_EQ(c.args.size(), 14u);
  EXPECT_EQ(c.args[0].kind(), Value::Kind::real);
  EXPECT_EQ(c.args[0].as_double(), 1e-05);
  EXPECT_EQ(c.args[0].repr(), "1e-05");
  EXPECT_EQ(c.args[1].as_double(), -0.5);
  EXPECT_EQ(c.args[2].as_double(), 0.5);
  EXPECT_EQ(c.args[3].kind(), Value::Kind::real);
  EXPECT_EQ(c.args[3].as_double(), 1.0);
  EXPECT_EQ(c.args[4].as_int(), -3);
  EXPECT_EQ(c.args[5].as_int(), 0);
  EXPECT_EQ(c.args[6].as_int(), 1000);
  EXPECT_EQ(c.args[7].as_int(), 31);
  EXPECT_EQ(c.args[8].as_int(), 15);
  EXPECT_EQ(c.args[9].as_int(), 5);
  EXPECT_EQ(c.args[10].as_double(), 2000.0);
  EXPECT_EQ(c.args[11].as_double(), -25.0);
  EXPECT_EQ(c.args[12].as_int(), -4);
  EXPECT_EQ(c.args[13].as_int(), 7);

  c = parse_call("F(9223372036854775807, -9223372036854775808, 1e400, -1e400, 1e-400, --2, -(3))");
  EXPECT_EQ(c.args[0].as_int(), INT64_MAX);
  EXPECT_EQ(c.args[1].as_int(), INT64_MIN);
  EXPECT_EQ(c.args[2].as_double(), INFINITY);
  EXPECT_EQ(c.args[3].as_double(), -INFINITY);
  EXPECT_EQ(c.args[4].as_double(), 0.0);
  EXPECT_EQ(c.args[5].as_int(), 2);
  EXPECT_EQ(c.args[6].as_int(), -3);

  EXPECT_EQ(call_error("F(9223372036854775808)"), "column 3: integer literal out of range (int64)");
  EXPECT_EQ(call_error("F(-9223372036854775809)"),
            "column 4: integer literal out of range (int64)");
  EXPECT_EQ(call_error("F(--9223372036854775808)"),
            "column 3: integer literal out of range (int64)");
  EXPECT_EQ(call_error("F(0x10000000000000000)"), "column 3: integer literal out of range (int64)");
  EXPECT_EQ(call_error("F(012)"), "column 3: leading zeros in a decimal integer are not allowed");
  EXPECT_EQ(call_error("F(1e)"), "column 3: invalid number '1e'");
  EXPECT_EQ(call_error("F(1.2.3)"), "column 3: invalid number '1.2.3'");
  EXPECT_EQ(call_error("F(12abc)"), "column 3: invalid number '12abc'");
  EXPECT_EQ(call_error("F(1__0)"), "column 3: invalid number '1__0'");
  EXPECT_EQ(call_error("F(0x)"), "column 3: invalid number '0x'");
  EXPECT_EQ(call_error("F(3j)"),
            "column 3: a complex number is not allowed in a constructor string");
  EXPECT_EQ(call_error("F(-True)"), "column 3: unary '-' needs a number, found True");
  EXPECT_EQ(call_error("F(-abc)"), "column 3: unary '-' needs a number, found abc");
}

TEST(CallParser, Strings) {
  Call c = parse_call(
      R"(F('a', "b", 'it\'s', "q\"", '\n\t\\', '\x41\u00e9\U0001F600', '\101', 'a\qb', r'\d', u'x', '', "é"))");
  ASSERT_EQ(c.args.size(), 12u);
  EXPECT_EQ(c.args[0].kind(), Value::Kind::string);
  EXPECT_EQ(c.args[0].as_text(), "a");
  EXPECT_EQ(c.args[1].as_text(), "b");
  EXPECT_EQ(c.args[2].as_text(), "it's");
  EXPECT_EQ(c.args[3].as_text(), "q\"");
  EXPECT_EQ(c.args[4].as_text(), "\n\t\\");
  EXPECT_EQ(c.args[5].as_text(), "A\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_EQ(c.args[6].as_text(), "A");
  EXPECT_EQ(c.args[7].as_text(), "a\\qb");
  EXPECT_EQ(c.args[8].as_text(), "\\d");
  EXPECT_EQ(c.args[9].as_text(), "x");
  EXPECT_EQ(c.args[10].as_text(), "");
  EXPECT_EQ(c.args[11].as_text(), "\xC3\xA9");
  // Strings keep commas, parentheses and comment-like text.
  c = parse_call("F(s='a, b) # // c')");
  EXPECT_EQ(kwarg(c, "s").as_text(), "a, b) # // c");

  EXPECT_EQ(call_error("F('abc)"), "column 3: unterminated string");
  EXPECT_EQ(call_error("F(\"abc"), "column 3: unterminated string");
  EXPECT_EQ(call_error("F('ab\ncd')"), "column 3: unterminated string");
  EXPECT_EQ(call_error("F('ab\\"), "column 3: unterminated string");
  EXPECT_EQ(call_error("F('\\x4')"), "column 4: invalid escape: expected 2 hex digits");
  EXPECT_EQ(call_error("F('\\ud800')"), "column 4: invalid escape: lone surrogate");
  EXPECT_EQ(call_error("F('\\U00110000')"), "column 4: invalid escape: code point out of range");
  EXPECT_EQ(call_error("F('\\N{DASH}')"), "column 4: \\N{...} escapes are not supported");
  EXPECT_EQ(call_error("F(f'{x}')"),
            "column 3: an f-string is not allowed in a constructor string");
  EXPECT_EQ(call_error("F(b'x')"),
            "column 3: a bytes literal is not allowed in a constructor string");
  EXPECT_EQ(call_error("F('''x''')"),
            "column 3: a triple-quoted string is not allowed in a constructor string");
}

TEST(CallParser, TuplesAndLists) {
  Call c = parse_call("F((3, 3), (3,), (), (4), [], [1, 2,], ((1, 2), [3, (4,)]), ( 5 , ))");
  ASSERT_EQ(c.args.size(), 8u);
  EXPECT_EQ(c.args[0].repr(), "(3, 3)");
  EXPECT_EQ(c.args[1].repr(), "(3,)");
  EXPECT_EQ(c.args[2].repr(), "()");
  EXPECT_EQ(c.args[3].kind(), Value::Kind::integer);  // parentheses, not a tuple
  EXPECT_EQ(c.args[4].repr(), "[]");
  EXPECT_EQ(c.args[5].repr(), "[1, 2]");
  EXPECT_EQ(c.args[6].repr(), "((1, 2), [3, (4,)])");
  EXPECT_EQ(c.args[7].repr(), "(5,)");
  EXPECT_EQ(parse_call("F(1, 2,)").args.size(), 2u);
  EXPECT_EQ(parse_call("F(a=1,)").kwargs.size(), 1u);
}

TEST(CallParser, PrunerPlaceholdersAreDropped) {
  Call c = parse_call(
      "Pruner(ch=5, prunable=True, activated=True, threshold={self.threshold}, "
      "num_of_appearances={self.num_of_appearances})");
  EXPECT_EQ(c.class_name(), "Pruner");
  ASSERT_EQ(c.kwargs.size(), 3u);
  EXPECT_EQ(c.kwargs[0].first, "ch");
  EXPECT_EQ(c.kwargs[1].first, "prunable");
  EXPECT_EQ(c.kwargs[2].first, "activated");
  EXPECT_EQ(
      call_error("Pruner(5, {self.threshold})"),
      "column 11: a dict or set is not allowed in a constructor string (a '{...}' placeholder "
      "is accepted only as a keyword value)");
  EXPECT_EQ(call_error("Pruner(threshold={self.threshold)"),
            "column 18: unterminated '{...}' placeholder");
  EXPECT_EQ(call_error("Pruner(threshold={a{b}})"), "column 18: unterminated '{...}' placeholder");
  EXPECT_EQ(call_error("Pruner(threshold={x}, 5)"),
            "column 23: positional argument follows keyword argument");
}

TEST(CallParser, TensorLiterals) {
  Call c = parse_call("Constant(torch.zeros((1, 5),dtype=torch.float32))");
  ASSERT_EQ(c.args.size(), 1u);
  ASSERT_TRUE(c.args[0].is_tensor());
  const Tensor& t = c.args[0].as_tensor();
  EXPECT_EQ(t.shape(), Shape({1, 5}));
  EXPECT_EQ(t.dtype(), DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.at_flat(i), 0.0);
  EXPECT_EQ(c.args[0].repr(), "torch.zeros((1, 5), dtype=torch.float32)");

  c = parse_call("Constant(torch.zeros((1, 5), dtype=torch.float32))");
  EXPECT_EQ(c.args[0].as_tensor().shape(), Shape({1, 5}));

  // The older writer's torch.tensor((1, 5), ...) is read literally: the Constant op decides.
  c = parse_call("Constant(torch.tensor((1, 5),dtype=torch.float32))");
  const Tensor& lit = c.args[0].as_tensor();
  EXPECT_EQ(lit.shape(), Shape({2}));
  EXPECT_EQ(lit.dtype(), DType::f32);
  EXPECT_EQ(lit.at_flat(0), 1.0);
  EXPECT_EQ(lit.at_flat(1), 5.0);

  c = parse_call(
      "F(torch.ones(2, 3, dtype=torch.int64), torch.ones([4]), torch.zeros(size=(2,)), "
      "torch.zeros(()), torch.ones(1, dtype=torch.half), torch.zeros(2, dtype=torch.bool))");
  EXPECT_EQ(c.args[0].as_tensor().shape(), Shape({2, 3}));
  EXPECT_EQ(c.args[0].as_tensor().dtype(), DType::i64);
  EXPECT_EQ(c.args[0].as_tensor().at_flat(5), 1.0);
  EXPECT_EQ(c.args[1].as_tensor().shape(), Shape({4}));
  EXPECT_EQ(c.args[1].as_tensor().dtype(), DType::f32);
  EXPECT_EQ(c.args[2].as_tensor().shape(), Shape({2}));
  EXPECT_EQ(c.args[3].as_tensor().dim(), 0);
  EXPECT_EQ(c.args[4].as_tensor().dtype(), DType::f16);
  EXPECT_EQ(c.args[4].as_tensor().at_flat(0), 1.0);
  EXPECT_EQ(c.args[5].as_tensor().dtype(), DType::boolean);

  // torch.tensor infers dtypes as PyTorch does.
  c = parse_call(
      "F(torch.tensor([[1, 2], [3, 4]]), torch.tensor([1, 2.5]), torch.tensor([True, False]), "
      "torch.tensor(3), torch.tensor(-1.5), torch.tensor([]), torch.tensor([[], []]), "
      "torch.tensor([1.7, -1.7], dtype=torch.int32), torch.tensor([1, 0], dtype=torch.double), "
      "torch.tensor([[0.1]], dtype=torch.bfloat16, requires_grad=False))");
  const Tensor& ints = c.args[0].as_tensor();
  EXPECT_EQ(ints.shape(), Shape({2, 2}));
  EXPECT_EQ(ints.dtype(), DType::i64);
  EXPECT_EQ(ints.at_flat(3), 4.0);
  EXPECT_EQ(c.args[0].repr(), "torch.tensor([[1, 2], [3, 4]], dtype=torch.int64)");
  EXPECT_EQ(c.args[1].as_tensor().dtype(), DType::f32);
  EXPECT_EQ(c.args[1].as_tensor().at_flat(1), 2.5);
  EXPECT_EQ(c.args[2].as_tensor().dtype(), DType::boolean);
  EXPECT_EQ(c.args[2].as_tensor().at_flat(0), 1.0);
  EXPECT_EQ(c.args[2].repr(), "torch.tensor([True, False], dtype=torch.bool)");
  EXPECT_EQ(c.args[3].as_tensor().dim(), 0);
  EXPECT_EQ(c.args[3].as_tensor().dtype(), DType::i64);
  EXPECT_EQ(c.args[3].as_tensor().item(), 3.0);
  EXPECT_EQ(c.args[4].as_tensor().dtype(), DType::f32);
  EXPECT_EQ(c.args[4].as_tensor().item(), -1.5);
  EXPECT_EQ(c.args[5].as_tensor().shape(), Shape({0}));
  EXPECT_EQ(c.args[5].as_tensor().dtype(), DType::f32);
  EXPECT_EQ(c.args[6].as_tensor().shape(), Shape({2, 0}));
  EXPECT_EQ(c.args[7].as_tensor().dtype(), DType::i32);
  EXPECT_EQ(c.args[7].as_tensor().at_flat(0), 1.0);  // truncated toward zero
  EXPECT_EQ(c.args[7].as_tensor().at_flat(1), -1.0);
  EXPECT_EQ(c.args[8].as_tensor().dtype(), DType::f64);
  EXPECT_EQ(c.args[9].as_tensor().dtype(), DType::bf16);

  // repr of a tensor reads back to the same tensor.
  Call again = parse_call("F(" + c.args[1].repr() + ", " + c.args[4].repr() + ")");
  EXPECT_TRUE(again.args[0].as_tensor().bitwise_equal(c.args[1].as_tensor()));
  EXPECT_TRUE(again.args[1].as_tensor().bitwise_equal(c.args[4].as_tensor()));

  Locals locals{{"N", Value::integer(3)}};
  c = parse_call("F(torch.zeros(N, 2))", locals);
  EXPECT_EQ(c.args[0].as_tensor().shape(), Shape({3, 2}));
}

TEST(CallParser, TensorLiteralErrors) {
  EXPECT_EQ(call_error("F(torch.ones(0, 444, 444444444444444444))"),
            "column 3: torch.ones: tensor literal too large (more than 16777216 elements)");
  EXPECT_EQ(parse_call("F(torch.zeros(0, 5))").args[0].as_tensor().shape(), Shape({0, 5}));
  EXPECT_EQ(call_error("F(torch.zeros(-1))"),
            "column 3: torch.zeros: sizes must be non-negative ints, found -1");
  EXPECT_EQ(call_error("F(torch.zeros(1.5))"),
            "column 3: torch.zeros: sizes must be non-negative ints, found 1.5");
  EXPECT_EQ(call_error("F(torch.zeros(1,1,1,1,1,1,1,1,1))"),
            "column 3: torch.zeros: more than 8 dimensions");
  EXPECT_EQ(call_error("F(torch.ones(100000, 100000, 100000))"),
            "column 3: torch.ones: tensor literal too large (more than 16777216 elements)");
  EXPECT_EQ(
      call_error("F(torch.zeros(2, dtype=torch.complex64))"),
      "column 24: the attribute access 'torch.complex64' is not allowed in a constructor string");
  EXPECT_EQ(
      call_error("F(torch.zeros(2, dtype='float32'))"),
      "column 3: torch.zeros: dtype must be a torch dtype such as torch.float32, found 'float32'");
  EXPECT_EQ(call_error("F(torch.zeros(2, device='cuda'))"),
            "column 3: torch.zeros: unsupported argument 'device'");
  EXPECT_EQ(call_error("F(torch.zeros(2, size=(2,)))"),
            "column 3: torch.zeros: size given both positionally and by keyword");
  EXPECT_EQ(call_error("F(torch.tensor([[1, 2], [3]]))"),
            "column 3: torch.tensor: the nested sequences are not rectangular");
  EXPECT_EQ(call_error("F(torch.tensor([1, [2]]))"),
            "column 3: torch.tensor: the nested sequences are not rectangular");
  EXPECT_EQ(call_error("F(torch.tensor([[1], 2]))"),
            "column 3: torch.tensor: the nested sequences are not rectangular");
  EXPECT_EQ(call_error("F(torch.tensor(['a']))"),
            "column 3: torch.tensor: elements must be numbers or bools, found 'a'");
  EXPECT_EQ(call_error("F(torch.tensor(1, 2))"),
            "column 3: torch.tensor takes one data argument, found 2");
  EXPECT_EQ(call_error("F(torch.tensor([300], dtype=torch.uint8))"),
            "column 3: torch.tensor: 300 does not fit uint8");
  EXPECT_EQ(call_error("F(torch.tensor([1e30], dtype=torch.int64))"),
            "column 3: torch.tensor: 1e+30 does not fit int64");
  EXPECT_EQ(call_error("F(torch.tensor([9.3e18], dtype=torch.int64))"),
            "column 3: torch.tensor: 9.3e+18 does not fit int64");
  EXPECT_EQ(call_error("F(torch.tensor([1], dtype=torch.int64) + 1)"),
            "column 40: the operator '+' is not allowed in a constructor string");
  // Out-of-range floats become infinities, as IEEE rounding gives.
  Call c = parse_call("F(torch.tensor([1e300, -1e300, 3.4028235e38]))");
  EXPECT_EQ(c.args[0].as_tensor().at_flat(0), INFINITY);
  EXPECT_EQ(c.args[0].as_tensor().at_flat(1), -INFINITY);
  EXPECT_TRUE(std::isfinite(c.args[0].as_tensor().at_flat(2)));
}

TEST(CallParser, ArbitraryPythonIsRejected) {
  const std::pair<const char*, const char*> cases[] = {
      {"Conv2d(__import__('os'))",
       "column 8: a call of '__import__' is not allowed in a constructor string"},
      {"Conv2d(3, 4, x.y)",
       "column 14: the attribute access 'x.y' is not allowed in a constructor string"},
      {"Conv2d(1+2)", "column 9: the operator '+' is not allowed in a constructor string"},
      {"Conv2d(2*C)", "column 9: the operator '*' is not allowed in a constructor string"},
      {"Conv2d(2 ** 3)", "column 10: the operator '**' is not allowed in a constructor string"},
      {"Conv2d(a == b)", "column 10: the operator '==' is not allowed in a constructor string"},
      {"Conv2d(lambda x: x)",
       "column 8: the keyword 'lambda' is not allowed in a constructor string"},
      {"Conv2d(x if y else z)",
       "column 10: the keyword 'if' is not allowed in a constructor string"},
      {"Conv2d([x for x in y])",
       "column 11: the keyword 'for' is not allowed in a constructor string"},
      {"Conv2d(not x)", "column 8: the keyword 'not' is not allowed in a constructor string"},
      {"Conv2d(os.system('rm'))",
       "column 8: a call of 'os.system' is not allowed in a constructor string"},
      {"Conv2d(open ('f'))", "column 8: a call of 'open' is not allowed in a constructor string"},
      {"Conv2d(torch.load('x'))",
       "column 8: a call of 'torch.load' is not allowed in a constructor string"},
      {"Conv2d(x[0])", "column 9: subscripting is not allowed in a constructor string"},
      {"Conv2d((1, 2)[0])", "column 14: subscripting is not allowed in a constructor string"},
      {"Conv2d((1)(2))", "column 11: a call is not allowed in a constructor string"},
      {"Conv2d({'a': 1})",
       "column 8: a dict or set is not allowed in a constructor string (a '{...}' "
       "placeholder is accepted only as a keyword value)"},
      {"Conv2d(*args)", "column 8: argument unpacking is not allowed in a constructor string"},
      {"Conv2d(**kw)", "column 8: argument unpacking is not allowed in a constructor string"},
      {"Conv2d(x:=3)", "column 9: the operator ':=' is not allowed in a constructor string"},
      {"Conv2d(3).cuda()", "column 10: expected end of text after ')', found '.'"},
      {"import os", "column 1: the keyword 'import' is not allowed in a constructor string"},
      {"Conv2d(3, 4", "column 12: expected ',' or ')' after argument, found end of text"},
      {"Conv2d(3, (4, 5)", "column 17: expected ',' or ')' after argument, found end of text"},
      {"Conv2d(3, (4, 5", "column 11: '(' is not closed"},
      {"Conv2d(3, [4, 5)", "column 16: expected ',' or ']', found ')'"},
      {"Conv2d(3 4)", "column 10: expected ',' or ')' after argument, found '4'"},
      {"Conv2d(3,,4)", "column 10: expected a value, found ','"},
      {"Conv2d(,)", "column 8: expected a value, found ','"},
      {"Conv2d", "column 7: expected '(' after 'Conv2d', found end of text"},
      {"Conv2d 3", "column 8: expected '(' after 'Conv2d', found '3'"},
      {"", "column 1: expected a class name, found end of text"},
      {"3(1)", "column 1: expected a class name, found '3'"},
      {"torch.(1)", "column 7: expected a name after '.', found '('"},
      {"Conv2d(a=1, 2)", "column 13: positional argument follows keyword argument"},
      {"Conv2d(a=1, a=2)", "column 13: keyword argument 'a' repeated"},
      {"Conv2d(None=1)", "column 8: 'None' cannot be a keyword argument"},
      {"Conv2d(3, x=)", "column 13: expected a value, found ')'"},
      {"Conv2d(\xC3\xA9)", "column 8: expected a value, found byte 0xC3"},
      {"Conv2d('\xC3\xA9' 1)", "column 12: expected ',' or ')' after argument, found '1'"},
  };
  for (const auto& [text, message] : cases) {
    SCOPED_TRACE(text);
    EXPECT_EQ(call_error(text), message);
  }
}

TEST(CallParser, DeepNestingIsAnErrorNotACrash) {
  std::string deep = "F(" + std::string(100000, '(');
  EXPECT_NE(call_error(deep).find("nested deeper than 64 levels"), std::string::npos);
  std::string minus = "F(" + std::string(100000, '-') + "1)";
  EXPECT_NE(call_error(minus).find("nested deeper than 64 levels"), std::string::npos);
  std::string ok = "F(" + std::string(30, '[') + std::string(30, ']') + ")";
  EXPECT_NO_THROW(parse_call(ok));
}

TEST(IntExpr, Arithmetic) {
  Locals locals{{"C", Value::integer(16)}, {"N", Value::integer(-7)}};
  EXPECT_EQ(eval_int_expr("2*C", locals), 32);
  EXPECT_EQ(eval_int_expr("C//2 + 1", locals), 9);
  EXPECT_EQ(eval_int_expr(" 64 ", {}), 64);
  EXPECT_EQ(eval_int_expr("C / 4", locals), 4);
  EXPECT_EQ(eval_int_expr("-C + 2 * (3 - 1)", locals), -12);
  EXPECT_EQ(eval_int_expr("1 + 2 * 3", {}), 7);
  EXPECT_EQ(eval_int_expr("(1 + 2) * 3", {}), 9);
  EXPECT_EQ(eval_int_expr("10 - 3 - 2", {}), 5);
  // Python floors.
  EXPECT_EQ(eval_int_expr("N // 2", locals), -4);
  EXPECT_EQ(eval_int_expr("N % 3", locals), 2);
  EXPECT_EQ(eval_int_expr("7 % -3", {}), -2);
  EXPECT_EQ(eval_int_expr("-7 // -2", {}), 3);
  EXPECT_EQ(eval_int_expr("--3", {}), 3);
  EXPECT_EQ(eval_int_expr("-9223372036854775807 - 1", {}), INT64_MIN);
  EXPECT_EQ(eval_int_expr("(-9223372036854775807 - 1) % -1", {}), 0);
}

TEST(IntExpr, Errors) {
  Locals locals{{"C", Value::integer(16)}, {"F", Value::real(0.5)}, {"T", Value::boolean(true)}};
  EXPECT_EQ(expr_error("2*D", locals), "column 3: unknown name 'D' (locals: C, F, T)");
  EXPECT_EQ(expr_error("D", {}), "column 1: unknown name 'D' (no locals are defined)");
  EXPECT_EQ(expr_error("F*2", locals), "column 1: local 'F' is not an int (it is 0.5)");
  EXPECT_EQ(expr_error("T", locals), "column 1: local 'T' is not an int (it is True)");
  EXPECT_EQ(expr_error("7 / 2", {}),
            "column 3: 7 / 2 is not a whole number (use // to round down)");
  EXPECT_EQ(expr_error("C // 0", locals), "column 3: division by zero");
  EXPECT_EQ(expr_error("C % 0", locals), "column 3: division by zero");
  EXPECT_EQ(expr_error("9223372036854775807 + 1", {}), "column 21: integer overflow");
  EXPECT_EQ(expr_error("-9223372036854775807 - 2", {}), "column 22: integer overflow");
  EXPECT_EQ(expr_error("4611686018427387904 * 2", {}), "column 21: integer overflow");
  EXPECT_EQ(expr_error("(-9223372036854775807 - 1) // -1", {}), "column 28: integer overflow");
  EXPECT_EQ(expr_error("-(-9223372036854775807 - 1)", {}), "column 1: integer overflow");
  EXPECT_EQ(expr_error("9223372036854775808", {}),
            "column 1: integer literal out of range (int64)");
  EXPECT_EQ(expr_error("", {}), "column 1: expected a number, a name or '(', found end of text");
  EXPECT_EQ(expr_error("2 +", {}), "column 4: expected a number, a name or '(', found end of text");
  EXPECT_EQ(expr_error("2 ** 3", {}), "column 3: '**' is not supported in channel expressions");
  EXPECT_EQ(expr_error("(2 + 3", {}), "column 1: '(' is not closed");
  EXPECT_EQ(expr_error("(2 + 3]", {}), "column 7: expected ')' or an operator, found ']'");
  EXPECT_EQ(expr_error("2 3", {}),
            "column 3: expected an operator or end of expression, found '3'");
  EXPECT_EQ(expr_error("1.5", {}), "column 1: expected an integer, found '1.5'");
  EXPECT_EQ(expr_error("08", {}), "column 1: leading zeros in a decimal integer are not allowed");
  EXPECT_EQ(expr_error("C.x", locals),
            "column 2: expected an operator or end of expression, found '.'");
  std::string deep(10000, '(');
  EXPECT_NE(expr_error(deep).find("nested deeper than 64 levels"), std::string::npos);
}

}  // namespace
}  // namespace nnx
