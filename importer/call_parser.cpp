// Constructor strings and channel expressions: a small recursive-descent reader of the subset
// of Python's expression syntax that descriptions use. Nothing is ever evaluated beyond
// literals, so a description cannot run code.
#include "importer/call_parser.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <system_error>
#include <unordered_set>

#include "nnx/error.h"

namespace nnx {
namespace {

// Nesting of tuples and lists; real constructor strings use two or three levels.
constexpr int kMaxDepth = 64;
// Tensor literals are small constants in practice; the cap keeps a hostile description from
// asking for an enormous allocation (16M elements).
constexpr int64_t kMaxLiteralElements = int64_t(1) << 24;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_ident_char(char c) {
  return is_ident_start(c) || is_digit(c);
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_python_keyword(std::string_view w) {
  static constexpr std::string_view kKeywords[] = {
      "and",    "as",   "assert", "async",  "await",  "break",   "class",    "continue",
      "def",    "del",  "elif",   "else",   "except", "finally", "for",      "from",
      "global", "if",   "import", "in",     "is",     "lambda",  "nonlocal", "not",
      "or",     "pass", "raise",  "return", "try",    "while",   "with",     "yield"};
  return std::find(std::begin(kKeywords), std::end(kKeywords), w) != std::end(kKeywords);
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// Python's float() of a literal that std::from_chars reported out of range: infinity for
// overflow, zero for underflow; the decimal exponent of the first significant digit says which.
double out_of_range_value(std::string_view text) {
  size_t e = text.find_first_of("eE");
  std::string_view mantissa = text.substr(0, e);
  int64_t exponent = 0;
  if (e != std::string_view::npos) {
    size_t k = e + 1;
    bool neg_exp = false;
    if (k < text.size() && (text[k] == '+' || text[k] == '-')) neg_exp = text[k++] == '-';
    for (; k < text.size() && is_digit(text[k]); ++k) {
      exponent = std::min<int64_t>(exponent * 10 + (text[k] - '0'), int64_t(1) << 40);
    }
    if (neg_exp) exponent = -exponent;
  }
  size_t first = mantissa.find_first_of("123456789");
  if (first == std::string_view::npos) return 0.0;
  size_t dot = std::min(mantissa.find('.'), mantissa.size());
  int64_t point = first < dot ? int64_t(dot - first) - 1 : -int64_t(first - dot);
  return point + exponent > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

struct DTypeName {
  std::string_view name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"float32", DType::f32},   {"float", DType::f32},   {"float64", DType::f64},
    {"double", DType::f64},    {"float16", DType::f16}, {"half", DType::f16},
    {"bfloat16", DType::bf16}, {"int64", DType::i64},   {"long", DType::i64},
    {"int32", DType::i32},     {"int", DType::i32},     {"int16", DType::i16},
    {"short", DType::i16},     {"int8", DType::i8},     {"uint8", DType::u8},
    {"bool", DType::boolean}};

const DTypeName* find_dtype(std::string_view dotted) {
  if (dotted.substr(0, 6) != "torch.") return nullptr;
  std::string_view n = dotted.substr(6);
  for (const DTypeName& d : kDTypes) {
    if (d.name == n) return &d;
  }
  return nullptr;
}

// Shared by parse_call and eval_int_expr: position, columns and messages.
class Reader {
 public:
  explicit Reader(std::string_view text) : s_(text) {}

 protected:
  char peek(size_t k = 0) const { return pos_ + k < s_.size() ? s_[pos_ + k] : '\0'; }
  bool at_end() const { return pos_ >= s_.size(); }
  void skip_space() {
    while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
  }

  // 1-based column in characters (UTF-8 continuation bytes do not count).
  int column(size_t pos) const {
    int col = 1;
    for (size_t k = 0; k < pos && k < s_.size(); ++k) {
      if ((uint8_t(s_[k]) & 0xC0) != 0x80) ++col;
    }
    return col;
  }

  template <class... Parts>
  [[noreturn]] void fail_at(size_t pos, const Parts&... parts) const {
    throw Error(ErrorKind::format, detail::concat("column ", column(pos), ": ", parts...));
  }
  [[noreturn]] void not_allowed(size_t pos, std::string_view what) const {
    fail_at(pos, what, " is not allowed in a constructor string");
  }

  std::string found(size_t pos) const {
    if (pos >= s_.size()) return "end of text";
    char c = s_[pos];
    if (is_ident_char(c)) {
      size_t end = pos;
      while (end < s_.size() && end - pos < 24 && is_ident_char(s_[end])) ++end;
      return "'" + std::string(s_.substr(pos, end - pos)) + "'";
    }
    if (uint8_t(c) >= 0x20 && uint8_t(c) < 0x7F) return std::string("'") + c + "'";
    char buf[32];
    std::snprintf(buf, sizeof buf, "byte 0x%02X", unsigned(uint8_t(c)));
    return buf;
  }

  std::string_view read_ident() {
    size_t start = pos_;
    while (pos_ < s_.size() && is_ident_char(s_[pos_])) ++pos_;
    return s_.substr(start, pos_ - start);
  }

  // An operator where a separator was expected; its spelling for the message.
  std::string_view operator_at(size_t pos) const {
    static constexpr std::string_view kOps[] = {"**", "//", "==", "!=", "<=", ">=", "<<", ">>",
                                                "->", ":=", "+",  "-",  "*",  "/",  "%",  "@",
                                                "&",  "|",  "^",  "~",  "<",  ">",  "=",  "!"};
    std::string_view rest = s_.substr(std::min(pos, s_.size()));
    for (std::string_view op : kOps) {
      if (rest.substr(0, op.size()) == op) return op;
    }
    return {};
  }

  std::string_view s_;
  size_t pos_ = 0;
};

class CallParser : Reader {
 public:
  CallParser(std::string_view text, const Locals& locals) : Reader(text), locals_(locals) {}

  Call parse() {
    Call call;
    call.text = std::string(s_);
    skip_space();
    if (!is_ident_start(peek())) fail_at(pos_, "expected a class name, found ", found(pos_));
    size_t name_pos = pos_;
    call.name = std::string(read_dotted());
    check_name(name_pos, call.name);
    skip_space();
    if (peek() != '(') {
      fail_at(pos_, "expected '(' after '", call.name, "', found ", found(pos_));
    }
    parse_arguments(0, call.args, call.kwargs);
    skip_space();
    if (!at_end()) fail_at(pos_, "expected end of text after ')', found ", found(pos_));
    return call;
  }

 private:
  using Kwargs = std::vector<std::pair<std::string, Value>>;

  // A dotted name a.b.c (no spaces, as Python's repr writes them).
  std::string_view read_dotted() {
    size_t start = pos_;
    read_ident();
    while (peek() == '.' && is_ident_start(peek(1))) {
      ++pos_;
      read_ident();
    }
    if (peek() == '.') fail_at(pos_ + 1, "expected a name after '.', found ", found(pos_ + 1));
    return s_.substr(start, pos_ - start);
  }

  void check_name(size_t pos, std::string_view dotted) const {
    size_t part_start = 0;
    for (;;) {
      size_t dot = dotted.find('.', part_start);
      std::string_view part = dotted.substr(part_start, dot - part_start);
      if (is_python_keyword(part)) {
        not_allowed(pos + part_start, detail::concat("the keyword '", part, "'"));
      }
      if (dot == std::string_view::npos) return;
      part_start = dot + 1;
    }
  }

  // "(args)" at pos_; Python's rules: positional before keyword, no keyword twice, a trailing
  // comma allowed. A keyword whose value is the package's "{self.x}" placeholder is dropped.
  void parse_arguments(int depth, std::vector<Value>& args, Kwargs& kwargs) {
    ++pos_;  // (
    bool seen_keyword = false;
    std::unordered_set<std::string_view> seen;  // views into the text, for repeated keywords
    for (;;) {
      skip_space();
      if (peek() == ')') break;
      size_t arg_pos = pos_;
      bool keyword = false;
      if (is_ident_start(peek())) {
        std::string_view key = read_ident();
        skip_space();
        if (peek() == '=' && peek(1) != '=') {
          keyword = true;
          seen_keyword = true;
          ++pos_;
          skip_space();
          if (is_python_keyword(key) || key == "True" || key == "False" || key == "None") {
            fail_at(arg_pos, "'", key, "' cannot be a keyword argument");
          }
          if (!seen.insert(key).second) {
            fail_at(arg_pos, "keyword argument '", key, "' repeated");
          }
          if (peek() == '{') {
            skip_placeholder();
          } else {
            kwargs.emplace_back(std::string(key), parse_value(depth + 1));
          }
        } else {
          pos_ = arg_pos;
        }
      }
      if (!keyword) {
        if (peek() == '*') not_allowed(pos_, "argument unpacking");
        if (seen_keyword) fail_at(arg_pos, "positional argument follows keyword argument");
        args.push_back(parse_value(depth + 1));
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ')') break;
      unexpected_after_value("expected ',' or ')' after argument");
    }
    ++pos_;  // )
  }

  // "{self.threshold}": braces around anything but braces.
  void skip_placeholder() {
    size_t start = pos_;
    ++pos_;
    while (!at_end() && peek() != '}' && peek() != '{') ++pos_;
    if (peek() != '}') fail_at(start, "unterminated '{...}' placeholder");
    ++pos_;
  }

  // Explains what stands where a separator should be.
  [[noreturn]] void unexpected_after_value(const std::string& expected) const {
    char c = peek();
    if (at_end()) fail_at(pos_, expected, ", found end of text");
    std::string_view op = operator_at(pos_);
    if (!op.empty()) not_allowed(pos_, detail::concat("the operator '", op, "'"));
    if (c == '.') not_allowed(pos_, "attribute access");
    if (c == '(') not_allowed(pos_, "a call");
    if (c == '[') not_allowed(pos_, "subscripting");
    if (c == ':') not_allowed(pos_, "':'");
    if (is_ident_start(c)) {
      size_t end = pos_;
      while (end < s_.size() && is_ident_char(s_[end])) ++end;
      std::string_view word = s_.substr(pos_, end - pos_);
      if (is_python_keyword(word)) not_allowed(pos_, detail::concat("the keyword '", word, "'"));
    }
    fail_at(pos_, expected, ", found ", found(pos_));
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) fail_at(pos_, "values nested deeper than ", kMaxDepth, " levels");
    skip_space();
    size_t start = pos_;
    char c = peek();
    if (at_end()) fail_at(pos_, "expected a value, found end of text");
    if (c == '-' || c == '+') {
      ++pos_;
      skip_space();
      if (is_digit(peek()) || (peek() == '.' && is_digit(peek(1)))) {
        return parse_number(c == '-');
      }
      Value v = parse_value(depth + 1);
      if (c == '+' && v.is_number()) return v;
      if (v.is_int()) {
        if (v.as_int() == std::numeric_limits<int64_t>::min()) {
          fail_at(start, "integer literal out of range (int64)");
        }
        return Value::integer(-v.as_int());
      }
      if (v.kind() == Value::Kind::real) return Value::real(-v.as_double());
      fail_at(start, "unary '", c, "' needs a number, found ", v.repr());
    }
    if (is_digit(c) || (c == '.' && is_digit(peek(1)))) return parse_number(false);
    if (c == '\'' || c == '"') return Value::string(parse_string(false));
    if (c == '(') return parse_sequence(depth, ')');
    if (c == '[') return parse_sequence(depth, ']');
    if (c == '{') {
      fail_at(pos_,
              "a dict or set is not allowed in a constructor string (a '{...}' placeholder is",
              " accepted only as a keyword value)");
    }
    if (c == '*') not_allowed(pos_, "argument unpacking");
    if (is_ident_start(c)) return parse_name(depth);
    fail_at(pos_, "expected a value, found ", found(pos_));
  }

  Value parse_name(int depth) {
    size_t start = pos_;
    std::string_view word = read_ident();
    if (peek() == '\'' || peek() == '"') {
      std::string prefix(word);
      for (char& ch : prefix) ch = char(std::tolower(uint8_t(ch)));
      if (prefix.find('f') != std::string::npos && prefix.size() <= 2) {
        not_allowed(start, "an f-string");
      }
      if (prefix.find('b') != std::string::npos && prefix.size() <= 2) {
        not_allowed(start, "a bytes literal");
      }
      if (prefix == "u") return Value::string(parse_string(false));
      if (prefix == "r") return Value::string(parse_string(true));
      fail_at(start, "unknown string prefix '", word, "'");
    }
    if (word == "True") return Value::boolean(true);
    if (word == "False") return Value::boolean(false);
    if (word == "None") return Value();
    if (is_python_keyword(word)) not_allowed(start, detail::concat("the keyword '", word, "'"));
    if (peek() == '.' && is_ident_start(peek(1))) {
      pos_ = start;
      std::string_view dotted = read_dotted();
      size_t after = pos_;
      skip_space();
      bool called = peek() == '(';
      if (called &&
          (dotted == "torch.zeros" || dotted == "torch.ones" || dotted == "torch.tensor")) {
        return parse_tensor_literal(depth, start, dotted);
      }
      if (called) not_allowed(start, detail::concat("a call of '", dotted, "'"));
      if (find_dtype(dotted)) {
        pos_ = after;
        return Value::identifier(std::string(dotted));
      }
      not_allowed(start, detail::concat("the attribute access '", dotted, "'"));
    }
    // PyTorch prints enum-like strings unquoted, some with hyphens (mode=nearest-exact): a
    // hyphen between letters continues the word, as no arithmetic is allowed here anyway.
    if (peek() == '-' && is_ident_start(peek(1))) {
      while (peek() == '-' && is_ident_start(peek(1))) {
        ++pos_;
        read_ident();
      }
      return Value::identifier(std::string(s_.substr(start, pos_ - start)));
    }
    size_t after = pos_;
    skip_space();
    if (peek() == '(') not_allowed(start, detail::concat("a call of '", word, "'"));
    pos_ = after;
    auto it = locals_.find(word);
    if (it != locals_.end()) return it->second;
    return Value::identifier(std::string(word));
  }

  Value parse_number(bool negative) {
    size_t start = pos_;
    auto bad = [&]() {
      size_t end = pos_;
      while (end < s_.size() && (is_ident_char(s_[end]) || s_[end] == '.')) ++end;
      fail_at(start, "invalid number '", s_.substr(start, end - start), "'");
    };
    // Digits with single underscores between them, as Python allows.
    auto digits = [&](auto is_valid) {
      size_t n = 0;
      while (is_valid(peek()) || (peek() == '_' && n > 0 && is_valid(peek(1)))) {
        if (peek() != '_') ++n;
        ++pos_;
      }
      return n;
    };
    int radix = 10;
    if (peek() == '0' && (peek(1) == 'x' || peek(1) == 'X')) radix = 16;
    if (peek() == '0' && (peek(1) == 'o' || peek(1) == 'O')) radix = 8;
    if (peek() == '0' && (peek(1) == 'b' || peek(1) == 'B')) radix = 2;
    if (radix != 10) {
      pos_ += 2;
      if (peek() == '_') ++pos_;
      size_t n = digits([&](char ch) {
        int h = hex_value(ch);
        return h >= 0 && h < radix;
      });
      if (n == 0 || is_ident_char(peek()) || peek() == '.') bad();
      return make_int(start, s_.substr(start + 2, pos_ - start - 2), radix, negative);
    }
    bool is_float = false;
    size_t int_digits = digits(is_digit);
    if (peek() == '.') {
      is_float = true;
      ++pos_;
      size_t frac = digits(is_digit);
      if (int_digits == 0 && frac == 0) bad();
    }
    if (peek() == 'e' || peek() == 'E') {
      is_float = true;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (digits(is_digit) == 0) bad();
    }
    if (peek() == 'j' || peek() == 'J') not_allowed(start, "a complex number");
    if (is_ident_char(peek()) || peek() == '.') bad();
    std::string text;
    for (char ch : s_.substr(start, pos_ - start)) {
      if (ch != '_') text += ch;
    }
    if (!is_float) {
      if (text.size() > 1 && text[0] == '0' && text.find_first_not_of('0') != std::string::npos) {
        fail_at(start, "leading zeros in a decimal integer are not allowed");
      }
      return make_int(start, text, 10, negative);
    }
    double d = 0;
    auto res = std::from_chars(text.data(), text.data() + text.size(), d);
    if (res.ec == std::errc::result_out_of_range) {
      d = out_of_range_value(text);
    } else if (res.ec != std::errc() || res.ptr != text.data() + text.size()) {
      bad();
    }
    return Value::real(negative ? -d : d);
  }

  Value make_int(size_t start, std::string_view digit_text, int radix, bool negative) const {
    uint64_t magnitude = 0;
    const uint64_t limit = uint64_t(std::numeric_limits<int64_t>::max()) + (negative ? 1 : 0);
    for (char ch : digit_text) {
      if (ch == '_') continue;
      uint64_t d = uint64_t(hex_value(ch));
      if (magnitude > (limit - d) / uint64_t(radix)) {
        fail_at(start, "integer literal out of range (int64)");
      }
      magnitude = magnitude * uint64_t(radix) + d;
    }
    if (!negative) return Value::integer(int64_t(magnitude));
    if (magnitude == uint64_t(1) << 63) return Value::integer(std::numeric_limits<int64_t>::min());
    return Value::integer(-int64_t(magnitude));
  }

  std::string parse_string(bool raw) {
    size_t start = pos_;
    char quote = peek();
    if (peek(1) == quote && peek(2) == quote) not_allowed(start, "a triple-quoted string");
    ++pos_;
    std::string out;
    for (;;) {
      if (at_end() || peek() == '\n' || peek() == '\r') fail_at(start, "unterminated string");
      char c = s_[pos_];
      if (c == quote) {
        ++pos_;
        return out;
      }
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      size_t esc = pos_;
      ++pos_;
      if (at_end()) fail_at(start, "unterminated string");
      char e = s_[pos_++];
      if (raw) {
        // A raw string keeps the backslash; it only stops a quote from ending the string.
        out += '\\';
        out += e;
        continue;
      }
      switch (e) {
        case '\n':
          break;  // line continuation
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
          append_utf8(out, read_hex(esc, 2));
          break;
        case 'u':
          append_utf8(out, checked_code_point(esc, read_hex(esc, 4)));
          break;
        case 'U':
          append_utf8(out, checked_code_point(esc, read_hex(esc, 8)));
          break;
        case 'N':
          fail_at(esc, "\\N{...} escapes are not supported");
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = uint32_t(e - '0');
            for (int k = 0; k < 2 && peek() >= '0' && peek() <= '7'; ++k) {
              cp = cp * 8 + uint32_t(peek() - '0');
              ++pos_;
            }
            append_utf8(out, cp);
          } else {
            out += '\\';  // Python keeps unknown escapes as written
            out += e;
          }
      }
    }
  }

  uint32_t read_hex(size_t esc, int n) {
    uint32_t cp = 0;
    for (int k = 0; k < n; ++k) {
      int h = hex_value(peek());
      if (h < 0) fail_at(esc, "invalid escape: expected ", n, " hex digits");
      cp = (cp << 4) | uint32_t(h);
      ++pos_;
    }
    return cp;
  }

  uint32_t checked_code_point(size_t esc, uint32_t cp) const {
    if (cp > 0x10FFFF) fail_at(esc, "invalid escape: code point out of range");
    if (cp >= 0xD800 && cp <= 0xDFFF) fail_at(esc, "invalid escape: lone surrogate");
    return cp;
  }

  // "(...)": a tuple, or a parenthesized value when there is one item and no comma.
  Value parse_sequence(int depth, char close) {
    size_t open = pos_;
    ++pos_;
    std::vector<Value> items;
    bool comma = false;
    for (;;) {
      skip_space();
      if (peek() == close) break;
      if (at_end()) fail_at(open, "'", s_[open], "' is not closed");
      items.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        comma = true;
        ++pos_;
        continue;
      }
      if (peek() == close) break;
      if (at_end()) fail_at(open, "'", s_[open], "' is not closed");
      unexpected_after_value(detail::concat("expected ',' or '", close, "'"));
    }
    ++pos_;
    if (close == ']') return Value::list(std::move(items));
    if (items.size() == 1 && !comma) return std::move(items[0]);
    return Value::tuple(std::move(items));
  }

