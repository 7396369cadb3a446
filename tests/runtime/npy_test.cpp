// Tests of .npy reading and writing: round trips, byte-identical output to numpy's, files numpy
// writes (versions 1-3, Fortran order, big-endian) and damaged headers and data.
#include "nnx/npy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "nnx/error.h"
#include "test_util.h"

namespace nnx {
namespace {

using testing_util::expect_error;
using testing_util::read_file;
using testing_util::TempDir;
using testing_util::write_file;

namespace fs = std::filesystem;
const std::string kPython = NNX_PYTHON;

// A version-1.0 file with `dict` as its header, padded as numpy pads.
std::string npy_bytes(std::string dict, const std::string& data, int major = 1) {
  size_t prefix = major == 1 ? 10 : 12;
  dict.append((64 - (prefix + dict.size() + 1) % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += char(major);
  out += char(0);
  uint32_t n = uint32_t(dict.size());
  out.append(reinterpret_cast<const char*>(&n), major == 1 ? 2 : 4);
  return out + dict + data;
}

Tensor parse(const std::string& bytes) {
  return parse_npy(bytes.data(), bytes.size(), "x.npy");
}

// base[k] = k * 0.25 - 1 (floats), k * 7 - 20 (ints), k * 3 (u8), k % 3 == 0 (bool).
Tensor ramp(const Shape& shape, DType dtype) {
  Tensor f = Tensor::empty(shape, DType::f64);
  for (int64_t k = 0; k < f.numel(); ++k) {
    f.data<double>()[k] = dtype == DType::boolean    ? double(k % 3 == 0)
                          : dtype == DType::u8       ? double(k * 3)
                          : dtype_is_floating(dtype) ? k * 0.25 - 1
                                                     : double(k * 7 - 20);
  }
  return f.to(dtype);
}

const std::pair<const char*, DType> kDtypes[] = {
    {"float32", DType::f32}, {"float64", DType::f64}, {"float16", DType::f16},
    {"int64", DType::i64},   {"int32", DType::i32},   {"int16", DType::i16},
    {"int8", DType::i8},     {"uint8", DType::u8},    {"bool", DType::boolean}};

TEST(Npy, RoundTripsEveryDtype) {
  TempDir dir;
  for (const auto& [name, dt] : kDtypes) {
    for (const Shape& shape : {Shape{2, 3, 4}, Shape{5}, Shape{}, Shape{0, 3}}) {
      SCOPED_TRACE(std::string(name) + shape.str());
      Tensor t = ramp(shape, dt);
      std::string path = dir.file(std::string(name) + ".npy");
      write_npy(path, t);
      Tensor back = read_npy(path);
      EXPECT_EQ(back.str(), t.str());
      if (t.numel() > 0) {
        EXPECT_TRUE(back.bitwise_equal(t));
      }
    }
  }
  // Non-contiguous input is written in C order.
  Tensor base = ramp({3, 4}, DType::f32);
  write_npy(dir.file("t.npy"), base.as_strided({4, 3}, {1, 4}, 0));
  Tensor back = read_npy(dir.file("t.npy"));
  EXPECT_EQ(back.shape(), (Shape{4, 3}));
  EXPECT_EQ(back.at_flat(1), base.at_flat(4));
  EXPECT_EQ(dir.listing().size(), std::size(kDtypes) + 1);  // no temporaries left
}

TEST(Npy, HeaderMatchesNumpyLayout) {
  TempDir dir;
  write_npy(dir.file("a.npy"), ramp({2, 3}, DType::f32));
  std::string bytes = read_file(dir.file("a.npy"));
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  uint16_t n;
  std::memcpy(&n, bytes.data() + 8, 2);
  EXPECT_EQ((10 + n) % 64, 0);
  EXPECT_EQ(
      bytes.substr(10, 60).find("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), 0u);
  EXPECT_EQ(bytes[10 + n - 1], '\n');
  write_npy(dir.file("b.npy"), ramp({7}, DType::i8));
  EXPECT_NE(
      read_file(dir.file("b.npy")).find("'descr': '|i1', 'fortran_order': False, 'shape': (7,), }"),
      std::string::npos);
  expect_error([&] { write_npy(dir.file("c.npy"), ramp({2}, DType::bf16)); }, "no bfloat16",
               ErrorKind::unsupported);
  expect_error([&] { write_npy(dir.file("no/dir/c.npy"), ramp({2}, DType::f32)); }, "no/dir/c.npy",
               ErrorKind::io);
}

TEST(Npy, ReadsFortranOrderAndOtherVersions) {
  // Fortran order: the first index varies fastest.
  float f[6] = {0, 1, 2, 3, 4, 5};
  Tensor t = parse(npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                             std::string(reinterpret_cast<const char*>(f), sizeof f)));
  ASSERT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_TRUE(t.is_contiguous());
  const double want[6] = {0, 2, 4, 1, 3, 5};
  for (int k = 0; k < 6; ++k) EXPECT_EQ(t.at_flat(k), want[k]) << k;
  // Version 2.0 and 3.0 headers, double quotes, Python 2 longs, a big-endian int.
  int32_t be = int32_t(__builtin_bswap32(uint32_t(-5)));
  std::string d(reinterpret_cast<const char*>(&be), 4);
  for (int major : {2, 3}) {
    Tensor v =
        parse(npy_bytes(R"({"descr": ">i4", "fortran_order": False, "shape": (1L,)})", d, major));
    EXPECT_EQ(v.shape(), (Shape{1}));
    EXPECT_EQ(v.at_flat(0), -5.0);
  }
  // 0-dim.
  double x = 2.5;
  Tensor s = parse(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
                             std::string(reinterpret_cast<const char*>(&x), 8)));
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item(), 2.5);
}

TEST(Npy, ReadsWhatNumpyWrites) {
  if (kPython.empty()) GTEST_SKIP() << "NNX_PYTHON is empty: no Python with numpy to write files";
  TempDir dir;
  std::string script = dir.file("gen.py");
  write_file(script, R"py(
import sys, numpy as np
out = sys.argv[1]
def ramp(shape, name):
    n = int(np.prod(shape))
    k = np.arange(n, dtype=np.float64)
    if name == 'bool': v = np.arange(n) % 3 == 0
    elif name == 'uint8': v = k * 3
    elif name.startswith('float'): v = k * 0.25 - 1
    else: v = k * 7 - 20
    return v.astype(name).reshape(shape)
for name in ['float32','float64','float16','int64','int32','int16','int8','uint8','bool']:
    a = ramp((2, 3, 4), name)
    np.save(f'{out}/{name}.npy', a)
    np.save(f'{out}/{name}_f.npy', np.asfortranarray(a))
    with open(f'{out}/{name}_v2.npy', 'wb') as f:
        np.lib.format.write_array(f, a, version=(2, 0))
    with open(f'{out}/{name}_v3.npy', 'wb') as f:
        np.lib.format.write_array(f, np.asfortranarray(a), version=(3, 0))
    np.save(f'{out}/{name}_be.npy', a.astype(a.dtype.newbyteorder('>')))
    np.save(f'{out}/{name}_0d.npy', ramp((), name))
    np.save(f'{out}/{name}_empty.npy', ramp((0, 2), name))
)py");
  ASSERT_EQ(std::system(("'" + kPython + "' '" + script + "' '" + dir.file("") + "'").c_str()), 0);
  for (const auto& [name, dt] : kDtypes) {
    Tensor want = ramp({2, 3, 4}, dt);
    for (const char* variant : {"", "_f", "_v2", "_v3", "_be"}) {
      SCOPED_TRACE(std::string(name) + variant);
      Tensor got = read_npy(dir.file(std::string(name) + variant + ".npy"));
      EXPECT_EQ(got.str(), want.str());
      EXPECT_TRUE(got.bitwise_equal(want));
    }
    Tensor s = read_npy(dir.file(std::string(name) + "_0d.npy"));
    EXPECT_EQ(s.dim(), 0);
    EXPECT_EQ(s.item(), ramp({}, dt).item());
    EXPECT_EQ(read_npy(dir.file(std::string(name) + "_empty.npy")).shape(), (Shape{0, 2}));
    // Our files are byte for byte numpy's.
    write_npy(dir.file("ours.npy"), want);
    EXPECT_TRUE(read_file(dir.file("ours.npy")) == read_file(dir.file(std::string(name) + ".npy")))
        << name;
  }
}

TEST(Npy, DamagedFiles) {
  const std::string f8(8, '\0');
  auto err = [&](const std::string& bytes, const std::string& needle,
                 ErrorKind kind = ErrorKind::format) {
    SCOPED_TRACE(needle);
    expect_error([&] { parse(bytes); }, needle, kind);
  };
  auto hdr = [](const std::string& descr, const std::string& fortran, const std::string& shape) {
    return "{'descr': " + descr + ", 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  };
  err("", "x.npy: not a .npy file (only 0 bytes)");
  err("PK\x03\x04 not numpy at all", "no \\x93NUMPY magic");
  err(std::string("\x93NUMPY\x04\x00\x00\x00", 10), "unsupported .npy format version 4.0");
  err(std::string("\x93NUMPY\x01\x00\xff\x00{", 11),
      "the header of 255 bytes runs past the end of the file (size 11)");
  err(std::string("\x93NUMPY\x02\x00\xff\xff", 10), "truncated .npy file: 10 bytes");
  err(npy_bytes("{'descr': '<f4', 'shape': (2,), }", f8),
      "must give 'descr', 'fortran_order' and 'shape'");
  err(npy_bytes(hdr("'<f4'", "False", "(2,)") + " extra", f8),
      "unexpected text after the header dict");
  err(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", f8),
      "unexpected key 'x'");
  err(npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", f8),
      "'descr' given twice");
  err(npy_bytes(hdr("[('a', '<f4')]", "False", "(2,)"), f8), "structured dtypes are not supported");
  err(npy_bytes(hdr("'<c8'", "False", "(1,)"), f8), "dtype '<c8' is not supported",
      ErrorKind::unsupported);
  err(npy_bytes(hdr("'|f4'", "False", "(2,)"), f8), "dtype '|f4' is not supported",
      ErrorKind::unsupported);
  err(npy_bytes(hdr("'<f4'", "maybe", "(2,)"), f8), "'fortran_order' must be True or False");
  err(npy_bytes(hdr("'<f4'", "False", "(2)"), f8), "needs a comma to be a tuple");
  err(npy_bytes(hdr("'<f4'", "False", "(-2,)"), f8), "negative dimension -2");
  err(npy_bytes(hdr("'<f4'", "False", "(2, x)"), f8), "'shape' must be a tuple of integers");
  err(npy_bytes(hdr("'<f4'", "False", "(99999999999999999999,)"), f8), "does not fit in int64");
  err(npy_bytes(hdr("'<f4'", "False", "(4294967296, 4294967296)"), f8), "overflows int64");
  err(npy_bytes(hdr("'<f4'", "False", "(1, 1, 1, 1, 1, 1, 1, 1, 1)"), f8), "9 dimensions",
      ErrorKind::unsupported);
  err(npy_bytes(hdr("'<f4'", "False", "(3,)"), f8),
      "shape [3] of '<f4' needs 12 bytes of data, but the file has 8 after the header (truncated)");
  err(npy_bytes(hdr("'<f4'", "False", "(1,)"), f8), "needs 4 bytes of data, but the file has 8");
  err(npy_bytes("{'descr': '<f4", f8), "unterminated string");
  err(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", f8),
      "expected ',' or '}'");
  expect_error([&] { read_npy("/nonexistent/q.npy"); }, "/nonexistent/q.npy", ErrorKind::io);
  // Bools are normalised to 0/1.
  Tensor b = parse(npy_bytes(hdr("'|b1'", "False", "(2,)"), std::string("\x00\x09", 2)));
  EXPECT_EQ(static_cast<const uint8_t*>(b.raw_data())[1], 1);

  // Truncated anywhere, or any byte damaged: an error or a tensor, never a crash.
  std::string good = npy_bytes(hdr("'<f8'", "True", "(3, 5)"), std::string(120, '\x3f'));
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_THROW(parse(good.substr(0, cut)), Error) << "cut at " << cut;
  }
  for (size_t at = 0; at < 140; ++at) {
    for (uint8_t x : {0x01, 0x20, 0x80}) {
      std::string damaged = good;
      damaged[at] = char(damaged[at] ^ x);
      try {
        parse(damaged);
      } catch (const Error&) {
      }
    }
  }
}

}  // namespace
}  // namespace nnx
