// The JSON dialect of model descriptions: a recursive-descent reader that tracks lines and
// columns for messages, and a writer that matches Python's json.dump byte for byte.
#include "importer/json.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <system_error>
#include <unordered_map>

#include "nnx/error.h"
#include "nnx/value.h"

namespace nnx::json {

Value null() {
  return Value();
}
Value boolean(bool b) {
  Value v;
  v.kind = Value::Kind::boolean;
  v.b = b;
  return v;
}
Value integer(int64_t i) {
  Value v;
  v.kind = Value::Kind::number;
  v.is_integer = true;
  v.integer = i;
  v.number = double(i);
  return v;
}
Value number(double d) {
  Value v;
  v.kind = Value::Kind::number;
  v.number = d;
  return v;
}
Value string(std::string s) {
  Value v;
  v.kind = Value::Kind::string;
  v.str = std::move(s);
  return v;
}
Value array(std::vector<Value> items) {
  Value v;
  v.kind = Value::Kind::array;
  v.array = std::move(items);
  return v;
}
Value object(std::vector<std::pair<std::string, Value>> members) {
  Value v;
  v.kind = Value::Kind::object;
  v.object = std::move(members);
  return v;
}
Value integers(const std::vector<int64_t>& items) {
  std::vector<Value> values;
  for (int64_t i : items) values.push_back(integer(i));
  return array(std::move(values));
}

Value::Value() = default;
Value::~Value() = default;
Value::Value(const Value&) = default;
Value::Value(Value&&) noexcept = default;
Value& Value::operator=(const Value&) = default;
Value& Value::operator=(Value&&) noexcept = default;

namespace {

// Deep enough for any real description, shallow enough that recursion cannot exhaust the
// stack (the reader and the Value destructor both recurse).
constexpr int kMaxDepth = 512;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  // Lone surrogates (which \u escapes can produce, as in Python) get the generalized 3-byte
  // form so that dump() writes them back as the same escapes.
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

// Length of the well-formed UTF-8 sequence at s[pos] (RFC 3629: no overlongs, no surrogates,
// at most U+10FFFF), or 0. With `allow_surrogates`, also the 3-byte surrogate forms.
size_t utf8_length(std::string_view s, size_t pos, bool allow_surrogates, uint32_t* cp_out) {
  auto b = [&](size_t k) { return pos + k < s.size() ? uint8_t(s[pos + k]) : uint8_t(0); };
  auto cont = [&](size_t k) { return (b(k) & 0xC0) == 0x80; };
  uint8_t c = b(0);
  uint32_t cp;
  size_t len;
  if (c < 0x80) {
    cp = c;
    len = 1;
  } else if (c >= 0xC2 && c <= 0xDF && cont(1)) {
    cp = (uint32_t(c & 0x1F) << 6) | (b(1) & 0x3F);
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF && cont(1) && cont(2)) {
    cp = (uint32_t(c & 0x0F) << 12) | (uint32_t(b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    if (cp < 0x800) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF && !allow_surrogates) return 0;
    len = 3;
  } else if (c >= 0xF0 && c <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    cp = (uint32_t(c & 0x07) << 18) | (uint32_t(b(1) & 0x3F) << 12) | (uint32_t(b(2) & 0x3F) << 6) |
         (b(3) & 0x3F);
    if (cp < 0x10000 || cp > 0x10FFFF) return 0;
    len = 4;
  } else {
    return 0;
  }
  if (cp_out) *cp_out = cp;
  return len;
}

std::string code_point_name(uint32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", unsigned(cp));
  return buf;
}

// Value of a decimal literal that std::from_chars reported out of range: Python's float()
// gives infinity for overflow and zero for underflow; the decimal exponent of the first
// significant digit says which (ranges end near 1e308 and 1e-324, far from the boundary 0).
double out_of_range_value(std::string_view text) {
  bool negative = !text.empty() && text[0] == '-';
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
  if (first == std::string_view::npos) return negative ? -0.0 : 0.0;
  size_t dot = std::min(mantissa.find('.'), mantissa.size());
  int64_t point = first < dot ? int64_t(dot - first) - 1 : -int64_t(first - dot);
  double mag = point + exponent > 0 ? std::numeric_limits<double>::infinity() : 0.0;
  return negative ? -mag : mag;
}

class Parser {
 public:
  Parser(std::string_view text, const std::string& name) : s_(text), name_(name) {}

  Value parse_document() {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // a UTF-8 byte-order mark
    skip_space();
    Value v = parse_value(0);
    skip_space();
    if (pos_ < s_.size()) {
      fail("expected end of input after the top-level value, found ", found());
    }
    return v;
  }

 private:
  struct Mark {
    size_t pos;
    int line, column;
  };

  Mark mark() const { return {pos_, line_, col_}; }
  char peek(size_t k = 0) const { return pos_ + k < s_.size() ? s_[pos_ + k] : '\0'; }
  bool at_end() const { return pos_ >= s_.size(); }

  void advance() {
    if (pos_ >= s_.size()) return;
    unsigned char c = uint8_t(s_[pos_++]);
    if (c == '\n') {
      ++line_;
      col_ = 1;
    } else if ((c & 0xC0) != 0x80) {
      ++col_;  // columns count characters, not UTF-8 continuation bytes
    }
  }
  void advance(size_t n) {
    for (size_t k = 0; k < n; ++k) advance();
  }

  template <class... Parts>
  [[noreturn]] void fail_at(const Mark& m, const Parts&... parts) const {
    fail_with(ErrorKind::format, name_, ":", m.line, ":", m.column, ": ", parts...);
  }
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    fail_at(mark(), parts...);
  }
  template <class... Parts>
  [[noreturn]] static void fail_with(ErrorKind kind, const Parts&... parts) {
    throw Error(kind, detail::concat(parts...));
  }

  // What is at the current position, for "found ..." in messages.
  std::string found() const {
    if (at_end()) return "end of input";
    char c = s_[pos_];
    if (is_word_char(c)) {
      size_t end = pos_;
      while (end < s_.size() && end - pos_ < 24 && is_word_char(s_[end])) ++end;
      return "'" + std::string(s_.substr(pos_, end - pos_)) + "'";
    }
    if (c >= 0x20 && c < 0x7F) return std::string("'") + c + "'";
    uint32_t cp = 0;
    if (utf8_length(s_, pos_, false, &cp) == 0) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "byte 0x%02X", unsigned(uint8_t(c)));
      return buf;
    }
    return "character " + code_point_name(cp);
  }

