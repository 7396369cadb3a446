// Constructor-string values: Python-like repr (so messages and written files read as PyTorch
// prints them) and Args, the binding of a call's arguments to an op's signature.
#include "nnx/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

#include "nnx/error.h"

namespace nnx {
namespace {

// Formats the shortest round-trip digits the way Python's repr(float) does: positional notation
// when the decimal exponent is in [-4, 16), scientific with a two-digit exponent otherwise.
template <class F>
std::string python_float_repr(F value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string_view sci(buf, size_t(res.ptr - buf));  // "-1.2345e-05"
  std::string out;
  if (!sci.empty() && sci[0] == '-') {
    out += '-';
    sci.remove_prefix(1);
  }
  size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c != '.') digits += c;
  }
  int exponent = 0;
  std::string_view exp_text = sci.substr(e + 1);
  if (!exp_text.empty() && exp_text[0] == '+') exp_text.remove_prefix(1);
  std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exponent);
  int point = exponent + 1;  // digits before the decimal point
  int n = int(digits.size());
  if (point > -4 && point <= 16) {
    if (point <= 0) {
      out += "0.";
      out.append(size_t(-point), '0');
      out += digits;
    } else if (point >= n) {
      out += digits;
      out.append(size_t(point - n), '0');
      out += ".0";
    } else {
      out += digits.substr(0, size_t(point));
      out += '.';
      out += digits.substr(size_t(point));
    }
    return out;
  }
  out += digits[0];
  if (n > 1) {
    out += '.';
    out += digits.substr(1);
  }
  out += exponent < 0 ? "e-" : "e+";
  int mag = exponent < 0 ? -exponent : exponent;
  if (mag < 10) out += '0';
  out += std::to_string(mag);
  return out;
}

std::string quote_python(const std::string& s) {
  // Python prefers single quotes and switches to double ones to avoid escaping a quote.
  char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\' || c == q) {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  out += q;
  return out;
}

std::string shape_tuple(const Shape& shape) {
  std::vector<Value> dims;
  for (int64_t d : shape) dims.push_back(Value::integer(d));
  return Value::tuple(std::move(dims)).repr();
}

// Element i of a contiguous CPU tensor, read straight from its bytes (Tensor::at_flat costs a
// shape walk per element, too slow for scanning a large literal).
double load(const Tensor& t, int64_t i) {
  const char* p = static_cast<const char*>(t.raw_data()) + size_t(i) * t.element_size();
  auto read = [p](auto v) {
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  switch (t.dtype()) {
    case DType::f32:
      return read(float());
    case DType::f64:
      return read(double());
    case DType::f16:
      return half_to_float(read(uint16_t()));
    case DType::bf16:
      return bf16_to_float(read(uint16_t()));
    case DType::i64:
      return double(read(int64_t()));
    case DType::i32:
      return read(int32_t());
    case DType::i16:
      return read(int16_t());
    case DType::i8:
      return read(int8_t());
    case DType::u8:
      return read(uint8_t());
    case DType::boolean:
      return read(uint8_t()) != 0;
  }
  return 0;
}

std::string element_repr(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::i64: {
      int64_t v;
      std::memcpy(&v, static_cast<const char*>(t.raw_data()) + size_t(i) * 8, 8);
      return std::to_string(v);
    }
    case DType::boolean:
      return load(t, i) != 0 ? "True" : "False";
    case DType::f64:
      return python_float_repr(load(t, i));
    case DType::f32:
    case DType::f16:
    case DType::bf16:
      // Shortest digits of the float itself: they parse back to the same bits.
      return python_float_repr(float(load(t, i)));
    default:
      return std::to_string(int64_t(load(t, i)));
  }
}

void nested_repr(const Tensor& t, int dim, int64_t& index, std::string& out) {
  if (dim == t.dim()) {
    out += element_repr(t, index++);
    return;
  }
  out += '[';
  for (int64_t k = 0; k < t.size(dim); ++k) {
    if (k) out += ", ";
    nested_repr(t, dim + 1, index, out);
  }
  out += ']';
}

