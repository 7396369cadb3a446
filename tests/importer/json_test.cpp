// Tests of the JSON dialect reader and writer: the seed README's commented example, the
// original package's tmp.json (read, and written back byte for byte), and error positions.
#include "importer/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "importer/call_parser.h"
#include "nnx/error.h"

namespace nnx::json {
namespace {

// The example of /work/shared/spec/seed-README.md, verbatim (comments, trailing commas).
const char* const kSeedExample = R"json({
  "auto_connect": true,
  "connections":[
      [0,0,9,0] // define source for second branch
      // [src_node,src_output_idx, dst_node, dst_input_idx]
      // node '0' is input of network
  ],
  "outputs": [
    // [src_node,src_output_idx, network_output_idx]
    [-1, 0, 0], // negative indexing is also available
    [ 4, 0, 1] 
    
  ],
    "inputs_channels": [3],
    "outputs_channels": [25],
    "layers": [
      ["torch.nn.Conv2d(3,64,3,padding=1)", 64],
      ["torch.nn.BatchNorm2d(64)"],
      ["torch.nn.ReLU()"],
      ["torch.nn.MaxPool2d(kernel_size=2,stride=2)"],
      
      ["torch.nn.Conv2d(64,128,3,padding=1)", 128],
      ["torch.nn.BatchNorm2d(128)"],
      ["torch.nn.ReLU()"],
      ["torch.nn.MaxPool2d(kernel_size=2,stride=2)"],
      
      # second branch
      ["torch.nn.Conv2d(3,128,7, padding=3)", 128],
      ["torch.nn.MaxPool2d(kernel_size=4,stride=4)"],
      
      // there are allowed multi input and multi output module
      // some of them are predefined
      
      ["nn_executor.models.Add(num=2)", 
       [[128,128], [128]], // inputs channels, outputs channel(s)
       [[-3,0], [-1,0]] ], // connection to first and second input
      
      ["torch.nn.Conv2d(128,256,3,padding=1)", 128],
      ["torch.nn.BatchNorm2d(128)"],
      ["torch.nn.ReLU()"],
      ["torch.nn.MaxPool2d(kernel_size=2,stride=2)"],
      
      ["torch.nn.Conv2d(128,15,1,padding=0)", 15],
      
      
      // use own modules
      ["own_module.YOLO(anchors=[[3,4]])", [[15],[15]], [[-1,0],
                                                         [0,0] // <- to get input size
                                                         ]],
    ]
  }
)json";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::string kTmpJson = std::string(NNX_SHARED_DIR) + "/fixtures/original-package/tmp.json";

