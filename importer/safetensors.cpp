// safetensors reading and writing: the JSON header is parsed with importer/json.h and every
// offset, shape and length in it is checked against the file before any byte is copied.
#include "importer/safetensors.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "importer/json.h"
#include "importer/zip.h"
#include "nnx/error.h"
#include "runtime/mapped_file.h"

namespace nnx {

namespace {

// The reference implementation refuses headers above 100 MB as well.
constexpr uint64_t kMaxHeader = 100u << 20;

struct DTypeName {
  std::string_view name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F32", DType::f32}, {"F16", DType::f16},     {"BF16", DType::bf16}, {"F64", DType::f64},
    {"I64", DType::i64}, {"I32", DType::i32},     {"I16", DType::i16},   {"I8", DType::i8},
    {"U8", DType::u8},   {"BOOL", DType::boolean}};

std::string_view safetensors_dtype(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  fail(ErrorKind::unsupported, "safetensors has no dtype for ", dtype_name(dtype));
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
}

struct Pending {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

}  // namespace

NamedTensors parse_safetensors(const void* bytes, size_t size, const std::string& path,
                               std::shared_ptr<const void> owner) {
  static const uint8_t kEmpty = 0;
  const uint8_t* data = bytes ? static_cast<const uint8_t*>(bytes) : &kEmpty;
  if (!bytes) size = 0;
  if (size < 8) {
    fail(ErrorKind::format, path, ": truncated safetensors file: ", size,
         " bytes, fewer than the 8-byte header length");
  }
  uint64_t header_len;
  std::memcpy(&header_len, data, 8);
  if (header_len > size - 8) {
    fail(ErrorKind::format, path, ": truncated safetensors file: the header of ", header_len,
         " bytes runs past the end of the file (size ", size, ")");
  }
  if (header_len > kMaxHeader) {
    fail(ErrorKind::format, path, ": safetensors header of ", header_len,
         " bytes exceeds the 100 MB limit");
  }
  std::string_view text(reinterpret_cast<const char*>(data + 8), size_t(header_len));
  if (text.empty() || text.front() != '{') {
    fail(ErrorKind::format, path, ": the safetensors header does not start with '{'");
  }
  json::Value header = json::parse(text, path);
  if (!header.is_object()) {
    fail(ErrorKind::format, path, ": the safetensors header is a JSON ", header.kind_name(),
         ", not an object");
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_len = size - data_start;

  std::vector<Pending> pending;
  std::unordered_set<std::string> seen;
  for (const auto& [name, info] : header.object) {
    if (name == "__metadata__") continue;
    std::string where = path + ": tensor '" + name + "'";
    if (!seen.insert(name).second) fail(ErrorKind::format, where, " appears twice in the header");
    if (!info.is_object()) {
      fail(ErrorKind::format, where, ": expected an object, found ", info.kind_name());
    }
    const json::Value* dtype = info.find("dtype");
    const json::Value* shape = info.find("shape");
    const json::Value* offsets = info.find("data_offsets");
    if (!dtype || !shape || !offsets) {
      fail(ErrorKind::format, where, ": needs 'dtype', 'shape' and 'data_offsets'");
    }
    if (!dtype->is_string()) fail(ErrorKind::format, where, ": 'dtype' must be a string");
    Pending p{name, DType::f32, {}, 0, 0};
    auto it = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                           [&](const DTypeName& d) { return d.name == dtype->str; });
    if (it == std::end(kDTypes)) {
      fail(ErrorKind::unsupported, where, ": dtype '", dtype->str,
           "' is not supported (F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL are)");
    }
    p.dtype = it->dtype;
    if (!shape->is_array()) fail(ErrorKind::format, where, ": 'shape' must be an array");
    if (shape->array.size() > size_t(Shape::kMaxDims)) {
      fail(ErrorKind::unsupported, where, ": ", shape->array.size(), " dimensions, at most ",
           Shape::kMaxDims, " are supported");
    }
    int64_t numel = 1;
    for (const json::Value& d : shape->array) {
      if (!d.is_int() || d.integer < 0) {
        fail(ErrorKind::format, where, ": 'shape' must hold non-negative integers");
      }
      if (__builtin_mul_overflow(numel, d.integer, &numel)) {
        fail(ErrorKind::format, where, ": the element count of its shape overflows int64");
      }
      p.shape.push_back(d.integer);
    }
    if (!offsets->is_array() || offsets->array.size() != 2 || !offsets->array[0].is_int() ||
        !offsets->array[1].is_int() || offsets->array[0].integer < 0 ||
        offsets->array[1].integer < 0) {
      fail(ErrorKind::format, where,
           ": 'data_offsets' must be [begin, end], two non-negative integers");
    }
    p.begin = uint64_t(offsets->array[0].integer);
    p.end = uint64_t(offsets->array[1].integer);
    if (p.begin > p.end || p.end > data_len) {
      fail(ErrorKind::format, where, ": data_offsets [", p.begin, ", ", p.end, "] lie outside the ",
           data_len, " bytes of data");
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(uint64_t(numel), uint64_t(dtype_size(p.dtype)), &nbytes) ||
        nbytes != p.end - p.begin) {
      fail(ErrorKind::format, where, ": shape ", p.shape.str(), " of ", dtype->str, " needs ",
           numel, " elements, but data_offsets span ", p.end - p.begin, " bytes");
    }
    pending.push_back(std::move(p));
  }

  // As the reference implementation demands, the tensors tile the data exactly.
  std::vector<const Pending*> order;
  for (const Pending& p : pending) order.push_back(&p);
  std::sort(order.begin(), order.end(), [](const Pending* a, const Pending* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Pending* p : order) {
    if (p->begin != cursor) {
      fail(ErrorKind::format, path, ": tensor '", p->name, "' starts at data offset ", p->begin,
           " but the previous tensor ends at ", cursor,
           p->begin < cursor ? " (overlap)" : " (a hole)");
    }
    cursor = p->end;
  }
  if (cursor != data_len) {
    fail(ErrorKind::format, path, ": the tensors cover ", cursor,
         " bytes of data but the file has ", data_len, " after the header");
  }

  NamedTensors out;
  out.reserve(pending.size());
  for (const Pending& p : pending) {
    size_t nbytes = size_t(p.end - p.begin);
    const uint8_t* src = data + data_start + p.begin;
    if (owner && p.dtype != DType::boolean &&
        reinterpret_cast<uintptr_t>(src) % dtype_size(p.dtype) == 0) {
      out.emplace_back(
          p.name, Tensor::from_storage(borrowed_storage(src, nbytes, owner), p.shape, p.dtype));
      continue;
    }
    std::shared_ptr<Storage> storage = Storage::allocate(nbytes, Device::cpu());
    auto* dst = static_cast<uint8_t*>(storage->data());
    if (nbytes > 0) std::memcpy(dst, src, nbytes);
    // Bytes other than 0 and 1 are not valid C++ bools.
    if (p.dtype == DType::boolean) {
      for (size_t k = 0; k < nbytes; ++k) dst[k] = dst[k] != 0;
    }
    out.emplace_back(p.name, Tensor::from_storage(std::move(storage), p.shape, p.dtype));
  }
  return out;
}

NamedTensors read_safetensors(const std::string& path, bool in_place) {
  std::shared_ptr<const MappedFile> file = MappedFile::open(path);
  return parse_safetensors(file->data(), file->size(), path,
                           in_place ? std::shared_ptr<const void>(file) : nullptr);
}

void write_safetensors(const std::string& path, const NamedTensors& tensors) {
  std::vector<Tensor> data;
  data.reserve(tensors.size());
  std::unordered_set<std::string> names;
  std::string header = "{";
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    NNX_CHECK(tensor.defined(), ErrorKind::usage, path, ": tensor '", name, "' is undefined");
    NNX_CHECK(name != "__metadata__", ErrorKind::usage, path,
              ": '__metadata__' cannot name a tensor");
    NNX_CHECK(names.insert(name).second, ErrorKind::usage, path, ": tensor name '", name,
              "' given twice");
    Tensor t = tensor.device().is_cpu() ? tensor : tensor.to(Device::cpu());
    t = t.contiguous();
    std::string_view dtype = safetensors_dtype(t.dtype());
    if (header.size() > 1) header += ',';
    append_json_string(header, name);
    header += ":{\"dtype\":\"";
    header += dtype;
    header += "\",\"shape\":[";
    for (int d = 0; d < t.dim(); ++d) {
      if (d) header += ',';
      header += std::to_string(t.size(d));
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + t.nbytes()) + "]}";
    offset += t.nbytes();
    data.push_back(std::move(t));
  }
  if (header.size() > 1) header += ',';
  header += "\"__metadata__\":{\"format\":\"pt\"}}";
  // Pad with spaces so that the data starts 8-byte aligned, as the reference writer does.
  header.append((8 - header.size() % 8) % 8, ' ');
  zip::write_file_atomically(path, [&](const zip::Writer::Sink& sink) {
    uint64_t len = header.size();
    sink(&len, 8);
    sink(header.data(), header.size());
    for (const Tensor& t : data) {
      if (t.nbytes() > 0) sink(t.raw_data(), t.nbytes());
    }
  });
}

}  // namespace nnx
