// NumPy .npy reading (versions 1.0-3.0, C or Fortran order) and writing (C order, atomic). The
// header is a Python dict literal; it is parsed strictly and every length checked.
#include "nnx/npy.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>

#include "nnx/error.h"

namespace nnx {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

struct Descr {
  std::string_view code;  // without the byte-order character
  DType dtype;
};
constexpr Descr kDescrs[] = {{"f4", DType::f32}, {"f8", DType::f64}, {"f2", DType::f16},
                             {"i8", DType::i64}, {"i4", DType::i32}, {"i2", DType::i16},
                             {"i1", DType::i8},  {"u1", DType::u8},  {"b1", DType::boolean}};

// The header dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& name) : s_(text), name_(name) {}

  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;

  void parse() {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      std::string key = string_literal();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (have_descr) error("key 'descr' given twice");
        if (peek() != '\'' && peek() != '"') {
          error("'descr' must be a string such as '<f4' (structured dtypes are not supported)");
        }
        descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_fortran) error("key 'fortran_order' given twice");
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        if (have_shape) error("key 'shape' given twice");
        shape_tuple();
        have_shape = true;
      } else {
        error("unexpected key '", key, "'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != '}') error("expected ',' or '}'");
    }
    ++pos_;
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' ||
                                s_[pos_] == '\r' || s_[pos_] == '\0')) {
      ++pos_;
    }
    if (pos_ != s_.size()) error("unexpected text after the header dict");
    if (!have_descr || !have_fortran || !have_shape) {
      error("the header must give 'descr', 'fortran_order' and 'shape'");
    }
  }

 private:
  template <class... Parts>
  [[noreturn]] void error(const Parts&... parts) const {
    fail(ErrorKind::format, name_, ": bad .npy header: ", parts..., " (at header character ", pos_,
         ": \"", std::string(s_.substr(0, 120)), "\")");
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n')) ++pos_;
  }
  void expect(char c) {
    if (peek() != c) error("expected '", std::string(1, c), "'");
    ++pos_;
  }
  std::string string_literal() {
    char quote = peek();
    if (quote != '\'' && quote != '"') error("expected a quoted string");
    size_t end = s_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) error("unterminated string");
    std::string out(s_.substr(pos_ + 1, end - pos_ - 1));
    if (out.find('\\') != std::string::npos) error("escapes in strings are not supported");
    pos_ = end + 1;
    return out;
  }
  bool boolean() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    error("'fortran_order' must be True or False");
  }
  void shape_tuple() {
    expect('(');
    bool comma_after_last = false;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      int64_t v = 0;
      const char* first = s_.data() + pos_;
      const char* last = s_.data() + s_.size();
      auto [ptr, ec] = std::from_chars(first, last, v);
      if (ec == std::errc::result_out_of_range) error("a dimension does not fit in int64");
      if (ec != std::errc() || ptr == first) error("'shape' must be a tuple of integers");
      if (v < 0) error("negative dimension ", v);
      pos_ += ptr - first;
      if (peek() == 'L') ++pos_;  // Python 2 longs
      shape.push_back(v);
      skip_space();
      comma_after_last = peek() == ',';
      if (comma_after_last) {
        ++pos_;
        continue;
      }
      if (peek() != ')') error("expected ',' or ')' in 'shape'");
    }
    ++pos_;
    // In Python (3) is an int, not a tuple.
    if (shape.size() == 1 && !comma_after_last) error("'shape' (n) needs a comma to be a tuple");
  }

  std::string_view s_;
  const std::string& name_;
  size_t pos_ = 0;
};

void write_file_atomically(const std::string& path, const std::string& head, const void* data,
                           size_t nbytes) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(ErrorKind::io, "cannot write '", path, "': ", std::strerror(errno));
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size() &&
            (nbytes == 0 || std::fwrite(data, 1, nbytes, f) == nbytes) && std::fflush(f) == 0 &&
            ::fsync(fileno(f)) == 0;
  int err = errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(tmp.c_str());
    fail(ErrorKind::io, "cannot write '", path, "': ", std::strerror(err));
  }
}

}  // namespace

