// Tests of safetensors reading and writing: round trips of every dtype, the header layout, and
// damaged headers and offsets, each of which must end in an nnx::Error naming the problem.
#include "importer/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

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

Tensor patterned(const Shape& shape, DType dtype, int seed = 0) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.raw_data());
  for (size_t k = 0; k < t.nbytes(); ++k) p[k] = uint8_t(k * 29 + seed * 13 + 1);
  if (dtype == DType::boolean) {
    for (size_t k = 0; k < t.nbytes(); ++k) p[k] &= 1;
  }
  return t;
}

// A file from a header and data, laid out by hand.
std::string file_bytes(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + data;
}

TEST(Safetensors, RoundTripsEveryDtype) {
  TempDir dir;
  NamedTensors tensors;
  int seed = 0;
  for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i64, DType::i32,
                   DType::i16, DType::i8, DType::u8, DType::boolean}) {
    tensors.emplace_back("layer_000_type_X." + std::string(dtype_name(dt)),
                         patterned({3, 1, 5}, dt, seed++));
  }
  tensors.emplace_back("scalar", Tensor::scalar(12, DType::i64));
  tensors.emplace_back("empty", Tensor::empty({0, 4}, DType::f32));
  Tensor base = patterned({4, 6}, DType::f32, 7);
  tensors.emplace_back("transposed", base.as_strided({6, 4}, {1, 6}, 0));
  tensors.emplace_back("name with \"quotes\" \\ and \t tab", patterned({2}, DType::u8));
  std::string path = dir.file("w.safetensors");
  write_safetensors(path, tensors);
  NamedTensors back = read_safetensors(path);
  ASSERT_EQ(back.size(), tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    EXPECT_EQ(back[k].first, tensors[k].first);
    EXPECT_EQ(back[k].second.str(), tensors[k].second.str()) << tensors[k].first;
    if (tensors[k].second.numel() > 0) {
      EXPECT_TRUE(back[k].second.bitwise_equal(tensors[k].second)) << tensors[k].first;
    }
    EXPECT_TRUE(back[k].second.is_contiguous());
  }
  EXPECT_EQ(dir.listing().size(), 1u);  // no temporary left behind

  // The layout: 8-byte length, a JSON object padded with spaces to 8-byte alignment.
  std::string bytes = read_file(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find("\"dtype\":\"BF16\""), std::string::npos);
  EXPECT_NE(header.find("\"__metadata__\":{\"format\":\"pt\"}"), std::string::npos);
}

TEST(Safetensors, ReadsHandWrittenFiles) {
  TempDir dir;
  // Keys out of data order, metadata, whitespace, as other writers produce.
  float a[2] = {1.5f, -2};
  int64_t b = 77;
  std::string data(reinterpret_cast<const char*>(&b), 8);
  data += std::string(reinterpret_cast<const char*>(a), 8);
  std::string header = R"({ "__metadata__": {"format": "pt", "x": "y"},
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    "b": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]} }   )";
  write_file(dir.file("h.safetensors"), file_bytes(header, data));
  NamedTensors t = read_safetensors(dir.file("h.safetensors"));
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].first, "a");
  EXPECT_EQ(t[0].second.at_flat(0), 1.5);
  EXPECT_EQ(t[0].second.at_flat(1), -2.0);
  EXPECT_EQ(t[1].first, "b");
  EXPECT_EQ(t[1].second.dim(), 0);
  EXPECT_EQ(t[1].second.item(), 77.0);
  // Bools are normalised to 0/1.
  write_file(dir.file("b.safetensors"),
             file_bytes(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                        std::string("\x00\x05\x01", 3)));
  Tensor m = read_safetensors(dir.file("b.safetensors"))[0].second;
  EXPECT_EQ(static_cast<const uint8_t*>(m.raw_data())[1], 1);
  // The same from bytes in memory (what tests/fuzz/fuzz_safetensors feeds), named as asked.
  std::string bytes = file_bytes(header, data);
  NamedTensors mem = parse_safetensors(bytes.data(), bytes.size(), "mem.safetensors");
  ASSERT_EQ(mem.size(), 2u);
  EXPECT_EQ(mem[0].second.at_flat(1), -2.0);
  EXPECT_EQ(mem[1].second.item(), 77.0);
  expect_error([] { parse_safetensors(nullptr, 0, "none.safetensors"); },
               "none.safetensors: truncated safetensors file: 0 bytes");
}