  // torch.zeros(...), torch.ones(...), torch.tensor(...) starting at `start`; pos_ is at '('.
  Value parse_tensor_literal(int depth, size_t start, std::string_view dotted) {
    std::string fn(dotted);
    std::vector<Value> args;
    Kwargs kwargs;
    parse_arguments(depth, args, kwargs);
    DType dtype = DType::f32;
    bool dtype_given = false;
    const Value* size_kw = nullptr;
    const Value* data_kw = nullptr;
    for (const auto& [key, value] : kwargs) {
      if (key == "dtype") {
        const DTypeName* d =
            value.kind() == Value::Kind::identifier ? find_dtype(value.as_text()) : nullptr;
        if (!d)
          fail_at(start, fn, ": dtype must be a torch dtype such as torch.float32, found ",
                  value.repr());
        dtype = d->dtype;
        dtype_given = true;
      } else if (key == "requires_grad") {
        if (!value.is_bool()) fail_at(start, fn, ": requires_grad must be True or False");
      } else if (key == "size" && fn != "torch.tensor") {
        size_kw = &value;
      } else if (key == "data" && fn == "torch.tensor") {
        data_kw = &value;
      } else {
        fail_at(start, fn, ": unsupported argument '", key, "'");
      }
    }
    if (fn == "torch.tensor") {
      if (args.size() + (data_kw ? 1 : 0) != 1) {
        fail_at(start, "torch.tensor takes one data argument, found ",
                args.size() + (data_kw ? 1 : 0));
      }
      return Value::tensor(make_tensor(start, data_kw ? *data_kw : args[0], dtype, dtype_given));
    }
    std::vector<Value> dims = args;
    if (size_kw) {
      if (!args.empty()) fail_at(start, fn, ": size given both positionally and by keyword");
      dims = {*size_kw};
    }
    if (dims.size() == 1 && dims[0].is_sequence()) {
      std::vector<Value> inner = dims[0].items();  // not assigned in place: it lives in dims
      dims = std::move(inner);
    }
    Shape shape;
    int64_t span_product = 1;
    for (const Value& d : dims) {
      if (!d.is_int() || d.as_int() < 0) {
        fail_at(start, fn, ": sizes must be non-negative ints, found ", d.repr());
      }
      if (shape.size() >= Shape::kMaxDims) {
        fail_at(start, fn, ": more than ", Shape::kMaxDims, " dimensions");
      }
      // Zero sizes count as one: strides multiply the other sizes even for an empty tensor.
      int64_t span = std::max<int64_t>(d.as_int(), 1);
      if (span > kMaxLiteralElements / span_product) {
        fail_at(start, fn, ": tensor literal too large (more than ", kMaxLiteralElements,
                " elements)");
      }
      span_product *= span;
      shape.push_back(d.as_int());
    }
    if (fn == "torch.zeros") return Value::tensor(Tensor::zeros(shape, dtype));
    return Value::tensor(Tensor::full(shape, 1.0, dtype));
  }