Tensor parse_npy(const void* data, size_t size, const std::string& name) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (size < kMagicLen + 4 || std::memcmp(p, kMagic, kMagicLen) != 0) {
    fail(ErrorKind::format, name, ": not a .npy file (",
         size < kMagicLen + 4 ? "only " + std::to_string(size) + " bytes"
                              : std::string("no \\x93NUMPY magic"),
         ")");
  }
  int major = p[6], minor = p[7];
  if (major < 1 || major > 3 || minor != 0) {
    fail(ErrorKind::format, name, ": unsupported .npy format version ", major, ".", minor,
         " (1.0, 2.0 and 3.0 are supported)");
  }
  size_t header_start, header_len;
  if (major == 1) {
    uint16_t n;
    std::memcpy(&n, p + 8, 2);
    header_start = 10;
    header_len = n;
  } else {
    if (size < 12) fail(ErrorKind::format, name, ": truncated .npy file: ", size, " bytes");
    uint32_t n;
    std::memcpy(&n, p + 8, 4);
    header_start = 12;
    header_len = n;
  }
  if (header_len > size - header_start) {
    fail(ErrorKind::format, name, ": truncated .npy file: the header of ", header_len,
         " bytes runs past the end of the file (size ", size, ")");
  }
  HeaderParser header(std::string_view(reinterpret_cast<const char*>(p + header_start), header_len),
                      name);
  header.parse();

  const std::string& d = header.descr;
  std::optional<DType> dtype;
  bool swap = false;
  if (d.size() >= 2) {
    std::string_view code = std::string_view(d).substr(1);
    for (const Descr& e : kDescrs) {
      if (e.code == code) dtype = e.dtype;
    }
    char order = d[0];
    bool one_byte = dtype && dtype_size(*dtype) == 1;
    if (order == '>' && !one_byte) {
      swap = true;
    } else if (order != '<' && order != '|' && order != '=' && order != '>') {
      dtype.reset();
    } else if (order == '|' && !one_byte) {
      dtype.reset();
    }
  }
  if (!dtype) {
    fail(ErrorKind::unsupported, name, ": .npy dtype '", d,
         "' is not supported (<f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1 are)");
  }
  if (header.shape.size() > size_t(Shape::kMaxDims)) {
    fail(ErrorKind::unsupported, name, ": ", header.shape.size(), " dimensions, at most ",
         Shape::kMaxDims, " are supported");
  }
  int64_t numel = 1;
  for (int64_t v : header.shape) {
    if (__builtin_mul_overflow(numel, v, &numel)) {
      fail(ErrorKind::format, name, ": the element count of shape overflows int64");
    }
  }
  Shape shape(header.shape);
  size_t elem = dtype_size(*dtype);
  uint64_t nbytes;
  size_t data_start = header_start + header_len;
  if (__builtin_mul_overflow(uint64_t(numel), uint64_t(elem), &nbytes) ||
      nbytes != size - data_start) {
    fail(ErrorKind::format, name, ": shape ", shape.str(), " of '", d, "' needs ", nbytes,
         " bytes of data, but the file has ", size - data_start, " after the header",
         nbytes > size - data_start ? " (truncated)" : "");
  }
  std::shared_ptr<Storage> storage = Storage::allocate(size_t(nbytes), Device::cpu());
  auto* dst = static_cast<uint8_t*>(storage->data());
  if (nbytes > 0) std::memcpy(dst, p + data_start, size_t(nbytes));
  if (swap) {
    for (size_t k = 0; k + elem <= nbytes; k += elem) {
      for (size_t a = 0, b = elem - 1; a < b; ++a, --b) std::swap(dst[k + a], dst[k + b]);
    }
  }
  // Bytes other than 0 and 1 are not valid C++ bools.
  if (*dtype == DType::boolean) {
    for (size_t k = 0; k < nbytes; ++k) dst[k] = dst[k] != 0;
  }
  if (!header.fortran || shape.size() <= 1 || numel == 0) {
    return Tensor::from_storage(storage, shape, *dtype);
  }
  // Fortran order: the first index varies fastest. View it so, then copy into C order.
  Shape strides;
  int64_t stride = 1;
  for (int k = 0; k < shape.size(); ++k) {
    strides.push_back(stride);
    stride *= shape[k];  // cannot overflow: the product of all dimensions did not
  }
  return Tensor::from_storage(storage, shape, strides, *dtype, 0).contiguous();
}

Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::io, "cannot open '", path, "': ", std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(ErrorKind::io, "cannot read '", path, "': ", std::strerror(errno));
  return parse_npy(bytes.data(), bytes.size(), path);
}

void write_npy(const std::string& path, const Tensor& tensor) {
  NNX_CHECK(tensor.defined(), ErrorKind::usage, "write_npy '", path, "': undefined tensor");
  const char* descr = nullptr;
  switch (tensor.dtype()) {
    case DType::f32:
      descr = "<f4";
      break;
    case DType::f64:
      descr = "<f8";
      break;
    case DType::f16:
      descr = "<f2";
      break;
    case DType::i64:
      descr = "<i8";
      break;
    case DType::i32:
      descr = "<i4";
      break;
    case DType::i16:
      descr = "<i2";
      break;
    case DType::i8:
      descr = "|i1";
      break;
    case DType::u8:
      descr = "|u1";
      break;
    case DType::boolean:
      descr = "|b1";
      break;
    case DType::bf16:
      fail(ErrorKind::unsupported, "write_npy '", path,
           "': .npy has no bfloat16; convert the tensor to float32 first");
  }
  Tensor t = tensor.device().is_cpu() ? tensor : tensor.to(Device::cpu());
  t = t.contiguous();
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (int d = 0; d < t.dim(); ++d) {
    if (d) dict += ", ";
    dict += std::to_string(t.size(d));
  }
  dict += t.dim() == 1 ? ",), }" : "), }";
  // NumPy pads the header with spaces so that the data starts 64-byte aligned.
  bool v2 = dict.size() + 1 + 10 + 63 > 0xffff;
  size_t prefix = v2 ? 12 : 10;
  size_t total = prefix + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string head(kMagic, kMagicLen);
  head += char(v2 ? 2 : 1);
  head += char(0);
  if (v2) {
    uint32_t n = uint32_t(dict.size());
    head.append(reinterpret_cast<const char*>(&n), 4);
  } else {
    uint16_t n = uint16_t(dict.size());
    head.append(reinterpret_cast<const char*>(&n), 2);
  }
  head += dict;
  write_file_atomically(path, head, t.nbytes() ? t.raw_data() : nullptr, t.nbytes());
}

}  // namespace nnx
