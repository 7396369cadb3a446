// Tests of constructor-string values: Python-like repr, and Args binding and typed getters
// with the messages an op's user sees.
#include "nnx/value.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "importer/call_parser.h"
#include "nnx/error.h"

namespace nnx {
namespace {

TEST(Value, ReprOfScalars) {
  EXPECT_EQ(Value().repr(), "None");
  EXPECT_TRUE(Value().is_none());
  EXPECT_EQ(Value::boolean(true).repr(), "True");
  EXPECT_EQ(Value::boolean(false).repr(), "False");
  EXPECT_EQ(Value::integer(-3).repr(), "-3");
  EXPECT_EQ(Value::integer(INT64_MIN).repr(), "-9223372036854775808");
  EXPECT_EQ(Value::string("same").repr(), "'same'");
  EXPECT_EQ(Value::identifier("same").repr(), "same");
}

TEST(Value, ReprOfFloatsIsPythons) {
  // Each pair: the value and Python's repr() of it.
  const std::pair<double, const char*> cases[] = {
      {1e-05, "1e-05"},
      {0.1, "0.1"},
      {1.0, "1.0"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {-0.5, "-0.5"},
      {0.0001, "0.0001"},
      {0.00012, "0.00012"},
      {1.5e-05, "1.5e-05"},
      {1e16, "1e+16"},
      {1e15, "1000000000000000.0"},
      {1234567890123456.7, "1234567890123456.8"},
      {12345678901234567.0, "1.2345678901234568e+16"},
      {1e100, "1e+100"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {5e-324, "5e-324"},
      {0.1 + 0.2, "0.30000000000000004"},
      {123.456, "123.456"},
      {2.5, "2.5"},
      {100.0, "100.0"},
      {std::numeric_limits<double>::infinity(), "inf"},
      {-std::numeric_limits<double>::infinity(), "-inf"},
      {std::numeric_limits<double>::quiet_NaN(), "nan"},
  };
  for (const auto& [value, text] : cases) {
    EXPECT_EQ(Value::real(value).repr(), text);
  }
}

TEST(Value, ReprOfStringsQuotesAsPython) {
  EXPECT_EQ(Value::string("it's").repr(), "\"it's\"");
  EXPECT_EQ(Value::string("say \"hi\"").repr(), "'say \"hi\"'");
  EXPECT_EQ(Value::string("both ' \"").repr(), "'both \\' \"'");
  EXPECT_EQ(Value::string("a\\b\n\t\x01").repr(), "'a\\\\b\\n\\t\\x01'");
  EXPECT_EQ(Value::string("\xC3\xA9").repr(), "'\xC3\xA9'");
}

TEST(Value, ReprOfSequences) {
  EXPECT_EQ(Value::tuple({Value::integer(3), Value::integer(3)}).repr(), "(3, 3)");
  EXPECT_EQ(Value::tuple({Value::integer(3)}).repr(), "(3,)");
  EXPECT_EQ(Value::tuple({}).repr(), "()");
  EXPECT_EQ(Value::list({Value::integer(1), Value::integer(2)}).repr(), "[1, 2]");
  EXPECT_EQ(Value::list({}).repr(), "[]");
  EXPECT_EQ(Value::list(
                {Value::list({Value::integer(3), Value::real(4)}), Value(), Value::identifier("x")})
                .repr(),
            "[[3, 4.0], None, x]");
}

TEST(Value, ReprOfTensors) {
  EXPECT_EQ(Value::tensor(Tensor::zeros({1, 5})).repr(),
            "torch.zeros((1, 5), dtype=torch.float32)");
  EXPECT_EQ(Value::tensor(Tensor::full({3}, 1.0, DType::i64)).repr(),
            "torch.ones((3,), dtype=torch.int64)");
  EXPECT_EQ(Value::tensor(Tensor::full({2}, 0.1, DType::f32)).repr(),
            "torch.tensor([0.1, 0.1], dtype=torch.float32)");
  EXPECT_EQ(Value::tensor(Tensor::scalar(2.0, DType::f64)).repr(),
            "torch.tensor(2.0, dtype=torch.float64)");
  EXPECT_EQ(Value::tensor(Tensor()).repr(), "<undefined tensor>");
}

TEST(Value, KindsAndAccessors) {
  EXPECT_STREQ(Value::kind_name(Value::Kind::none), "None");
  EXPECT_STREQ(Value::kind_name(Value::Kind::boolean), "bool");
  EXPECT_STREQ(Value::kind_name(Value::Kind::integer), "int");
  EXPECT_STREQ(Value::kind_name(Value::Kind::real), "float");
  EXPECT_STREQ(Value::kind_name(Value::Kind::string), "str");
  EXPECT_STREQ(Value::kind_name(Value::Kind::identifier), "identifier");
  EXPECT_STREQ(Value::kind_name(Value::Kind::list), "list");
  EXPECT_STREQ(Value::kind_name(Value::Kind::tuple), "tuple");
  EXPECT_STREQ(Value::kind_name(Value::Kind::tensor), "tensor");
  EXPECT_EQ(Value::integer(4).as_double(), 4.0);
  EXPECT_TRUE(Value::integer(4).is_number());
  EXPECT_TRUE(Value::identifier("a").is_text());
  EXPECT_TRUE(Value::tuple({}).is_sequence());
}

TEST(Call, NameParts) {
  Call c;
  c.name = "torch.nn.modules.conv.Conv2d";
  EXPECT_EQ(c.class_name(), "Conv2d");
  EXPECT_EQ(c.prefix(), "torch.nn.modules.conv");
  c.name = "ReLU";
  EXPECT_EQ(c.class_name(), "ReLU");
  EXPECT_EQ(c.prefix(), "");
}

// The error message Args' constructor throws for `text` ("" if none).
std::string bind_error(const std::string& text, std::initializer_list<Args::Param> signature) {
  Call call = parse_call(text);
  try {
    Args args(call, signature);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    return e.message();
  }
  return "";
}

#define CONV_SIGNATURE                                                                       \
  {                                                                                          \
    {"in_channels", true}, {"out_channels", true}, {"kernel_size", true}, {"stride", false}, \
        {"padding", false}, {"dilation", false}, {"groups", false}, {"bias", false},         \
        {"padding_mode", false},                                                             \
  }

TEST(Args, BindsAsPython) {
  Call call = parse_call("Conv2d(3, 8, 3, padding=same, bias=False, stride=None)");
  Args args(call, CONV_SIGNATURE);
  EXPECT_EQ(&args.call(), &call);
  EXPECT_EQ(args.get_int("in_channels", 0), 3);
  EXPECT_EQ(args.get_int("out_channels", 0), 8);
  EXPECT_EQ(args.get_ints("kernel_size", 2, {}), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(args.get_text("padding", "zeros"), "same");
  EXPECT_FALSE(args.get_bool("bias", true));
  // None given explicitly counts as absent.
  EXPECT_FALSE(args.has("stride"));
  EXPECT_EQ(args.get("stride"), nullptr);
  EXPECT_EQ(args.get_ints("stride", 2, {1, 1}), (std::vector<int64_t>{1, 1}));
  EXPECT_FALSE(args.has("groups"));
  EXPECT_EQ(args.get_int("groups", 1), 1);
  EXPECT_TRUE(args.has("padding"));
  EXPECT_EQ(args.get_text("padding_mode", "zeros"), "zeros");
  ASSERT_NE(args.get("in_channels"), nullptr);
  EXPECT_EQ(args.get("in_channels")->as_int(), 3);
}

TEST(Args, AllByKeyword) {
  Call call =
      parse_call("Conv2d(kernel_size=(3, 5), out_channels=4, in_channels=2, stride=[2, 1])");
  Args args(call, CONV_SIGNATURE);
  EXPECT_EQ(args.get_int("in_channels", 0), 2);
  EXPECT_EQ(args.get_ints("kernel_size", 2, {}), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(args.get_ints("stride", 2, {}), (std::vector<int64_t>{2, 1}));
}

TEST(Args, BindingErrors) {
  EXPECT_EQ(bind_error("Conv2d(3, 8, 3, foo=1)", CONV_SIGNATURE),
            "unknown keyword argument 'foo' (accepted: in_channels, out_channels, kernel_size, "
            "stride, padding, dilation, groups, bias, padding_mode)");
  EXPECT_EQ(bind_error("ReLU(inplace=True)", {}),
            "unknown keyword argument 'inplace' (ReLU takes no arguments)");
  EXPECT_EQ(bind_error("ReLU(True)", {}),
            "ReLU() takes at most 0 positional arguments but 1 were given");
  EXPECT_EQ(bind_error("Flatten(1, 2, 3)", {{"start_dim"}, {"end_dim"}}),
            "Flatten() takes at most 2 positional arguments but 3 were given");
  EXPECT_EQ(bind_error("Softmax(1, 2)", {{"dim"}}),
            "Softmax() takes at most 1 positional argument but 2 were given");
  EXPECT_EQ(bind_error("Conv2d(3, 8, 3, in_channels=3)", CONV_SIGNATURE),
            "argument 'in_channels' given twice (positionally and by keyword)");
  EXPECT_EQ(bind_error("Conv2d(out_channels=8, kernel_size=3)", CONV_SIGNATURE),
            "missing required argument 'in_channels'");
  EXPECT_EQ(bind_error("Conv2d(3, kernel_size=3)", CONV_SIGNATURE),
            "missing required argument 'out_channels'");
  EXPECT_EQ(bind_error("Conv2d(3, None, 3)", CONV_SIGNATURE),
            "argument 'out_channels' is required and cannot be None");
  // A repeated keyword in a hand-built call (the parser already refuses it in text).
  Call call;
  call.name = "F";
  call.kwargs = {{"a", Value::integer(1)}, {"a", Value::integer(2)}};
  try {
    Args args(call, {{"a"}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "keyword argument 'a' given twice");
  }
}

// The message of the getter's Error(format).
template <class Fn>
std::string getter_error(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    return e.message();
  }
  return "";
}

TEST(Args, TypedGetters) {
  Call call = parse_call(
      "F(i=3, f=0.5, b=True, s='abc', n=nearest, t=(1, 2), l=[1.5, 2], one=(4,), big=(1, 2, 3), "
      "fi=1.0, mixed=(1, 'x'))");
  Args args(call, {{"i"},
                   {"f"},
                   {"b"},
                   {"s"},
                   {"n"},
                   {"t"},
                   {"l"},
                   {"one"},
                   {"big"},
                   {"fi"},
                   {"mixed"},
                   {"absent"}});
  EXPECT_EQ(args.get_double("i", 0), 3.0);  // an int is a number
  EXPECT_EQ(args.get_double("f", 0), 0.5);
  EXPECT_TRUE(args.get_bool("b", false));
  EXPECT_EQ(args.get_text("s", ""), "abc");
  EXPECT_EQ(args.get_text("n", ""), "nearest");
  EXPECT_EQ(args.get_ints("i", 3, {}), (std::vector<int64_t>{3, 3, 3}));
  EXPECT_EQ(args.get_ints("t", 2, {}), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(args.get_ints("big", 0, {}), (std::vector<int64_t>{1, 2, 3}));  // n = 0: any length
  EXPECT_EQ(args.get_ints("one", 1, {}), (std::vector<int64_t>{4}));
  EXPECT_EQ(args.get_doubles("l", 2, {}), (std::vector<double>{1.5, 2.0}));
  EXPECT_EQ(args.get_doubles("f", 2, {}), (std::vector<double>{0.5, 0.5}));
  EXPECT_EQ(args.get_doubles("absent", 2, {7, 8}), (std::vector<double>{7, 8}));
  EXPECT_EQ(args.get_text("absent", "dflt"), "dflt");
  EXPECT_TRUE(args.get_bool("absent", true));

  EXPECT_EQ(getter_error([&] { args.get_int("f", 0); }),
            "argument 'f': expected an int, found 0.5");
  EXPECT_EQ(getter_error([&] { args.get_int("fi", 0); }),
            "argument 'fi': expected an int, found 1.0");
  EXPECT_EQ(getter_error([&] { args.get_int("b", 0); }),
            "argument 'b': expected an int, found True");
  EXPECT_EQ(getter_error([&] { args.get_int("s", 0); }),
            "argument 's': expected an int, found 'abc'");
  EXPECT_EQ(getter_error([&] { args.get_double("b", 0); }),
            "argument 'b': expected a number, found True");
  EXPECT_EQ(getter_error([&] { args.get_double("n", 0); }),
            "argument 'n': expected a number, found 'nearest'");
  EXPECT_EQ(getter_error([&] { args.get_bool("i", false); }),
            "argument 'i': expected True or False, found 3");
  EXPECT_EQ(getter_error([&] { args.get_text("i", ""); }),
            "argument 'i': expected a string, found 3");
  EXPECT_EQ(getter_error([&] { args.get_ints("s", 2, {}); }),
            "argument 's': expected an int or a tuple of 2 ints, found 'abc'");
  EXPECT_EQ(getter_error([&] { args.get_ints("big", 2, {}); }),
            "argument 'big': expected an int or a tuple of 2 ints, found (1, 2, 3)");
  EXPECT_EQ(getter_error([&] { args.get_ints("one", 2, {}); }),
            "argument 'one': expected an int or a tuple of 2 ints, found (4,)");
  EXPECT_EQ(getter_error([&] { args.get_ints("l", 2, {}); }),
            "argument 'l': expected an int or a tuple of 2 ints, found [1.5, 2]");
  EXPECT_EQ(getter_error([&] { args.get_doubles("mixed", 2, {}); }),
            "argument 'mixed': expected a number or a tuple of 2 numbers, found (1, 'x')");
  EXPECT_EQ(getter_error([&] { args.bad_type("t", "a kernel size"); }),
            "argument 't': expected a kernel size, found (1, 2)");

  try {
    args.get("not_in_signature");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
  }
}

}  // namespace
}  // namespace nnx