  // Shape of nested sequences, checking that they are rectangular; the leaves in C order.
  void collect(size_t start, const Value& v, int dim, Shape& shape, bool& shape_known,
               std::vector<const Value*>& leaves) const {
    if (v.is_sequence()) {
      int64_t n = int64_t(v.items().size());
      if (!shape_known) {
        if (dim >= Shape::kMaxDims) {
          fail_at(start, "torch.tensor: more than ", Shape::kMaxDims, " dimensions");
        }
        shape.push_back(n);
        if (n == 0) shape_known = true;
      } else if (dim >= shape.size() || shape[dim] != n) {
        fail_at(start, "torch.tensor: the nested sequences are not rectangular");
      }
      for (const Value& item : v.items()) collect(start, item, dim + 1, shape, shape_known, leaves);
      return;
    }
    if (!v.is_number() && !v.is_bool()) {
      fail_at(start, "torch.tensor: elements must be numbers or bools, found ", v.repr());
    }
    if (!shape_known) {
      shape_known = true;
    } else if (dim != shape.size()) {
      fail_at(start, "torch.tensor: the nested sequences are not rectangular");
    }
    leaves.push_back(&v);
  }

  Tensor make_tensor(size_t start, const Value& data, DType dtype, bool dtype_given) const {
    Shape shape;
    bool shape_known = false;
    std::vector<const Value*> leaves;
    collect(start, data, 0, shape, shape_known, leaves);
    if (!dtype_given) {
      // PyTorch's inference: float32 if any float, bool if all bools, else int64.
      bool any_real = false, all_bool = !leaves.empty();
      for (const Value* v : leaves) {
        any_real = any_real || v->kind() == Value::Kind::real;
        all_bool = all_bool && v->is_bool();
      }
      dtype = (any_real || leaves.empty()) ? DType::f32 : all_bool ? DType::boolean : DType::i64;
    }
    Tensor t = Tensor::empty(shape, dtype);
    void* raw = t.raw_data();
    for (size_t k = 0; k < leaves.size(); ++k) store(start, raw, k, *leaves[k], dtype);
    return t;
  }

