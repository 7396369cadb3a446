// The JSON dialect of model descriptions: strict JSON plus NaN/Infinity/-Infinity (as Python's
// json reads), and as an extension // and # line comments, /* block */ comments and trailing
// commas. Every value remembers its line and column for error messages.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nnx::json {

struct Value {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool b = false;
  double number = 0;
  bool is_integer = false;  // written without fraction or exponent and fits int64
  int64_t integer = 0;
  std::string str;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;  // in document order
  int line = 0, column = 0;                           // 1-based position of the value

  // Defined in json.cpp, where Value is complete (a member vector of pairs holding Value).
  Value();
  ~Value();
  Value(const Value&);
  Value(Value&&) noexcept;
  Value& operator=(const Value&);
  Value& operator=(Value&&) noexcept;

  const Value* find(std::string_view key) const;  // object member or nullptr
  bool is_array() const { return kind == Kind::array; }
  bool is_object() const { return kind == Kind::object; }
  bool is_string() const { return kind == Kind::string; }
  bool is_int() const { return kind == Kind::number && is_integer; }
  const char* kind_name() const;
};

// Building values to dump.
Value null();
Value boolean(bool b);
Value integer(int64_t i);
Value number(double d);
Value string(std::string s);
Value array(std::vector<Value> items);
Value object(std::vector<std::pair<std::string, Value>> members);
Value integers(const std::vector<int64_t>& items);

// Throws Error(format) "FILE:LINE:COLUMN: message" on a syntax error; `name` is the file name
// used in messages. Duplicate object keys: the last one wins, as in Python.
Value parse(std::string_view text, const std::string& name);
Value parse_file(const std::string& path);

// Writes as Python's json.dump(indent=4) does (one member per line; NaN as NaN); a negative
// indent writes one line, as json.dumps() does.
std::string dump(const Value& value, int indent = 4);

}  // namespace nnx::json
