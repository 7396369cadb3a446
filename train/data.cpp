// Training data: IDX and .npy arrays, samples paired with targets, batches gathered by index.
#include "nnx/data.h"

#include <zlib.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "nnx/error.h"
#include "nnx/npy.h"

namespace nnx {

namespace {

constexpr size_t kMaxBytes = size_t(1) << 34;  // 16 GiB: a data set in memory

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  NNX_CHECK(f, ErrorKind::io, path, ": cannot open");
  auto size = size_t(f.tellg());
  NNX_CHECK(size <= kMaxBytes, ErrorKind::format, path, ": larger than ", kMaxBytes, " bytes");
  std::string out(size, '\0');
  f.seekg(0);
  f.read(out.data(), std::streamsize(size));
  NNX_CHECK(size_t(f.gcount()) == size, ErrorKind::io, path, ": read failed");
  return out;
}

// Inflates gzip data (every member), capped at `limit` bytes.
std::string gunzip(const unsigned char* data, size_t size, const std::string& name, size_t limit) {
  z_stream z{};
  NNX_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, ErrorKind::device, "zlib: out of memory");
  std::string out;
  char chunk[1 << 16];
  z.next_in = const_cast<Bytef*>(data);
  NNX_CHECK(size <= UINT32_MAX, ErrorKind::format, name, ": gzip data over 4 GiB");
  z.avail_in = uInt(size);
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    int rc = inflate(&z, Z_NO_FLUSH);
    out.append(chunk, sizeof chunk - z.avail_out);
    if (out.size() > limit) {
      inflateEnd(&z);
      fail(ErrorKind::format, name, ": inflates to more than ", limit, " bytes");
    }
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      inflateReset(&z);  // a further gzip member
      continue;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      inflateEnd(&z);
      fail(ErrorKind::format, name, ": damaged gzip data");
    }
    if (z.avail_in == 0 && z.avail_out != 0) {
      inflateEnd(&z);
      fail(ErrorKind::format, name, ": truncated gzip data");
    }
  }
  inflateEnd(&z);
  return out;
}

uint32_t big_endian32(const unsigned char* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

bool looks_like_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[6] = {};
  f.read(magic, 6);
  return f.gcount() == 6 && std::memcmp(magic, "\x93NUMPY", 6) == 0;
}

}  // namespace

Tensor read_idx(const std::string& path) {
  std::string bytes = read_file(path);
  return parse_idx(bytes.data(), bytes.size(), path);
}

Tensor parse_idx(const void* data, size_t size, const std::string& path) {
  const auto* raw = static_cast<const unsigned char*>(data);
  std::string bytes;
  if (size >= 2 && raw[0] == 0x1f && raw[1] == 0x8b)
    bytes = gunzip(raw, size, path, kMaxBytes);
  else
    bytes.assign(reinterpret_cast<const char*>(raw), size);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  NNX_CHECK(bytes.size() >= 4 && p[0] == 0 && p[1] == 0, ErrorKind::format, path,
            ": not an IDX file (expected magic 00 00 TT NN)");
  int type = p[2], ndim = p[3];
  NNX_CHECK(ndim >= 1 && ndim <= 8, ErrorKind::format, path, ": IDX with ", ndim,
            " dimensions (expected 1 to 8)");
  size_t elem = 0;
  DType dtype = DType::u8;
  switch (type) {
    case 0x08:
      elem = 1, dtype = DType::u8;
      break;
    case 0x09:
      elem = 1, dtype = DType::i8;
      break;
    case 0x0B:
      elem = 2, dtype = DType::i16;
      break;
    case 0x0C:
      elem = 4, dtype = DType::i32;
      break;
    case 0x0D:
      elem = 4, dtype = DType::f32;
      break;
    case 0x0E:
      elem = 8, dtype = DType::f64;
      break;
    default:
      fail(ErrorKind::format, path, ": IDX element type ", type,
           " (expected 8, 9, 11, 12, 13 or 14: ubyte, byte, short, int, float, double)");
  }
  size_t header = 4 + 4 * size_t(ndim);
  NNX_CHECK(bytes.size() >= header, ErrorKind::format, path, ": truncated IDX header");
  std::vector<int64_t> dims;
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    uint32_t n = big_endian32(p + 4 + 4 * d);
    NNX_CHECK(n <= kMaxBytes && (n == 0 || count <= kMaxBytes / n), ErrorKind::format, path,
              ": IDX dimensions too large");
    dims.push_back(int64_t(n));
    count *= n;
  }
  NNX_CHECK(bytes.size() - header == count * elem, ErrorKind::format, path, ": IDX body of ",
            bytes.size() - header, " bytes, expected ", count * elem, " for shape ",
            Shape(dims).str());
  Tensor t = Tensor::empty(Shape(dims), dtype);
  auto* out = static_cast<unsigned char*>(t.raw_data());
  const unsigned char* src = p + header;
  if (elem == 1) {
    std::memcpy(out, src, count);
  } else {
    for (size_t i = 0; i < count; ++i)  // big-endian elements
      for (size_t b = 0; b < elem; ++b) out[i * elem + b] = src[i * elem + (elem - 1 - b)];
  }
  return t;
}

Tensor read_array(const std::string& path) {
  return looks_like_npy(path) ? read_npy(path) : read_idx(path);
}

Dataset load_dataset(const std::string& x_path, const std::string& y_path) {
  Tensor x = read_array(x_path);
  Tensor y = read_array(y_path);
  NNX_CHECK(x.dim() == 3 || x.dim() == 4, ErrorKind::shape, x_path,
            ": expected samples N,C,H,W (or N,H,W), found shape ", x.shape().str());
  NNX_CHECK(y.dim() >= 1, ErrorKind::shape, y_path, ": expected targets with N first, found ",
            "a scalar");
  NNX_CHECK(x.size(0) == y.size(0), ErrorKind::shape, y_path, ": ", y.size(0), " targets for the ",
            x.size(0), " samples of ", x_path);
  if (x.dim() == 3) x = x.unsqueeze(1);
  if (x.dtype() == DType::u8) {
    Tensor f = x.to(DType::f32).contiguous();
    float* d = f.data<float>();
    for (int64_t i = 0; i < f.numel(); ++i) d[i] *= 1.0f / 255.0f;
    x = f;
  } else {
    x = x.to(DType::f32).contiguous();
  }
  bool integral = y.dtype() == DType::i64 || y.dtype() == DType::i32 || y.dtype() == DType::i16 ||
                  y.dtype() == DType::i8 || y.dtype() == DType::u8;
  y = (integral ? y.to(DType::i64) : y.to(DType::f32)).contiguous();
  return {x, y};
}

Tensor gather_rows(const Tensor& t, std::span<const int64_t> index) {
  Tensor src = t.contiguous();
  std::vector<int64_t> dims(src.shape().begin(), src.shape().end());
  int64_t rows = dims.empty() ? 0 : dims[0];
  dims[0] = int64_t(index.size());
  Tensor out = Tensor::empty(Shape(dims), src.dtype());
  size_t row_bytes = rows ? size_t(src.numel() / rows) * dtype_size(src.dtype()) : 0;
  const auto* s = static_cast<const char*>(src.raw_data());
  auto* d = static_cast<char*>(out.raw_data());
  for (size_t i = 0; i < index.size(); ++i) {
    NNX_CHECK(index[i] >= 0 && index[i] < rows, ErrorKind::usage, "gather_rows: row ", index[i],
              " of ", rows);
    std::memcpy(d + i * row_bytes, s + size_t(index[i]) * row_bytes, row_bytes);
  }
  return out;
}

}  // namespace nnx