  void store(size_t start, void* raw, size_t k, const Value& v, DType dtype) const {
    double d = v.is_bool() ? (v.as_bool() ? 1.0 : 0.0) : v.as_double();
    auto as_int = [&](int64_t lo, int64_t hi) -> int64_t {
      if (v.is_int() || v.is_bool()) {
        int64_t i = v.is_bool() ? int64_t(v.as_bool()) : v.as_int();
        if (i < lo || i > hi) {
          fail_at(start, "torch.tensor: ", v.repr(), " does not fit ", dtype_name(dtype));
        }
        return i;
      }
      // PyTorch truncates floats toward zero; values it cannot represent are errors here.
      double tr = std::trunc(d);
      if (std::isnan(d) || !(tr >= double(lo) && tr < double(hi) + 1.0)) {
        fail_at(start, "torch.tensor: ", v.repr(), " does not fit ", dtype_name(dtype));
      }
      return int64_t(tr);
    };
    switch (dtype) {
      case DType::f32:
        static_cast<float*>(raw)[k] = to_float(d);
        return;
      case DType::f64:
        static_cast<double*>(raw)[k] = d;
        return;
      case DType::f16:
        static_cast<uint16_t*>(raw)[k] = float_to_half(to_float(d));
        return;
      case DType::bf16:
        static_cast<uint16_t*>(raw)[k] = float_to_bf16(to_float(d));
        return;
      case DType::i64:
        static_cast<int64_t*>(raw)[k] =
            as_int(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
        return;
      case DType::i32:
        static_cast<int32_t*>(raw)[k] = int32_t(as_int(INT32_MIN, INT32_MAX));
        return;
      case DType::i16:
        static_cast<int16_t*>(raw)[k] = int16_t(as_int(INT16_MIN, INT16_MAX));
        return;
      case DType::i8:
        static_cast<int8_t*>(raw)[k] = int8_t(as_int(INT8_MIN, INT8_MAX));
        return;
      case DType::u8:
        static_cast<uint8_t*>(raw)[k] = uint8_t(as_int(0, UINT8_MAX));
        return;
      case DType::boolean:
        static_cast<uint8_t*>(raw)[k] = d != 0 ? 1 : 0;
        return;
    }
  }

  // double -> float without the undefined behaviour of converting an out-of-range value:
  // what IEEE rounding gives (infinity past the largest float plus half an ulp).
  static float to_float(double d) {
    constexpr double kOverflow = 0x1.ffffffp127;
    if (std::isfinite(d) && std::abs(d) >= kOverflow) {
      return d < 0 ? -std::numeric_limits<float>::infinity()
                   : std::numeric_limits<float>::infinity();
    }
    return float(d);
  }

  const Locals& locals_;
};

class ExprParser : Reader {
 public:
  ExprParser(std::string_view text, const Locals& locals) : Reader(text), locals_(locals) {}