  void skip_space() {
    while (!at_end()) {
      char c = s_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else if (c == '#' || (c == '/' && peek(1) == '/')) {
        while (!at_end() && s_[pos_] != '\n') advance();
      } else if (c == '/' && peek(1) == '*') {
        Mark start = mark();
        advance(2);
        while (!at_end() && !(s_[pos_] == '*' && peek(1) == '/')) advance();
        if (at_end()) fail_at(start, "unterminated /* comment");
        advance(2);
      } else {
        break;
      }
    }
  }

  Value parse_value(int depth) {
    Mark start = mark();
    Value v;
    char c = peek();
    if (at_end()) {
      fail("expected a value, found end of input");
    } else if (c == '{') {
      v = parse_object(depth);
    } else if (c == '[') {
      v = parse_array(depth);
    } else if (c == '"') {
      v.kind = Value::Kind::string;
      v.str = parse_string();
    } else if (c == '-' || is_digit(c)) {
      v = parse_number();
    } else {
      size_t end = pos_;
      while (end < s_.size() && is_word_char(s_[end])) ++end;
      std::string_view word = s_.substr(pos_, end - pos_);
      if (word == "true" || word == "false") {
        v.kind = Value::Kind::boolean;
        v.b = word == "true";
      } else if (word == "null") {
        v.kind = Value::Kind::null;
      } else if (word == "NaN") {
        v.kind = Value::Kind::number;
        v.number = std::numeric_limits<double>::quiet_NaN();
      } else if (word == "Infinity") {
        v.kind = Value::Kind::number;
        v.number = std::numeric_limits<double>::infinity();
      } else {
        fail("expected a value, found ", found());
      }
      advance(word.size());
    }
    v.line = start.line;
    v.column = start.column;
    return v;
  }