// The message of the Error(format) that parsing `text` throws ("" if none).
std::string parse_error(std::string_view text) {
  try {
    parse(text, "f.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    return e.message();
  }
  return "";
}

// Every constructor string of a description's layer list.
std::vector<std::string> constructor_strings(const Value& layers) {
  std::vector<std::string> out;
  for (const Value& layer : layers.array) {
    if (layer.is_string()) {
      out.push_back(layer.str);
      continue;
    }
    for (const Value& item : layer.array) {
      if (item.is_string()) {
        out.push_back(item.str);
        break;  // the module name of [IDX, REPR, CH, MODULE] is not a call
      }
    }
  }
  return out;
}

TEST(Json, SeedExampleParses) {
  Value doc = parse(kSeedExample, "seed.json");
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.line, 1);
  EXPECT_EQ(doc.column, 1);
  const Value* auto_connect = doc.find("auto_connect");
  ASSERT_NE(auto_connect, nullptr);
  EXPECT_EQ(auto_connect->kind, Value::Kind::boolean);
  EXPECT_TRUE(auto_connect->b);

  const Value* connections = doc.find("connections");
  ASSERT_NE(connections, nullptr);
  ASSERT_EQ(connections->array.size(), 1u);
  ASSERT_EQ(connections->array[0].array.size(), 4u);
  EXPECT_EQ(connections->array[0].array[2].integer, 9);

  const Value* outputs = doc.find("outputs");
  ASSERT_NE(outputs, nullptr);
  ASSERT_EQ(outputs->array.size(), 2u);
  EXPECT_TRUE(outputs->array[0].array[0].is_int());
  EXPECT_EQ(outputs->array[0].array[0].integer, -1);
  EXPECT_EQ(outputs->array[1].array[0].integer, 4);

  const Value* layers = doc.find("layers");
  ASSERT_NE(layers, nullptr);
  ASSERT_EQ(layers->array.size(), 17u);
  EXPECT_EQ(layers->array[0].array[0].str, "torch.nn.Conv2d(3,64,3,padding=1)");
  EXPECT_EQ(layers->array[0].array[1].integer, 64);
  EXPECT_EQ(layers->array[0].line, 17);
  EXPECT_EQ(layers->array[0].column, 7);
  const Value& add = layers->array[10];
  EXPECT_EQ(add.array[0].str, "nn_executor.models.Add(num=2)");
  EXPECT_EQ(add.array[2].array[0].array[0].integer, -3);
  const Value& yolo = layers->array[16];
  EXPECT_EQ(yolo.array[0].str, "own_module.YOLO(anchors=[[3,4]])");
  ASSERT_EQ(yolo.array[2].array.size(), 2u);  // the trailing-comment element is still there
  EXPECT_EQ(yolo.array[2].array[1].line, 48);
  EXPECT_EQ(yolo.array[2].array[1].column, 58);

  for (const std::string& text : constructor_strings(*layers)) {
    SCOPED_TRACE(text);
    EXPECT_NO_THROW(parse_call(text));
  }
}