  int64_t parse() {
    int64_t v = parse_sum(0);
    skip_space();
    if (!at_end()) fail_at(pos_, "expected an operator or end of expression, found ", found(pos_));
    return v;
  }

 private:
  int64_t parse_sum(int depth) {
    int64_t v = parse_product(depth);
    for (;;) {
      skip_space();
      char c = peek();
      if (c != '+' && c != '-') return v;
      size_t op_pos = pos_++;
      int64_t rhs = parse_product(depth);
      int64_t r;
      bool overflow =
          c == '+' ? __builtin_add_overflow(v, rhs, &r) : __builtin_sub_overflow(v, rhs, &r);
      if (overflow) fail_at(op_pos, "integer overflow");
      v = r;
    }
  }

  int64_t parse_product(int depth) {
    int64_t v = parse_unary(depth);
    for (;;) {
      skip_space();
      size_t op_pos = pos_;
      std::string_view op;
      if (peek() == '/' && peek(1) == '/') {
        op = "//";
      } else if (peek() == '*' && peek(1) == '*') {
        fail_at(op_pos, "'**' is not supported in channel expressions");
      } else if (peek() == '*' || peek() == '/' || peek() == '%') {
        op = s_.substr(pos_, 1);
      } else {
        return v;
      }
      pos_ += op.size();
      int64_t rhs = parse_unary(depth);
      v = apply(op_pos, op, v, rhs);
    }
  }

