// The pickler of write_pth: emits the opcodes torch.save's protocol-2 pickles use, restricted to
// those torch 1.13's weights_only unpickler accepts (no BINFLOAT there: floats need torch >= 2).
#include "importer/pickle_writer.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <unordered_map>

#include "nnx/error.h"

namespace nnx::pickle {

namespace {

constexpr int kMaxDepth = 1000;
constexpr size_t kBatch = 1000;  // items per APPENDS/SETITEMS, as Python's pickler batches

const char* storage_type_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "FloatStorage";
    case DType::f64:
      return "DoubleStorage";
    case DType::f16:
      return "HalfStorage";
    case DType::bf16:
      return "BFloat16Storage";
    case DType::i64:
      return "LongStorage";
    case DType::i32:
      return "IntStorage";
    case DType::i16:
      return "ShortStorage";
    case DType::i8:
      return "CharStorage";
    case DType::u8:
      return "ByteStorage";
    case DType::boolean:
      return "BoolStorage";
  }
  fail(ErrorKind::unsupported, "write_pth: no torch storage type for dtype ", int(dtype));
}

bool valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    auto c = static_cast<uint8_t>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// The tensor as written: a CPU view with non-negative strides, and where its elements lie.
struct TensorPlan {
  Tensor t;
  size_t record = 0;
};

struct RecordPlan {
  std::shared_ptr<Storage> storage;
  DType dtype;
  int64_t begin = INT64_MAX, end = 0;  // elements viewed, [begin, end)
};

class Pickler {
 public:
  Pickled run(const py::Object& top) {
    collect(&top, 0);
    Pickled out;
    for (size_t k = 0; k < records_.size(); ++k) {
      RecordPlan& r = records_[k];
      if (r.begin > r.end) r.begin = r.end = 0;  // only empty tensors
      size_t es = dtype_size(r.dtype);
      out.storages.push_back({std::to_string(k), r.storage, size_t(r.begin) * es,
                              size_t(r.end - r.begin) * es, r.dtype});
    }
    op(0x80);
    op(2);
    write(top);
    op('.');
    out.bytes = std::move(buf_);
    return out;
  }

 private:
  // ---- pass 1: find the storages and the element range each must keep ----
  void collect(const py::Object* o, int depth) {
    NNX_CHECK(o != nullptr, ErrorKind::usage, "write_pth: a null object inside the data");
    NNX_CHECK(depth <= kMaxDepth, ErrorKind::usage, "write_pth: objects nested deeper than ",
              kMaxDepth, " levels (a cycle?)");
    switch (o->kind) {
      case py::Object::Kind::list:
      case py::Object::Kind::tuple:
        for (const auto& c : o->items) collect(c.get(), depth + 1);
        break;
      case py::Object::Kind::dict:
      case py::Object::Kind::ordered_dict:
        for (const auto& [k, v] : o->entries) {
          collect(k.get(), depth + 1);
          collect(v.get(), depth + 1);
        }
        break;
      case py::Object::Kind::tensor:
        plan_tensor(*o);
        break;
      default:
        break;
    }
  }