  Value parse_array(int depth) {
    Mark start = mark();
    if (depth >= kMaxDepth) fail("arrays and objects nested deeper than ", kMaxDepth, " levels");
    advance();  // [
    Value v;
    v.kind = Value::Kind::array;
    skip_space();
    if (peek() == ']') {
      advance();
      return v;
    }
    for (;;) {
      v.array.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        advance();
        skip_space();
        if (peek() == ']') break;  // trailing comma
      } else if (peek() == ']') {
        break;
      } else if (at_end()) {
        fail("expected ',' or ']' after array element, found end of input (the array opened at ",
             start.line, ":", start.column, " is not closed)");
      } else {
        fail("expected ',' or ']' after array element, found ", found());
      }
    }
    advance();  // ]
    return v;
  }

  Value parse_object(int depth) {
    Mark start = mark();
    if (depth >= kMaxDepth) fail("arrays and objects nested deeper than ", kMaxDepth, " levels");
    advance();  // {
    Value v;
    v.kind = Value::Kind::object;
    skip_space();
    if (peek() == '}') {
      advance();
      return v;
    }
    std::unordered_map<std::string, size_t> index;
    for (;;) {
      if (peek() != '"') fail("expected a key in double quotes, found ", found());
      std::string key = parse_string();
      skip_space();
      if (peek() != ':') fail("expected ':' after object key, found ", found());
      advance();
      skip_space();
      Value member = parse_value(depth + 1);
      // Python keeps the first position of a repeated key and the last value.
      auto [it, inserted] = index.emplace(key, v.object.size());
      if (inserted) {
        v.object.emplace_back(std::move(key), std::move(member));
      } else {
        v.object[it->second].second = std::move(member);
      }
      skip_space();
      if (peek() == ',') {
        advance();
        skip_space();
        if (peek() == '}') break;  // trailing comma
      } else if (peek() == '}') {
        break;
      } else if (at_end()) {
        fail("expected ',' or '}' after object member, found end of input (the object opened at ",
             start.line, ":", start.column, " is not closed)");
      } else {
        fail("expected ',' or '}' after object member, found ", found());
      }
    }
    advance();  // }
    return v;
  }

  std::string parse_string() {
    Mark start = mark();
    advance();  // "
    std::string out;
    for (;;) {
      if (at_end()) fail_at(start, "unterminated string");
      unsigned char c = uint8_t(s_[pos_]);
      if (c == '"') {
        advance();
        return out;
      }
      if (c == '\\') {
        Mark esc = mark();
        advance();
        if (at_end()) fail_at(start, "unterminated string");
        char e = s_[pos_];
        switch (e) {
          case '"':
          case '\\':
          case '/':
            out += e;
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
          case 'u': {
            advance();
            uint32_t cp = read_hex4(esc);
            if (cp >= 0xD800 && cp <= 0xDBFF && peek() == '\\' && peek(1) == 'u') {
              Mark low_mark = mark();
              size_t save_pos = pos_;
              int save_line = line_, save_col = col_;
              advance(2);
              uint32_t low = read_hex4(low_mark);
              if (low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
              } else {
                // Not a pair: the second escape is read on its own next time round.
                pos_ = save_pos;
                line_ = save_line;
                col_ = save_col;
              }
            }
            append_utf8(out, cp);
            continue;  // read_hex4 has already moved past the digits
          }
          default:
            fail_at(esc, "invalid escape '\\", found_char(), "' in string");
        }
        advance();
      } else if (c < 0x20) {
        fail("invalid control character ", code_point_name(c),
             " in string (write it as an escape such as \\n)");
      } else if (c < 0x80) {
        out += char(c);
        advance();
      } else {
        size_t len = utf8_length(s_, pos_, false, nullptr);
        if (len == 0) fail("invalid UTF-8 in string (", found(), ")");
        out.append(s_.substr(pos_, len));
        advance(len);
      }
    }
  }

  // The raw character at the position, for the escape message.
  std::string found_char() const {
    char c = s_[pos_];
    if (uint8_t(c) >= 0x20 && uint8_t(c) < 0x7F) return std::string(1, c);
    return found();
  }

  uint32_t read_hex4(const Mark& esc) {
    uint32_t cp = 0;
    for (int k = 0; k < 4; ++k) {
      int h = hex_value(peek());
      if (at_end() || h < 0) fail_at(esc, "invalid \\u escape: expected 4 hex digits");
      cp = cp * 16 + uint32_t(h);
      advance();
    }
    return cp;
  }

  Value parse_number() {
    Mark start = mark();
    size_t begin = pos_;
    bool integral = true;
    if (peek() == '-') {
      advance();
      if (s_.substr(pos_, 8) == "Infinity" && !is_word_char(peek(8))) {
        advance(8);
        Value v;
        v.kind = Value::Kind::number;
        v.number = -std::numeric_limits<double>::infinity();
        return v;
      }
      if (!is_digit(peek())) fail("invalid number: expected a digit after '-', found ", found());
    }
    if (peek() == '0') {
      advance();
      if (is_digit(peek())) fail_at(start, "invalid number: leading zeros are not allowed");
    } else {
      while (is_digit(peek())) advance();
    }
    if (peek() == '.') {
      integral = false;
      advance();
      if (!is_digit(peek())) fail("invalid number: expected a digit after '.', found ", found());
      while (is_digit(peek())) advance();
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      advance();
      if (peek() == '+' || peek() == '-') advance();
      if (!is_digit(peek())) {
        fail("invalid number: expected a digit in the exponent, found ", found());
      }
      while (is_digit(peek())) advance();
    }
    std::string_view text = s_.substr(begin, pos_ - begin);
    Value v;
    v.kind = Value::Kind::number;
    const char* first = text.data();
    const char* last = text.data() + text.size();
    if (integral) {
      int64_t i = 0;
      auto res = std::from_chars(first, last, i);
      if (res.ec == std::errc() && res.ptr == last) {
        v.is_integer = true;
        v.integer = i;
        v.number = double(i);
        return v;
      }
    }
    double d = 0;
    auto res = std::from_chars(first, last, d);
    if (res.ec == std::errc::result_out_of_range) {
      d = out_of_range_value(text);
    } else if (res.ec != std::errc() || res.ptr != last) {
      fail_at(start, "invalid number '", text, "'");
    }
    v.number = d;
    return v;
  }

  std::string_view s_;
  const std::string& name_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
};