TEST(Json, TmpJsonParsesAndDumpsByteForByte) {
  std::string text = read_text(kTmpJson);
  ASSERT_FALSE(text.empty()) << kTmpJson;
  Value doc = parse_file(kTmpJson);
  ASSERT_TRUE(doc.is_object());
  const Value* layers = doc.find("unique_layers_recreators");
  ASSERT_NE(layers, nullptr);
  ASSERT_EQ(layers->array.size(), 13u);
  EXPECT_EQ(layers->array[0].array[1].str,
            "Conv2d(3, 5, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
  EXPECT_EQ(layers->array[0].array[3].str, "torch.nn.modules.conv");
  EXPECT_EQ(dump(doc), text);
  for (const std::string& repr : constructor_strings(*layers)) {
    SCOPED_TRACE(repr);
    EXPECT_NO_THROW(parse_call(repr));
  }
}

TEST(Json, ParseFileMissingIsIoErrorNamingPath) {
  try {
    parse_file("/nonexistent/dir/arch.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(e.message().find("/nonexistent/dir/arch.json"), std::string::npos) << e.message();
  }
}

TEST(Json, ParseFileOfADirectoryIsIoError) {
  try {
    parse_file(NNX_SHARED_DIR);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(e.message().find("directory"), std::string::npos) << e.message();
  }
}

TEST(Json, ErrorsNameTheFile) {
  try {
    parse("[1,", "models/arch.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message().rfind("models/arch.json:1:4: ", 0), 0u) << e.message();
  }
}

TEST(Json, ScalarsAndNumbers) {
  EXPECT_EQ(parse("null", "x").kind, Value::Kind::null);
  EXPECT_TRUE(parse(" true ", "x").b);
  EXPECT_FALSE(parse("false", "x").b);
  Value i = parse("-42", "x");
  EXPECT_TRUE(i.is_int());
  EXPECT_EQ(i.integer, -42);
  EXPECT_EQ(i.number, -42.0);
  Value big = parse("9223372036854775807", "x");
  EXPECT_TRUE(big.is_int());
  EXPECT_EQ(big.integer, INT64_MAX);
  Value min = parse("-9223372036854775808", "x");
  EXPECT_TRUE(min.is_int());
  EXPECT_EQ(min.integer, INT64_MIN);
  Value too_big = parse("9223372036854775808", "x");
  EXPECT_FALSE(too_big.is_integer);
  EXPECT_EQ(too_big.number, 9223372036854775808.0);
  Value f = parse("1.5e-3", "x");
  EXPECT_FALSE(f.is_integer);
  EXPECT_DOUBLE_EQ(f.number, 0.0015);
  EXPECT_FALSE(parse("1.0", "x").is_integer);
  EXPECT_FALSE(parse("1E2", "x").is_integer);
  EXPECT_EQ(parse("1E+2", "x").number, 100.0);
  EXPECT_EQ(parse("-0", "x").integer, 0);
  EXPECT_TRUE(std::isnan(parse("NaN", "x").number));
  EXPECT_EQ(parse("Infinity", "x").number, INFINITY);
  EXPECT_EQ(parse("-Infinity", "x").number, -INFINITY);
  // As Python's float(): overflow is infinity, underflow zero.
  EXPECT_EQ(parse("1e400", "x").number, INFINITY);
  EXPECT_EQ(parse("-1e400", "x").number, -INFINITY);
  EXPECT_EQ(parse("1e-400", "x").number, 0.0);
  EXPECT_EQ(parse("123456789e-500", "x").number, 0.0);
  EXPECT_EQ(parse("0.000001e310", "x").number, 1e304);
  EXPECT_EQ(parse("5e-324", "x").number, 5e-324);
}

TEST(Json, Strings) {
  EXPECT_EQ(parse(R"("a\"b\\c\/d\b\f\n\r\t")", "x").str, "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(parse(R"("\u0041\u00e9\u20AC")", "x").str, "A\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(parse(R"("\ud83d\ude00")", "x").str, "\xF0\x9F\x98\x80");  // a surrogate pair
  EXPECT_EQ(parse("\"\xC3\xA9\xF0\x9F\x98\x80\"", "x").str, "\xC3\xA9\xF0\x9F\x98\x80");
  // Lone surrogates survive a round trip, as in Python.
  Value lone = parse(R"(["\ud800", "\udc00x", "\ud800\u0041"])", "x");
  EXPECT_EQ(dump(lone, -1), R"(["\ud800", "\udc00x", "\ud800A"])");
}

TEST(Json, CommentsAndCommasOnlyOutsideStrings) {
  Value v = parse(R"({
    "a": "// not a comment", // a comment
    "b": "# not either", # a comment
    "c": "/* nor this */", /* a
    block comment */ "d": [1, 2, 3,],
  })",
                  "x");
  EXPECT_EQ(v.find("a")->str, "// not a comment");
  EXPECT_EQ(v.find("b")->str, "# not either");
  EXPECT_EQ(v.find("c")->str, "/* nor this */");
  EXPECT_EQ(v.find("d")->array.size(), 3u);
  EXPECT_EQ(v.find("d")->line, 5);
  EXPECT_EQ(v.find("d")->column, 27);
  EXPECT_EQ(parse("[1 /* x */ , 2 // y\n]", "x").array.size(), 2u);
  EXPECT_EQ(parse("// only\n[] # end", "x").array.size(), 0u);
  EXPECT_EQ(parse("{}", "x").object.size(), 0u);
}

TEST(Json, DuplicateKeysLastWinsInFirstPosition) {
  Value v = parse(R"({"a": 1, "b": 2, "a": 3})", "x");
  ASSERT_EQ(v.object.size(), 2u);
  EXPECT_EQ(v.object[0].first, "a");
  EXPECT_EQ(v.object[0].second.integer, 3);
  EXPECT_EQ(v.find("a")->integer, 3);
  EXPECT_EQ(v.find("zz"), nullptr);
}

TEST(Json, PositionsCountCharactersNotBytes) {
  Value v = parse("[\"\xC3\xA9\xC3\xA9\", 7]", "x");
  EXPECT_EQ(v.array[1].column, 8);
  EXPECT_EQ(parse_error("[\"\xC3\xA9\" 7]"),
            "f.json:1:6: expected ',' or ']' after array element, found '7'");
}

struct ErrorCase {
  const char* text;
  const char* message;
};

TEST(Json, SyntaxErrorsNameLineAndColumn) {
  const ErrorCase cases[] = {
      {"", "f.json:1:1: expected a value, found end of input"},
      {"  // nothing\n", "f.json:2:1: expected a value, found end of input"},
      {"[1, 2}", "f.json:1:6: expected ',' or ']' after array element, found '}'"},
      {"[1 2]", "f.json:1:4: expected ',' or ']' after array element, found '2'"},
      {"[1,\n  2",
       "f.json:2:4: expected ',' or ']' after array element, found end of input (the array "
       "opened at 1:1 is not closed)"},
      {"[1,,]", "f.json:1:4: expected a value, found ','"},
      {"[,]", "f.json:1:2: expected a value, found ','"},
      {"{\"a\": 1]", "f.json:1:8: expected ',' or '}' after object member, found ']'"},
      {"{\"a\": 1",
       "f.json:1:8: expected ',' or '}' after object member, found end of input (the "
       "object opened at 1:1 is not closed)"},
      {"{\"a\" 1}", "f.json:1:6: expected ':' after object key, found '1'"},
      {"{a: 1}", "f.json:1:2: expected a key in double quotes, found 'a'"},
      {"{'a': 1}", "f.json:1:2: expected a key in double quotes, found '''"},
      {"{,}", "f.json:1:2: expected a key in double quotes, found ','"},
      {"{\"a\":}", "f.json:1:6: expected a value, found '}'"},
      {"[1] 2", "f.json:1:5: expected end of input after the top-level value, found '2'"},
      {"[1]]", "f.json:1:4: expected end of input after the top-level value, found ']'"},
      {"tru", "f.json:1:1: expected a value, found 'tru'"},
      {"[True]", "f.json:1:2: expected a value, found 'True'"},
      {"[nan]", "f.json:1:2: expected a value, found 'nan'"},
      {"[-]", "f.json:1:3: invalid number: expected a digit after '-', found ']'"},
      {"[-x]", "f.json:1:3: invalid number: expected a digit after '-', found 'x'"},
      {"[01]", "f.json:1:2: invalid number: leading zeros are not allowed"},
      {"[-01]", "f.json:1:2: invalid number: leading zeros are not allowed"},
      {"[1.]", "f.json:1:4: invalid number: expected a digit after '.', found ']'"},
      {"[.5]", "f.json:1:2: expected a value, found '.'"},
      {"[1e]", "f.json:1:4: invalid number: expected a digit in the exponent, found ']'"},
      {"[1e+]", "f.json:1:5: invalid number: expected a digit in the exponent, found ']'"},
      {"[+1]", "f.json:1:2: expected a value, found '+'"},
      {"[0x10]", "f.json:1:3: expected ',' or ']' after array element, found 'x10'"},
      {"\n\n  \"abc", "f.json:3:3: unterminated string"},
      {"\"ab\\", "f.json:1:1: unterminated string"},
      {"[\"a\nb\"]",
       "f.json:1:4: invalid control character U+000A in string (write it as an escape "
       "such as \\n)"},
      {"[\"a\tb\"]",
       "f.json:1:4: invalid control character U+0009 in string (write it as an escape "
       "such as \\n)"},
      {"[\"\\x41\"]", "f.json:1:3: invalid escape '\\x' in string"},
      {"[\"\\u12\"]", "f.json:1:3: invalid \\u escape: expected 4 hex digits"},
      {"[\"\\u12G4\"]", "f.json:1:3: invalid \\u escape: expected 4 hex digits"},
      {"[\"\\ud800\\u12\"]", "f.json:1:9: invalid \\u escape: expected 4 hex digits"},
      {"[\"\xFF\"]", "f.json:1:3: invalid UTF-8 in string (byte 0xFF)"},
      {"[\"\xC3\"]", "f.json:1:3: invalid UTF-8 in string (byte 0xC3)"},
      {"[\"\xED\xA0\x80\"]", "f.json:1:3: invalid UTF-8 in string (byte 0xED)"},  // raw surrogate
      {"[\"\xC0\xAF\"]", "f.json:1:3: invalid UTF-8 in string (byte 0xC0)"},      // overlong
      {"[1, /* open\n\n", "f.json:1:5: unterminated /* comment"},
      {"[1 / 2]", "f.json:1:4: expected ',' or ']' after array element, found '/'"},
      {"\xEF\xBB\xBF[1,}", "f.json:1:4: expected a value, found '}'"},  // after a BOM
      {"[\x01]", "f.json:1:2: expected a value, found character U+0001"},
      {"[\xC3\xA9]", "f.json:1:2: expected a value, found character U+00E9"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(parse_error(c.text), c.message);
  }
}

TEST(Json, DepthLimitIsAnErrorNotACrash) {
  std::string ok(500, '[');
  ok += std::string(500, ']');
  EXPECT_NO_THROW(parse(ok, "x"));
  std::string deep(100000, '[');
  EXPECT_EQ(parse_error(deep), "f.json:1:513: arrays and objects nested deeper than 512 levels");
  std::string objects;
  for (int k = 0; k < 1000; ++k) objects += "{\"a\":";
  EXPECT_NE(parse_error(objects).find("nested deeper than 512"), std::string::npos);
}

TEST(Json, DumpMatchesPythonJsonDump) {
  // Python: json.dumps(obj, indent=4) of the same data.
  Value v = parse(R"({"a": [1, 2.5, -0.0, 1e-05, 1e16, 1e15, 0.1, 123456789.125, NaN, Infinity,
                           -Infinity, true, false, null],
                     "empty": [], "obj": {}, "nested": {"k": [[]]},
                     "s": "\u00e9\ud83d\ude00\u0001\u007f\"\\\n\t/"})",
                  "x");
  const char* expected = R"({
    "a": [
        1,
        2.5,
        -0.0,
        1e-05,
        1e+16,
        1000000000000000.0,
        0.1,
        123456789.125,
        NaN,
        Infinity,
        -Infinity,
        true,
        false,
        null
    ],
    "empty": [],
    "obj": {},
    "nested": {
        "k": [
            []
        ]
    },
    "s": "\u00e9\ud83d\ude00\u0001\u007f\"\\\n\t/"
})";
  EXPECT_EQ(dump(v), expected);
  EXPECT_EQ(dump(v, 2).substr(0, 12), "{\n  \"a\": [\n ");
  // Negative indent: one line, as json.dumps() without indent.
  EXPECT_EQ(dump(parse(R"({"a": [1, {"b": null}], "c": []})", "x"), -1),
            R"({"a": [1, {"b": null}], "c": []})");
  EXPECT_EQ(dump(parse("3", "x")), "3");
  EXPECT_EQ(dump(parse("\"x\"", "x")), "\"x\"");
}

TEST(Json, DumpThenParseRoundTrips) {
  Value v = parse(kSeedExample, "seed.json");
  std::string once = dump(v);
  EXPECT_EQ(dump(parse(once, "again")), once);
}

TEST(Json, KindNames) {
  EXPECT_STREQ(parse("1", "x").kind_name(), "integer");
  EXPECT_STREQ(parse("1.5", "x").kind_name(), "number");
  EXPECT_STREQ(parse("[]", "x").kind_name(), "array");
  EXPECT_STREQ(parse("{}", "x").kind_name(), "object");
  EXPECT_STREQ(parse("\"\"", "x").kind_name(), "string");
  EXPECT_STREQ(parse("null", "x").kind_name(), "null");
  EXPECT_STREQ(parse("true", "x").kind_name(), "boolean");
}

}  // namespace
}  // namespace nnx::json