// A literal that parse_call reads back to an equal tensor.
std::string tensor_repr(const Tensor& tensor) {
  if (!tensor.defined()) return "<undefined tensor>";
  Tensor t = tensor.to(Device::cpu()).contiguous();
  std::string dtype = "torch." + std::string(dtype_name(t.dtype()));
  if (t.dim() > 0) {
    bool zeros = true, ones = true;
    for (int64_t i = 0; i < t.numel() && (zeros || ones); ++i) {
      double v = load(t, i);
      zeros = zeros && v == 0 && !std::signbit(v);
      ones = ones && v == 1;
    }
    if (zeros || ones) {
      return std::string(zeros ? "torch.zeros(" : "torch.ones(") + shape_tuple(t.shape()) +
             ", dtype=" + dtype + ")";
    }
  }
  std::string out = "torch.tensor(";
  int64_t index = 0;
  nested_repr(t, 0, index, out);
  return out + ", dtype=" + dtype + ")";
}

// A value as an error message shows it: text always quoted, long values cut.
std::string found_text(const Value& v) {
  std::string text = v.kind() == Value::Kind::identifier ? quote_python(v.as_text()) : v.repr();
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  return text;
}

}  // namespace

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::boolean;
  v.b_ = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::integer;
  v.i_ = i;
  return v;
}

Value Value::real(double d) {
  Value v;
  v.kind_ = Kind::real;
  v.d_ = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::string;
  v.s_ = std::move(s);
  return v;
}

Value Value::identifier(std::string s) {
  Value v;
  v.kind_ = Kind::identifier;
  v.s_ = std::move(s);
  return v;
}

Value Value::list(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::list;
  v.items_ = std::move(items);
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::tuple;
  v.items_ = std::move(items);
  return v;
}

Value Value::tensor(Tensor t) {
  Value v;
  v.kind_ = Kind::tensor;
  v.t_ = std::move(t);
  return v;
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::none:
      return "None";
    case Kind::boolean:
      return b_ ? "True" : "False";
    case Kind::integer:
      return std::to_string(i_);
    case Kind::real:
      return python_float_repr(d_);
    case Kind::string:
      return quote_python(s_);
    case Kind::identifier:
      return s_;
    case Kind::list:
    case Kind::tuple: {
      bool is_list = kind_ == Kind::list;
      std::string out(1, is_list ? '[' : '(');
      for (size_t k = 0; k < items_.size(); ++k) {
        if (k) out += ", ";
        out += items_[k].repr();
      }
      if (!is_list && items_.size() == 1) out += ',';
      out += is_list ? ']' : ')';
      return out;
    }
    case Kind::tensor:
      return tensor_repr(t_);
  }
  return "?";
}

const char* Value::kind_name(Kind kind) {
  switch (kind) {
    case Kind::none:
      return "None";
    case Kind::boolean:
      return "bool";
    case Kind::integer:
      return "int";
    case Kind::real:
      return "float";
    case Kind::string:
      return "str";
    case Kind::identifier:
      return "identifier";
    case Kind::list:
      return "list";
    case Kind::tuple:
      return "tuple";
    case Kind::tensor:
      return "tensor";
  }
  return "?";
}

std::string_view Call::class_name() const {
  std::string_view n = name;
  size_t dot = n.rfind('.');
  return dot == std::string_view::npos ? n : n.substr(dot + 1);
}

std::string_view Call::prefix() const {
  std::string_view n = name;
  size_t dot = n.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : n.substr(0, dot);
}

