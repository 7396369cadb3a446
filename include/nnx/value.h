// Values of constructor strings ("Conv2d(3, 8, kernel_size=(3, 3), padding=same)"), parsed and
// never evaluated, and the binding of a call's arguments to an op's PyTorch signature.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nnx/tensor.h"

namespace nnx {

class NNX_API Value {
 public:
  enum class Kind { none, boolean, integer, real, string, identifier, list, tuple, tensor };

  Value() = default;  // None
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value real(double d);
  static Value string(std::string s);
  static Value identifier(std::string s);  // bare name, e.g. same, nearest, reflect
  static Value list(std::vector<Value> items);
  static Value tuple(std::vector<Value> items);
  static Value tensor(Tensor t);

  Kind kind() const { return kind_; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_int() const { return kind_ == Kind::integer; }
  bool is_number() const { return kind_ == Kind::integer || kind_ == Kind::real; }
  bool is_text() const { return kind_ == Kind::string || kind_ == Kind::identifier; }
  bool is_sequence() const { return kind_ == Kind::list || kind_ == Kind::tuple; }
  bool is_tensor() const { return kind_ == Kind::tensor; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return i_; }
  double as_double() const { return kind_ == Kind::integer ? double(i_) : d_; }
  const std::string& as_text() const { return s_; }
  const std::vector<Value>& items() const { return items_; }
  const Tensor& as_tensor() const { return t_; }

  // Python-like repr: 3, 1e-05, True, None, 'text', same, (3, 3), [1, 2]
  std::string repr() const;
  static const char* kind_name(Kind kind);

 private:
  Kind kind_ = Kind::none;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<Value> items_;
  Tensor t_;
};

// A parsed constructor string.
struct NNX_API Call {
  std::string name;  // as written, with its dotted prefix: "torch.nn.Conv2d", "own_module.YOLO"
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
  std::string text;  // the source text

  // The class name without prefix: "Conv2d".
  std::string_view class_name() const;
  // The prefix without the class: "torch.nn", "" when there is none.
  std::string_view prefix() const;
};

// A call's arguments bound to a signature, as Python binds them. Throws Error(format) for too
// many positional arguments, an unknown or repeated keyword, or a missing required argument.
// Getters throw Error(format) naming the argument on a wrong type.
class NNX_API Args {
 public:
  struct Param {
    std::string_view name;
    bool required = false;
  };
  Args(const Call& call, std::initializer_list<Param> signature);

  const Call& call() const { return *call_; }
  // True if the call gave this argument (positionally or by keyword) and it is not None.
  bool has(std::string_view name) const;
  const Value* get(std::string_view name) const;  // nullptr if not given

  int64_t get_int(std::string_view name, int64_t fallback) const;
  double get_double(std::string_view name, double fallback) const;
  bool get_bool(std::string_view name, bool fallback) const;
  std::string get_text(std::string_view name, std::string fallback) const;
  // An int or a sequence of ints; a single int is repeated `n` times ("kernel_size=3" -> {3,3}).
  std::vector<int64_t> get_ints(std::string_view name, int n, std::vector<int64_t> fallback) const;
  std::vector<double> get_doubles(std::string_view name, int n, std::vector<double> fallback) const;

  [[noreturn]] void bad_type(std::string_view name, std::string_view expected) const;

 private:
  const Call* call_;
  std::vector<std::pair<std::string_view, const Value*>> bound_;
};

}  // namespace nnx