  int64_t apply(size_t op_pos, std::string_view op, int64_t a, int64_t b) const {
    int64_t r = 0;
    if (op == "*") {
      if (__builtin_mul_overflow(a, b, &r)) fail_at(op_pos, "integer overflow");
      return r;
    }
    if (b == 0) fail_at(op_pos, "division by zero");
    if (a == std::numeric_limits<int64_t>::min() && b == -1) {
      if (op == "%") return 0;
      fail_at(op_pos, "integer overflow");
    }
    int64_t q = a / b, m = a % b;
    // Python floors: the remainder takes the divisor's sign.
    if (m != 0 && ((m < 0) != (b < 0))) {
      --q;
      m += b;
    }
    if (op == "%") return m;
    if (op == "/" && m != 0) {
      fail_at(op_pos, a, " / ", b, " is not a whole number (use // to round down)");
    }
    return q;
  }

  int64_t parse_unary(int depth) {
    skip_space();
    if (depth > kMaxDepth) fail_at(pos_, "expression nested deeper than ", kMaxDepth, " levels");
    char c = peek();
    if (c == '-' || c == '+') {
      size_t op_pos = pos_++;
      int64_t v = parse_unary(depth + 1);
      if (c == '+') return v;
      if (v == std::numeric_limits<int64_t>::min()) fail_at(op_pos, "integer overflow");
      return -v;
    }
    return parse_atom(depth);
  }