Args::Args(const Call& call, std::initializer_list<Param> signature) : call_(&call) {
  std::vector<Param> params(signature);
  for (const Param& p : params) bound_.emplace_back(p.name, nullptr);
  if (call.args.size() > params.size()) {
    fail(ErrorKind::format, call.class_name(), "() takes at most ", params.size(),
         " positional argument", params.size() == 1 ? "" : "s", " but ", call.args.size(),
         " were given");
  }
  for (size_t k = 0; k < call.args.size(); ++k) bound_[k].second = &call.args[k];
  for (const auto& kwarg : call.kwargs) {
    const std::string& key = kwarg.first;
    const Value& value = kwarg.second;
    auto it =
        std::find_if(bound_.begin(), bound_.end(), [&](const auto& b) { return b.first == key; });
    if (it == bound_.end()) {
      std::string accepted;
      for (const Param& p : params) {
        if (!accepted.empty()) accepted += ", ";
        accepted += p.name;
      }
      if (accepted.empty()) {
        fail(ErrorKind::format, "unknown keyword argument '", key, "' (", call.class_name(),
             " takes no arguments)");
      }
      fail(ErrorKind::format, "unknown keyword argument '", key, "' (accepted: ", accepted, ")");
    }
    if (it->second) {
      size_t index = size_t(it - bound_.begin());
      if (index < call.args.size()) {
        fail(ErrorKind::format, "argument '", key, "' given twice (positionally and by keyword)");
      }
      fail(ErrorKind::format, "keyword argument '", key, "' given twice");
    }
    it->second = &value;
  }
  for (size_t k = 0; k < params.size(); ++k) {
    if (!params[k].required) continue;
    if (!bound_[k].second)
      fail(ErrorKind::format, "missing required argument '", params[k].name, "'");
    if (bound_[k].second->is_none()) {
      fail(ErrorKind::format, "argument '", params[k].name, "' is required and cannot be None");
    }
  }
}

const Value* Args::get(std::string_view name) const {
  for (const auto& [key, value] : bound_) {
    if (key == name) return value && !value->is_none() ? value : nullptr;
  }
  // Asking for a name outside the signature is a bug in the op, not in the input.
  fail(ErrorKind::usage, "argument '", name, "' is not in the signature of ", call_->class_name());
}

bool Args::has(std::string_view name) const {
  return get(name) != nullptr;
}

int64_t Args::get_int(std::string_view name, int64_t fallback) const {
  const Value* v = get(name);
  if (!v) return fallback;
  if (!v->is_int()) bad_type(name, "an int");
  return v->as_int();
}

double Args::get_double(std::string_view name, double fallback) const {
  const Value* v = get(name);
  if (!v) return fallback;
  if (!v->is_number()) bad_type(name, "a number");
  return v->as_double();
}

bool Args::get_bool(std::string_view name, bool fallback) const {
  const Value* v = get(name);
  if (!v) return fallback;
  if (!v->is_bool()) bad_type(name, "True or False");
  return v->as_bool();
}

std::string Args::get_text(std::string_view name, std::string fallback) const {
  const Value* v = get(name);
  if (!v) return fallback;
  if (!v->is_text()) bad_type(name, "a string");
  return v->as_text();
}

std::vector<int64_t> Args::get_ints(std::string_view name, int n,
                                    std::vector<int64_t> fallback) const {
  const Value* v = get(name);
  if (!v) return fallback;
  auto expected = [&] {
    return n > 0 ? detail::concat("an int or a tuple of ", n, " ints")
                 : std::string("an int or a tuple of ints");
  };
  if (v->is_int()) return std::vector<int64_t>(size_t(n > 0 ? n : 1), v->as_int());
  if (!v->is_sequence() || (n > 0 && v->items().size() != size_t(n))) bad_type(name, expected());
  std::vector<int64_t> out;
  for (const Value& item : v->items()) {
    if (!item.is_int()) bad_type(name, expected());
    out.push_back(item.as_int());
  }
  return out;
}

std::vector<double> Args::get_doubles(std::string_view name, int n,
                                      std::vector<double> fallback) const {
  const Value* v = get(name);
  if (!v) return fallback;
  auto expected = [&] {
    return n > 0 ? detail::concat("a number or a tuple of ", n, " numbers")
                 : std::string("a number or a tuple of numbers");
  };
  if (v->is_number()) return std::vector<double>(size_t(n > 0 ? n : 1), v->as_double());
  if (!v->is_sequence() || (n > 0 && v->items().size() != size_t(n))) bad_type(name, expected());
  std::vector<double> out;
  for (const Value& item : v->items()) {
    if (!item.is_number()) bad_type(name, expected());
    out.push_back(item.as_double());
  }
  return out;
}

void Args::bad_type(std::string_view name, std::string_view expected) const {
  const Value* v = nullptr;
  for (const auto& [key, value] : bound_) {
    if (key == name) v = value;
  }
  fail(ErrorKind::format, "argument '", name, "': expected ", expected, ", found ",
       v ? found_text(*v) : std::string("nothing"));
}

}  // namespace nnx