void write_string(const std::string& s, std::string& out) {
  static const char hex[] = "0123456789abcdef";
  auto u_escape = [&](uint32_t unit) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(unit >> shift) & 15];
  };
  out += '"';
  for (size_t pos = 0; pos < s.size();) {
    unsigned char c = uint8_t(s[pos]);
    if (c >= 0x20 && c < 0x7F) {
      if (c == '"' || c == '\\') out += '\\';
      out += char(c);
      ++pos;
      continue;
    }
    if (c < 0x80) {
      switch (c) {
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          u_escape(c);
      }
      ++pos;
      continue;
    }
    uint32_t cp = 0;
    size_t len = utf8_length(s, pos, true, &cp);
    if (len == 0) {
      u_escape(c);  // not UTF-8: written as if Latin-1 rather than dropped
      ++pos;
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      u_escape(0xD800 + (cp >> 10));
      u_escape(0xDC00 + (cp & 0x3FF));
    } else {
      u_escape(cp);
    }
    pos += len;
  }
  out += '"';
}

void write_number(const Value& v, std::string& out) {
  if (v.is_integer) {
    out += std::to_string(v.integer);
  } else if (std::isnan(v.number)) {
    out += "NaN";
  } else if (std::isinf(v.number)) {
    out += v.number < 0 ? "-Infinity" : "Infinity";
  } else {
    out += nnx::Value::real(v.number).repr();
  }
}

void write_value(const Value& v, int indent, int depth, std::string& out) {
  auto newline = [&](int level) {
    out += '\n';
    out.append(size_t(indent) * size_t(level), ' ');
  };
  switch (v.kind) {
    case Value::Kind::null:
      out += "null";
      return;
    case Value::Kind::boolean:
      out += v.b ? "true" : "false";
      return;
    case Value::Kind::number:
      write_number(v, out);
      return;
    case Value::Kind::string:
      write_string(v.str, out);
      return;
    case Value::Kind::array:
      if (v.array.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.array.size(); ++k) {
        if (k) out += indent >= 0 ? "," : ", ";
        if (indent >= 0) newline(depth + 1);
        write_value(v.array[k], indent, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return;
    case Value::Kind::object:
      if (v.object.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (size_t k = 0; k < v.object.size(); ++k) {
        if (k) out += indent >= 0 ? "," : ", ";
        if (indent >= 0) newline(depth + 1);
        write_string(v.object[k].first, out);
        out += ": ";
        write_value(v.object[k].second, indent, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return;
  }
}

}  // namespace

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : object) {
    if (k == key) return &v;
  }
  return nullptr;
}

const char* Value::kind_name() const {
  switch (kind) {
    case Kind::null:
      return "null";
    case Kind::boolean:
      return "boolean";
    case Kind::number:
      return is_integer ? "integer" : "number";
    case Kind::string:
      return "string";
    case Kind::array:
      return "array";
    case Kind::object:
      return "object";
  }
  return "?";
}

Value parse(std::string_view text, const std::string& name) {
  return Parser(text, name).parse_document();
}

Value parse_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    fail(ErrorKind::io, "cannot read '", path, "': it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::io, "cannot open '", path, "': ", std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(ErrorKind::io, "cannot read '", path, "'");
  return parse(text, path);
}

std::string dump(const Value& value, int indent) {
  std::string out;
  write_value(value, indent, 0, out);
  return out;
}

}  // namespace nnx::json