  void plan_tensor(const py::Object& o) {
    if (plans_.count(&o)) return;
    NNX_CHECK(o.tensor.defined(), ErrorKind::usage, "write_pth: an undefined tensor");
    Tensor t = o.tensor;
    if (!t.device().is_cpu()) t = t.to(Device::cpu());
    bool negative =
        std::any_of(t.strides().begin(), t.strides().end(), [](int64_t s) { return s < 0; });
    if (negative) t = t.contiguous();  // torch has no negative strides
    storage_type_name(t.dtype());
    auto key = std::make_pair(t.storage().get(), t.dtype());
    auto [it, inserted] = record_index_.emplace(key, records_.size());
    if (inserted) records_.push_back({t.storage(), t.dtype()});
    RecordPlan& r = records_[it->second];
    if (t.numel() > 0) {
      int64_t last = t.offset();
      for (int d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.strides()[d];
      r.begin = std::min(r.begin, t.offset());
      r.end = std::max(r.end, last + 1);
      NNX_CHECK(size_t(r.end) * dtype_size(t.dtype()) <= t.storage()->nbytes(), ErrorKind::usage,
                "write_pth: tensor ", t.str(), " reaches past the end of its storage");
    }
    plans_.emplace(&o, TensorPlan{t, it->second});
  }

  // ---- pass 2: the opcodes ----
  void op(uint8_t b) { buf_.push_back(char(b)); }
  template <class T>
  void le(T v) {
    char b[sizeof v];
    std::memcpy(b, &v, sizeof v);
    buf_.append(b, sizeof v);
  }

  void write_int(int64_t v) {
    if (v >= 0 && v < 0x100) {
      op('K');
      le<uint8_t>(uint8_t(v));
    } else if (v >= 0 && v < 0x10000) {
      op('M');
      le<uint16_t>(uint16_t(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      le<int32_t>(int32_t(v));
    } else {
      // LONG1: the shortest little-endian two's complement that keeps the sign.
      uint8_t bytes[8];
      std::memcpy(bytes, &v, 8);
      int n = 8;
      while (n > 1 && ((bytes[n - 1] == 0 && !(bytes[n - 2] & 0x80)) ||
                       (bytes[n - 1] == 0xff && (bytes[n - 2] & 0x80)))) {
        --n;
      }
      op(0x8a);
      le<uint8_t>(uint8_t(n));
      buf_.append(reinterpret_cast<const char*>(bytes), n);
    }
  }

  void write_string(std::string_view s) {
    NNX_CHECK(valid_utf8(s), ErrorKind::usage, "write_pth: string is not valid UTF-8: '",
              std::string(s.substr(0, 60)), "'");
    NNX_CHECK(s.size() <= UINT32_MAX, ErrorKind::usage, "write_pth: string of ", s.size(),
              " bytes is too long");
    op('X');
    le<uint32_t>(uint32_t(s.size()));
    buf_.append(s);
  }

  void memo_put() {
    uint32_t index = next_memo_++;
    if (index < 0x100) {
      op('q');
      le<uint8_t>(uint8_t(index));
    } else {
      op('r');
      le<uint32_t>(index);
    }
  }
  void memo_get(uint32_t index) {
    if (index < 0x100) {
      op('h');
      le<uint8_t>(uint8_t(index));
    } else {
      op('j');
      le<uint32_t>(index);
    }
  }

  // Globals are written once and fetched from the memo afterwards, as Python's pickler does.
  void write_global(const std::string& module, const std::string& name) {
    std::string key = module + "\n" + name + "\n";
    auto it = globals_.find(key);
    if (it != globals_.end()) return memo_get(it->second);
    op('c');
    buf_ += key;
    globals_.emplace(key, next_memo_);
    memo_put();
  }

  void write_empty_ordered_dict() {
    write_global("collections", "OrderedDict");
    op(')');
    op('R');
  }

  void write_tuple_of_ints(const Shape& s) {
    if (s.size() == 0) return op(')');
    if (s.size() > 3) op('(');
    for (int64_t v : s) write_int(v);
    op(s.size() > 3 ? 't' : uint8_t(0x84 + s.size()));
  }

  void write_tensor(const py::Object& o) {
    const TensorPlan& plan = plans_.at(&o);
    const Tensor& t = plan.t;
    const RecordPlan& r = records_[plan.record];
    if (o.requires_grad) write_global("torch._utils", "_rebuild_parameter");
    write_global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    // persistent id ('storage', torch.<X>Storage, key, location, numel)
    op('(');
    write_string("storage");
    write_global("torch", storage_type_name(t.dtype()));
    write_string(std::to_string(plan.record));
    write_string("cpu");
    write_int(r.end - r.begin);
    op('t');
    op('Q');
    write_int(t.numel() > 0 ? t.offset() - r.begin : 0);
    write_tuple_of_ints(t.shape());
    write_tuple_of_ints(t.strides());
    op(0x89);  // requires_grad: a Parameter carries it instead
    write_empty_ordered_dict();
    op('t');
    op('R');
    if (o.requires_grad) {
      op(0x88);
      write_empty_ordered_dict();
      op(0x87);  // (data, requires_grad, backward_hooks)
      op('R');
    }
  }

  void write(const py::Object& o) {
    using K = py::Object::Kind;
    switch (o.kind) {
      case K::none:
        op('N');
        break;
      case K::boolean:
        op(o.b ? 0x88 : 0x89);
        break;
      case K::integer:
        write_int(o.i);
        break;
      case K::real: {
        op('G');
        le<uint64_t>(__builtin_bswap64(std::bit_cast<uint64_t>(o.d)));
        break;
      }
      case K::string:
        write_string(o.s);
        break;
      case K::bytes:
        NNX_CHECK(o.s.size() <= UINT32_MAX, ErrorKind::usage, "write_pth: bytes too long");
        op('B');
        le<uint32_t>(uint32_t(o.s.size()));
        buf_.append(o.s);
        break;
      case K::list:
        op(']');
        for (size_t k = 0; k < o.items.size(); k += kBatch) {
          size_t n = std::min(kBatch, o.items.size() - k);
          if (n > 1) op('(');
          for (size_t j = k; j < k + n; ++j) write(*o.items[j]);
          op(n > 1 ? 'e' : 'a');
        }
        break;
      case K::tuple:
        if (o.items.empty()) {
          op(')');
        } else {
          if (o.items.size() > 3) op('(');
          for (const auto& c : o.items) write(*c);
          op(o.items.size() > 3 ? 't' : uint8_t(0x84 + o.items.size()));
        }
        break;
      case K::dict:
      case K::ordered_dict:
        if (o.kind == K::dict) {
          op('}');
        } else {
          write_empty_ordered_dict();
        }
        for (size_t k = 0; k < o.entries.size(); k += kBatch) {
          size_t n = std::min(kBatch, o.entries.size() - k);
          if (n > 1) op('(');
          for (size_t j = k; j < k + n; ++j) {
            write(*o.entries[j].first);
            write(*o.entries[j].second);
          }
          op(n > 1 ? 'u' : 's');
        }
        break;
      case K::tensor:
        write_tensor(o);
        break;
    }
  }

  std::string buf_;
  uint32_t next_memo_ = 0;
  std::unordered_map<std::string, uint32_t> globals_;
  std::map<std::pair<const Storage*, DType>, size_t> record_index_;
  std::vector<RecordPlan> records_;
  std::unordered_map<const py::Object*, TensorPlan> plans_;
};

}  // namespace

Pickled pickle(const py::Object& top) {
  return Pickler().run(top);
}

}  // namespace nnx::pickle