  int64_t parse_atom(int depth) {
    size_t start = pos_;
    char c = peek();
    if (c == '(') {
      ++pos_;
      int64_t v = parse_sum(depth + 1);
      skip_space();
      if (peek() != ')') {
        if (at_end()) fail_at(start, "'(' is not closed");
        fail_at(pos_, "expected ')' or an operator, found ", found(pos_));
      }
      ++pos_;
      return v;
    }
    if (is_digit(c)) {
      uint64_t v = 0;
      while (is_digit(peek()) || (peek() == '_' && is_digit(peek(1)))) {
        if (peek() != '_') {
          uint64_t d = uint64_t(peek() - '0');
          if (v > (uint64_t(std::numeric_limits<int64_t>::max()) - d) / 10) {
            fail_at(start, "integer literal out of range (int64)");
          }
          v = v * 10 + d;
        }
        ++pos_;
      }
      if (is_ident_char(peek()) || peek() == '.') {
        size_t end = pos_;
        while (end < s_.size() && (is_ident_char(s_[end]) || s_[end] == '.')) ++end;
        fail_at(start, "expected an integer, found '", s_.substr(start, end - start), "'");
      }
      if (pos_ - start > 1 && s_[start] == '0' && v != 0) {
        fail_at(start, "leading zeros in a decimal integer are not allowed");
      }
      return int64_t(v);
    }
    if (is_ident_start(c)) {
      std::string_view name = read_ident();
      auto it = locals_.find(name);
      if (it == locals_.end()) {
        std::string known;
        for (const auto& [k, v] : locals_) known += (known.empty() ? "" : ", ") + k;
        fail_at(
            start, "unknown name '", name, "'",
            known.empty() ? std::string(" (no locals are defined)") : " (locals: " + known + ")");
      }
      if (!it->second.is_int()) {
        fail_at(start, "local '", name, "' is not an int (it is ", it->second.repr(), ")");
      }
      return it->second.as_int();
    }
    fail_at(pos_, "expected a number, a name or '(', found ", found(pos_));
  }

  const Locals& locals_;
};

}  // namespace

Call parse_call(std::string_view text, const Locals& locals) {
  return CallParser(text, locals).parse();
}

int64_t eval_int_expr(std::string_view text, const Locals& locals) {
  return ExprParser(text, locals).parse();
}

}  // namespace nnx