TEST(Safetensors, DamagedFiles) {
  TempDir dir;
  std::string path = dir.file("d.safetensors");
  auto check = [&](const std::string& bytes, const std::string& needle,
                   ErrorKind kind = ErrorKind::format) {
    SCOPED_TRACE(needle);
    write_file(path, bytes);
    expect_error([&] { read_safetensors(path); }, needle, kind);
  };
  std::string f8(8, '\0');
  auto one = [](const std::string& info) { return "{\"t\":" + info + "}"; };
  check("abc", "truncated safetensors file: 3 bytes");
  check(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}",
        "the header of 9223372036854775807 bytes runs past the end of the file (size 10)");
  check(file_bytes("[1, 2]", ""), "does not start with '{'");
  check(file_bytes("{\"t\": ", ""), path);  // JSON syntax error, naming the file
  check(file_bytes(one("[]"), ""), "tensor 't': expected an object, found");
  check(file_bytes(one(R"({"dtype":"F32","shape":[2]})"), ""),
        "needs 'dtype', 'shape' and 'data_offsets'");
  check(file_bytes(one(R"({"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]})"), "ab"),
        "dtype 'F8_E4M3' is not supported", ErrorKind::unsupported);
  check(file_bytes(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), f8),
        "'shape' must hold non-negative integers");
  check(file_bytes(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
                   f8),
        "overflows int64");
  check(file_bytes(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,16]})"), f8),
        "data_offsets [0, 16] lie outside the 8 bytes of data");
  check(file_bytes(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), f8), "lie outside");
  check(file_bytes(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), f8),
        "shape [3] of F32 needs 3 elements, but data_offsets span 8 bytes");
  check(file_bytes(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), f8 + "x"),
        "the tensors cover 8 bytes of data but the file has 9");
  check(file_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                       "b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                   std::string(6, 'x')),
        "tensor 'b' starts at data offset 2 but the previous tensor ends at 4 (overlap)");
  check(file_bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},
                       "b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                   std::string(6, 'x')),
        "(a hole)");
  check(file_bytes(one(R"({"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]})"),
                   "abcd"),
        "9 dimensions", ErrorKind::unsupported);
  expect_error([&] { read_safetensors(dir.file("missing.safetensors")); }, "missing.safetensors",
               ErrorKind::io);

  // Truncated anywhere: an error, never a crash.
  NamedTensors tensors = {{"x", patterned({5, 7}, DType::f32)}, {"y", patterned({3}, DType::i64)}};
  write_safetensors(path, tensors);
  std::string good = read_file(path);
  for (size_t cut = 0; cut < good.size(); cut += 7) {
    write_file(path, good.substr(0, cut));
    EXPECT_THROW(read_safetensors(path), Error) << "cut at " << cut;
  }
}

TEST(Safetensors, WriteErrors) {
  TempDir dir;
  Tensor t = patterned({2}, DType::f32);
  expect_error(
      [&] {
        write_safetensors(dir.file("x.safetensors"), {{"a", t}, {"a", t}});
      },
      "tensor name 'a' given twice", ErrorKind::usage);
  expect_error(
      [&] {
        write_safetensors(dir.file("x.safetensors"), {{"a", Tensor()}});
      },
      "tensor 'a' is undefined", ErrorKind::usage);
  expect_error(
      [&] {
        write_safetensors(dir.file("no/such/dir/x.safetensors"), {{"a", t}});
      },
      "no/such/dir/x.safetensors", ErrorKind::io);
  EXPECT_EQ(dir.listing().size(), 0u);
}

}  // namespace
}  // namespace nnx
