// A restricted unpickler for .pth files: data opcodes only, an allow-list of globals, and every
// length, memo index and stack access checked, so that hostile input ends in an Error.
#include "importer/pickle_reader.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "nnx/error.h"

namespace nnx::pickle {

namespace {

constexpr int kMaxDepth = 1000;  // nesting of the resulting objects (and of their destruction)

enum class Global : uint8_t {
  none,
  ordered_dict,
  rebuild_tensor_v2,
  rebuild_parameter,
  storage_type
};

struct Node;
using NodePtr = std::shared_ptr<Node>;

// The unpickler's working values: py::Object's kinds plus the callables and storages that only
// exist while the pickle runs. Containers are mutable (APPEND, SETITEMS act through the memo).
struct Node {
  enum class Kind : uint8_t {
    none,
    boolean,
    integer,
    real,
    string,
    bytes,
    list,
    tuple,
    dict,
    ordered_dict,
    tensor,
    global,
    storage
  };
  explicit Node(Kind k) : kind(k) {}
  ~Node();
  Kind kind;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string s;  // string, bytes, storage key
  std::vector<NodePtr> items;
  std::vector<std::pair<NodePtr, NodePtr>> entries;
  std::unordered_map<uint64_t, size_t> key_index;  // dict: key id -> position in entries
  Tensor tensor;
  bool requires_grad = false;
  Global global = Global::none;
  DType dtype = DType::f32;  // storage types and storages
  std::shared_ptr<Storage> storage;
  int64_t numel = 0;    // storage
  uint64_t key_id = 0;  // as a dict key: 0 not yet computed, kUnhashable
  int tuple_depth = 0;  // tuples: how many tuples deep this one nests
  // Conversion to py::Object.
  uint8_t visit = 0;  // 0 not seen, 1 converting, 2 done
  py::ObjectPtr converted;
};

constexpr uint64_t kUnhashable = ~uint64_t(0);
constexpr int kMaxKeyDepth = 100;

// A pickle of a few bytes per level can chain a million nested lists; destroying such a chain
// recursively would overflow the stack. The outermost dying node collects its descendants here
// and releases them one at a time.
thread_local std::vector<NodePtr>* graveyard = nullptr;

Node::~Node() {
  if (items.empty() && entries.empty()) return;
  auto bury = [](Node& n, std::vector<NodePtr>& grave) {
    for (auto& c : n.items) grave.push_back(std::move(c));
    for (auto& [k, v] : n.entries) {
      grave.push_back(std::move(k));
      grave.push_back(std::move(v));
    }
  };
  if (graveyard) {
    bury(*this, *graveyard);
    return;
  }
  std::vector<NodePtr> grave;
  graveyard = &grave;
  bury(*this, grave);
  while (!grave.empty()) {
    NodePtr n = std::move(grave.back());
    grave.pop_back();
    n.reset();
  }
  graveyard = nullptr;
}

const char* kind_name(const Node& n) {
  switch (n.kind) {
    case Node::Kind::none:
      return "None";
    case Node::Kind::boolean:
      return "bool";
    case Node::Kind::integer:
      return "int";
    case Node::Kind::real:
      return "float";
    case Node::Kind::string:
      return "str";
    case Node::Kind::bytes:
      return "bytes";
    case Node::Kind::list:
      return "list";
    case Node::Kind::tuple:
      return "tuple";
    case Node::Kind::dict:
      return "dict";
    case Node::Kind::ordered_dict:
      return "OrderedDict";
    case Node::Kind::tensor:
      return "Tensor";
    case Node::Kind::global:
      switch (n.global) {
        case Global::ordered_dict:
          return "the class collections.OrderedDict";
        case Global::rebuild_tensor_v2:
          return "the function torch._utils._rebuild_tensor_v2";
        case Global::rebuild_parameter:
          return "the function torch._utils._rebuild_parameter";
        case Global::storage_type:
          return "a torch storage type";
        case Global::none:
          break;
      }
      return "a global";
    case Node::Kind::storage:
      return "a storage";
  }
  return "?";
}

const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(':
      return "MARK";
    case '.':
      return "STOP";
    case '0':
      return "POP";
    case '1':
      return "POP_MARK";
    case '2':
      return "DUP";
    case 'F':
      return "FLOAT";
    case 'I':
      return "INT";
    case 'J':
      return "BININT";
    case 'K':
      return "BININT1";
    case 'L':
      return "LONG";
    case 'M':
      return "BININT2";
    case 'N':
      return "NONE";
    case 'P':
      return "PERSID";
    case 'Q':
      return "BINPERSID";
    case 'R':
      return "REDUCE";
    case 'S':
      return "STRING";
    case 'T':
      return "BINSTRING";
    case 'U':
      return "SHORT_BINSTRING";
    case 'V':
      return "UNICODE";
    case 'X':
      return "BINUNICODE";
    case 'a':
      return "APPEND";
    case 'b':
      return "BUILD";
    case 'c':
      return "GLOBAL";
    case 'd':
      return "DICT";
    case '}':
      return "EMPTY_DICT";
    case 'e':
      return "APPENDS";
    case 'g':
      return "GET";
    case 'h':
      return "BINGET";
    case 'i':
      return "INST";
    case 'j':
      return "LONG_BINGET";
    case 'l':
      return "LIST";
    case ']':
      return "EMPTY_LIST";
    case 'o':
      return "OBJ";
    case 'p':
      return "PUT";
    case 'q':
      return "BINPUT";
    case 'r':
      return "LONG_BINPUT";
    case 's':
      return "SETITEM";
    case 't':
      return "TUPLE";
    case ')':
      return "EMPTY_TUPLE";
    case 'u':
      return "SETITEMS";
    case 'G':
      return "BINFLOAT";
    case 0x80:
      return "PROTO";
    case 0x81:
      return "NEWOBJ";
    case 0x82:
      return "EXT1";
    case 0x83:
      return "EXT2";
    case 0x84:
      return "EXT4";
    case 0x85:
      return "TUPLE1";
    case 0x86:
      return "TUPLE2";
    case 0x87:
      return "TUPLE3";
    case 0x88:
      return "NEWTRUE";
    case 0x89:
      return "NEWFALSE";
    case 0x8a:
      return "LONG1";
    case 0x8b:
      return "LONG4";
    case 'B':
      return "BINBYTES";
    case 'C':
      return "SHORT_BINBYTES";
    case 0x8c:
      return "SHORT_BINUNICODE";
    case 0x8d:
      return "BINUNICODE8";
    case 0x8e:
      return "BINBYTES8";
    case 0x8f:
      return "EMPTY_SET";
    case 0x90:
      return "ADDITEMS";
    case 0x91:
      return "FROZENSET";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x93:
      return "STACK_GLOBAL";
    case 0x94:
      return "MEMOIZE";
    case 0x95:
      return "FRAME";
    case 0x96:
      return "BYTEARRAY8";
    case 0x97:
      return "NEXT_BUFFER";
    case 0x98:
      return "READONLY_BUFFER";
  }
  return nullptr;
}

std::string hex_byte(uint8_t b) {
  const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[b >> 4] + digits[b & 15];
}

// Names from the file go into messages: keep them printable and short.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += char(c);
    } else {
      out += "\\x";
      out += hex_byte(c).substr(2);
    }
  }
  if (s.size() > 200) out += "...";
  return out;
}

bool storage_dtype(std::string_view name, DType& dtype) {
  static const std::pair<std::string_view, DType> kTypes[] = {
      {"FloatStorage", DType::f32},     {"DoubleStorage", DType::f64}, {"HalfStorage", DType::f16},
      {"BFloat16Storage", DType::bf16}, {"LongStorage", DType::i64},   {"IntStorage", DType::i32},
      {"ShortStorage", DType::i16},     {"CharStorage", DType::i8},    {"ByteStorage", DType::u8},
      {"BoolStorage", DType::boolean}};
  for (const auto& [n, t] : kTypes) {
    if (n == name) {
      dtype = t;
      return true;
    }
  }
  return false;
}

class Unpickler {
 public:
  Unpickler(const void* data, size_t size, const StorageLoader& loader, const std::string& name)
      : p_(static_cast<const uint8_t*>(data)), size_(size), loader_(loader), name_(name) {}

  ~Unpickler() {
    // Break reference cycles (a list appended to itself) and deep chains before the nodes die:
    // once every container is emptied, no node's destruction recurses.
    std::vector<NodePtr> keep;
    for (auto& weak : containers_) {
      if (NodePtr n = weak.lock()) {
        for (auto& c : n->items) keep.push_back(std::move(c));
        for (auto& [k, v] : n->entries) {
          keep.push_back(std::move(k));
          keep.push_back(std::move(v));
        }
        n->items.clear();
        n->entries.clear();
        keep.push_back(std::move(n));
      }
    }
    stack_.clear();
    memo_.clear();
    keep.clear();
  }

  py::ObjectPtr run();

 private:
  template <class... Parts>
  [[noreturn]] void error(const Parts&... parts) const {
    fail(ErrorKind::format, name_, ": ", parts..., " (", op_name(), " at offset ", op_pos_, ")");
  }
  std::string op_name() const {
    const char* n = opcode_name(op_);
    return n ? std::string(n) : hex_byte(op_);
  }

  // ---- input ----
  const uint8_t* take(uint64_t n) {
    if (n > size_ - pos_) {
      fail(ErrorKind::format, name_, ": truncated pickle: ", op_name(), " at offset ", op_pos_,
           " needs ", n, " more bytes but only ", size_ - pos_, " remain");
    }
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  template <class T>
  T read_le() {
    T v;
    std::memcpy(&v, take(sizeof v), sizeof v);
    return v;
  }
  std::string_view read_line() {
    const uint8_t* start = p_ + pos_;
    const void* nl = std::memchr(start, '\n', size_ - pos_);
    if (!nl) error("truncated pickle: no end of line");
    size_t n = static_cast<const uint8_t*>(nl) - start;
    pos_ += n + 1;
    return {reinterpret_cast<const char*>(start), n};
  }

  // ---- stack ----
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(NodePtr n) { stack_.push_back(std::move(n)); }
  NodePtr pop() {
    if (stack_.size() <= base()) error("pickle stack underflow");
    NodePtr n = std::move(stack_.back());
    stack_.pop_back();
    return n;
  }
  NodePtr& top() {
    if (stack_.size() <= base()) error("pickle stack underflow");
    return stack_.back();
  }
  std::vector<NodePtr> pop_mark() {
    if (marks_.empty()) error("pickle has no MARK to pop");
    size_t b = marks_.back();
    marks_.pop_back();
    std::vector<NodePtr> items(std::make_move_iterator(stack_.begin() + b),
                               std::make_move_iterator(stack_.end()));
    stack_.resize(b);
    return items;
  }

  // ---- values ----
  NodePtr make(Node::Kind kind) {
    auto n = std::make_shared<Node>(kind);
    if (kind == Node::Kind::list || kind == Node::Kind::tuple || kind == Node::Kind::dict ||
        kind == Node::Kind::ordered_dict) {
      containers_.push_back(n);
    }
    return n;
  }
  NodePtr make_int(int64_t v) {
    NodePtr n = make(Node::Kind::integer);
    n->i = v;
    return n;
  }
  NodePtr make_string(std::string_view s, Node::Kind kind = Node::Kind::string) {
    NodePtr n = make(kind);
    n->s.assign(s);
    return n;
  }
  NodePtr make_tuple(std::vector<NodePtr> items) {
    NodePtr n = make(Node::Kind::tuple);
    for (const NodePtr& c : items) n->tuple_depth = std::max(n->tuple_depth, c->tuple_depth);
    n->tuple_depth += 1;
    n->items = std::move(items);
    return n;
  }
  std::string_view read_bytes(uint64_t n) {
    return {reinterpret_cast<const char*>(take(n)), size_t(n)};
  }
  NodePtr decode_long(std::string_view bytes);

  uint64_t key_id(Node& n);
  void set_item(Node& dict, NodePtr key, NodePtr value);
  void check_dict(const Node& n, const char* what) {
    if (n.kind != Node::Kind::dict && n.kind != Node::Kind::ordered_dict) {
      error(what, " needs a dict under its items, found ", kind_name(n));
    }
  }

  NodePtr global(std::string_view module, std::string_view name);
  NodePtr persistent_load(const Node& pid);
  NodePtr reduce(const Node& callable, const Node& args);
  NodePtr rebuild_tensor(const Node& args);
  py::ObjectPtr convert(Node& n, int depth);

  int64_t as_int(const Node& n, const char* what) {
    if (n.kind == Node::Kind::integer) return n.i;
    if (n.kind == Node::Kind::boolean) return n.b;
    error(what, " must be an int, found ", kind_name(n));
  }

  const uint8_t* p_;
  size_t size_;
  const StorageLoader& loader_;
  const std::string& name_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  std::vector<NodePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, NodePtr> memo_;
  std::vector<std::weak_ptr<Node>> containers_;
  std::unordered_map<std::string, uint64_t> key_ids_;  // canonical dict-key encodings
  std::unordered_map<std::string, NodePtr> storages_;  // by key
};

NodePtr Unpickler::decode_long(std::string_view bytes) {
  // Little-endian two's complement; only values that fit int64 are data we can hold.
  size_t n = bytes.size();
  if (n == 0) return make_int(0);
  bool negative = static_cast<uint8_t>(bytes[n - 1]) & 0x80;
  for (size_t k = 8; k < n; ++k) {
    if (static_cast<uint8_t>(bytes[k]) != (negative ? 0xff : 0x00)) {
      error("integer of ", n, " bytes does not fit in 64 bits");
    }
  }
  uint64_t u = negative ? ~uint64_t(0) : 0;
  for (size_t k = 0; k < std::min<size_t>(n, 8); ++k) {
    u &= ~(uint64_t(0xff) << (8 * k));
    u |= uint64_t(static_cast<uint8_t>(bytes[k])) << (8 * k);
  }
  if (n > 8 && bool(u >> 63) != negative) error("integer of ", n, " bytes does not fit in 64 bits");
  return make_int(static_cast<int64_t>(u));
}

// Python dict semantics need equal keys to collide (1 == 1.0 == True). Every hashable node gets
// an id from its canonical encoding, computed once per node, so inserting stays linear in the
// input however the pickle reuses keys.
uint64_t Unpickler::key_id(Node& n) {
  if (n.key_id != 0) return n.key_id;
  std::string enc;
  auto put_int = [&](int64_t v) {
    enc = "i";
    enc.append(reinterpret_cast<const char*>(&v), sizeof v);
  };
  switch (n.kind) {
    case Node::Kind::none:
      enc = "n";
      break;
    case Node::Kind::boolean:
      put_int(n.b);
      break;
    case Node::Kind::integer:
      put_int(n.i);
      break;
    case Node::Kind::real:
      if (std::isfinite(n.d) && n.d == std::trunc(n.d) && n.d >= -9.2e18 && n.d <= 9.2e18) {
        put_int(static_cast<int64_t>(n.d));
      } else {
        uint64_t bits = std::bit_cast<uint64_t>(n.d);
        enc = "f";
        enc.append(reinterpret_cast<const char*>(&bits), sizeof bits);
      }
      break;
    case Node::Kind::string:
      enc = "s" + n.s;
      break;
    case Node::Kind::bytes:
      enc = "b" + n.s;
      break;
    case Node::Kind::tensor: {
      // Tensors hash by identity in Python.
      const Node* self = &n;
      enc = "t";
      enc.append(reinterpret_cast<const char*>(&self), sizeof self);
      break;
    }
    case Node::Kind::tuple:
      // Tuple items are fixed once made, so the id is final; the recursion is bounded by the
      // nesting depth recorded when the tuple was made.
      if (n.tuple_depth > kMaxKeyDepth) {
        error("a dict key of tuples nested ", n.tuple_depth, " deep (at most ", kMaxKeyDepth,
              " supported)");
      }
      enc = "(";
      for (const NodePtr& c : n.items) {
        uint64_t id = key_id(*c);
        if (id == kUnhashable) return n.key_id = kUnhashable;
        enc.append(reinterpret_cast<const char*>(&id), sizeof id);
      }
      break;
    default:
      return n.key_id = kUnhashable;
  }
  auto [it, inserted] = key_ids_.emplace(std::move(enc), key_ids_.size() + 1);
  return n.key_id = it->second;
}

void Unpickler::set_item(Node& dict, NodePtr key, NodePtr value) {
  uint64_t id = key_id(*key);
  if (id == kUnhashable) error("unhashable dict key of type ", kind_name(*key));
  auto [it, inserted] = dict.key_index.emplace(id, dict.entries.size());
  if (inserted) {
    dict.entries.emplace_back(std::move(key), std::move(value));
  } else {
    dict.entries[it->second].second = std::move(value);  // Python keeps the first position
  }
}

NodePtr Unpickler::global(std::string_view module, std::string_view name) {
  NodePtr n = make(Node::Kind::global);
  if (module == "collections" && name == "OrderedDict") {
    n->global = Global::ordered_dict;
  } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    n->global = Global::rebuild_tensor_v2;
  } else if (module == "torch._utils" && name == "_rebuild_parameter") {
    n->global = Global::rebuild_parameter;
  } else if (module == "torch" && storage_dtype(name, n->dtype)) {
    n->global = Global::storage_type;
  } else {
    error("global '", printable(module), ".", printable(name),
          "' is not allowed (a .pth may only use collections.OrderedDict, "
          "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and "
          "torch.<Float|Double|Half|BFloat16|Long|Int|Short|Char|Byte|Bool>Storage)");
  }
  return n;
}

NodePtr Unpickler::persistent_load(const Node& pid) {
  if (pid.kind != Node::Kind::tuple || pid.items.size() != 5 ||
      pid.items[0]->kind != Node::Kind::string || pid.items[0]->s != "storage") {
    error("persistent id must be a tuple ('storage', type, key, location, numel), found ",
          kind_name(pid),
          pid.kind == Node::Kind::tuple ? " of " + std::to_string(pid.items.size()) + " items"
                                        : std::string());
  }
  const Node& type = *pid.items[1];
  if (type.kind != Node::Kind::global || type.global != Global::storage_type) {
    error("persistent id: the storage type must be a torch.<X>Storage, found ", kind_name(type));
  }
  const Node& key = *pid.items[2];
  if (key.kind != Node::Kind::string)
    error("persistent id: the key must be a str, found ", kind_name(key));
  if (pid.items[3]->kind != Node::Kind::string) {
    error("persistent id: the location must be a str, found ", kind_name(*pid.items[3]));
  }
  int64_t numel = as_int(*pid.items[4], "persistent id: the element count");
  if (numel < 0) error("persistent id: storage '", printable(key.s), "' has ", numel, " elements");

  auto it = storages_.find(key.s);
  if (it != storages_.end()) {
    const Node& s = *it->second;
    if (s.dtype != type.dtype || s.numel != numel) {
      error("storage '", printable(key.s), "' is used as ", dtype_name(type.dtype), "[", numel,
            "] after being used as ", dtype_name(s.dtype), "[", s.numel, "]");
    }
    return it->second;
  }
  NodePtr n = make(Node::Kind::storage);
  n->dtype = type.dtype;
  n->numel = numel;
  n->s = key.s;
  n->storage = loader_(key.s, type.dtype, numel);
  if (!n->storage || n->storage->nbytes() != size_t(numel) * dtype_size(type.dtype)) {
    error("storage '", printable(key.s), "' was not loaded with ", numel, " elements");
  }
  storages_.emplace(key.s, n);
  return n;
}

NodePtr Unpickler::rebuild_tensor(const Node& args) {
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (args.items.size() != 6 && args.items.size() != 7) {
    error("_rebuild_tensor_v2 takes 6 or 7 arguments, found ", args.items.size());
  }
  const Node& st = *args.items[0];
  if (st.kind != Node::Kind::storage) {
    error("_rebuild_tensor_v2: the first argument must be a storage, found ", kind_name(st));
  }
  std::string what = "tensor on storage '" + printable(st.s) + "'";
  int64_t offset = as_int(*args.items[1], "_rebuild_tensor_v2: the storage offset");
  const Node& size = *args.items[2];
  const Node& stride = *args.items[3];
  for (const Node* t : {&size, &stride}) {
    if (t->kind != Node::Kind::tuple && t->kind != Node::Kind::list) {
      error(what, ": size and stride must be tuples, found ", kind_name(*t));
    }
  }
  if (size.items.size() != stride.items.size()) {
    error(what, ": size has ", size.items.size(), " dimensions but stride has ",
          stride.items.size());
  }
  if (size.items.size() > size_t(Shape::kMaxDims)) {
    error(what, ": ", size.items.size(), " dimensions, at most ", Shape::kMaxDims,
          " are supported");
  }
  if (args.items[4]->kind != Node::Kind::boolean && args.items[4]->kind != Node::Kind::integer) {
    error(what, ": requires_grad must be a bool, found ", kind_name(*args.items[4]));
  }
  const Node& hooks = *args.items[5];
  if (hooks.kind != Node::Kind::ordered_dict && hooks.kind != Node::Kind::dict &&
      hooks.kind != Node::Kind::none) {
    error(what, ": backward_hooks must be an OrderedDict, found ", kind_name(hooks));
  }
  Shape shape, strides;
  int64_t numel = 1, last = 0;  // last: index of the last element viewed, relative to offset
  bool overflow = false;
  for (size_t k = 0; k < size.items.size(); ++k) {
    int64_t n = as_int(*size.items[k], "a tensor size");
    int64_t s = as_int(*stride.items[k], "a tensor stride");
    if (n < 0 || s < 0) {
      error(what, ": negative size or stride (size ", n, ", stride ", s, " in dimension ", k, ")");
    }
    shape.push_back(n);
    strides.push_back(s);
    overflow |= __builtin_mul_overflow(numel, n, &numel);
    int64_t reach;
    if (n > 0) {
      overflow |= __builtin_mul_overflow(n - 1, s, &reach);
      overflow |= __builtin_add_overflow(last, reach, &last);
    }
  }
  if (overflow) {
    error(what, ": the element count or extent of size ", shape.str(), " with stride ",
          strides.str(), " overflows int64");
  }
  shape.numel();  // the same check the rest of the runtime relies on
  if (offset < 0) error(what, ": negative storage offset ", offset);
  int64_t end = 0;  // one past the last element viewed
  if (numel > 0 && (__builtin_add_overflow(offset, last, &end) || end == INT64_MAX)) {
    error(what, ": storage offset ", offset, " plus the extent of size ", shape.str(),
          " overflows int64");
  }
  end = numel > 0 ? end + 1 : offset;
  if (end > st.numel) {
    error(what, ": storage offset ", offset, " with size ", shape.str(), " and stride ",
          strides.str(), " needs ", end, " elements, but the storage has ", st.numel);
  }
  NodePtr n = make(Node::Kind::tensor);
  n->tensor = Tensor::from_storage(st.storage, shape, strides, st.dtype, offset);
  return n;
}

NodePtr Unpickler::reduce(const Node& callable, const Node& args) {
  if (args.kind != Node::Kind::tuple)
    error("REDUCE needs an argument tuple, found ", kind_name(args));
  if (callable.kind != Node::Kind::global) error("REDUCE cannot call ", kind_name(callable));
  switch (callable.global) {
    case Global::ordered_dict: {
      NodePtr d = make(Node::Kind::ordered_dict);
      if (args.items.empty()) return d;
      const Node& src = *args.items[0];
      if (args.items.size() != 1 ||
          (src.kind != Node::Kind::list && src.kind != Node::Kind::tuple)) {
        error("OrderedDict() takes no arguments or one list of pairs");
      }
      for (const NodePtr& pair : src.items) {
        if ((pair->kind != Node::Kind::tuple && pair->kind != Node::Kind::list) ||
            pair->items.size() != 2) {
          error("OrderedDict(): each item must be a (key, value) pair, found ", kind_name(*pair));
        }
        set_item(*d, pair->items[0], pair->items[1]);
      }
      return d;
    }
    case Global::rebuild_tensor_v2:
      return rebuild_tensor(args);
    case Global::rebuild_parameter: {
      // (data, requires_grad, backward_hooks)
      if (args.items.size() != 3 || args.items[0]->kind != Node::Kind::tensor) {
        error("_rebuild_parameter takes (tensor, requires_grad, backward_hooks)");
      }
      NodePtr n = make(Node::Kind::tensor);
      n->tensor = args.items[0]->tensor;
      n->requires_grad = true;
      return n;
    }
    case Global::storage_type:
      error("a storage type cannot be called; storages come from persistent ids");
    case Global::none:
      break;
  }
  error("REDUCE cannot call ", kind_name(callable));
}

py::ObjectPtr Unpickler::convert(Node& n, int depth) {
  if (n.visit == 2) return n.converted;
  if (n.visit == 1) {
    fail(ErrorKind::format, name_, ": the pickled ", kind_name(n),
         " contains itself; recursive structures are not supported");
  }
  if (depth > kMaxDepth) {
    fail(ErrorKind::format, name_, ": objects nested deeper than ", kMaxDepth,
         " levels are not supported");
  }
  n.visit = 1;
  py::ObjectPtr out;
  switch (n.kind) {
    case Node::Kind::none:
      out = py::Object::none();
      break;
    case Node::Kind::boolean:
      out = py::Object::boolean(n.b);
      break;
    case Node::Kind::integer:
      out = py::Object::integer(n.i);
      break;
    case Node::Kind::real:
      out = py::Object::real(n.d);
      break;
    case Node::Kind::string:
      out = py::Object::string(n.s);
      break;
    case Node::Kind::bytes: {
      auto o = std::make_shared<py::Object>();
      o->kind = py::Object::Kind::bytes;
      o->s = n.s;
      out = o;
      break;
    }
    case Node::Kind::list:
    case Node::Kind::tuple: {
      std::vector<py::ObjectPtr> items;
      items.reserve(n.items.size());
      for (const NodePtr& c : n.items) items.push_back(convert(*c, depth + 1));
      out = n.kind == Node::Kind::list ? py::Object::list(std::move(items))
                                       : py::Object::tuple(std::move(items));
      break;
    }
    case Node::Kind::dict:
    case Node::Kind::ordered_dict: {
      std::vector<std::pair<py::ObjectPtr, py::ObjectPtr>> entries;
      entries.reserve(n.entries.size());
      for (const auto& [k, v] : n.entries) {
        entries.emplace_back(convert(*k, depth + 1), convert(*v, depth + 1));
      }
      out = py::Object::dict(std::move(entries), n.kind == Node::Kind::ordered_dict);
      break;
    }
    case Node::Kind::tensor:
      out = py::Object::make_tensor(n.tensor, n.requires_grad);
      break;
    case Node::Kind::global:
    case Node::Kind::storage:
      fail(ErrorKind::format, name_, ": ", kind_name(n),
           " appears as a value in the data; only dicts, lists, tuples, scalars and tensors may");
  }
  n.visit = 2;
  n.converted = out;
  return out;
}

py::ObjectPtr Unpickler::run() {
  while (true) {
    if (pos_ >= size_) {
      fail(ErrorKind::format, name_, ": truncated pickle: it ends at offset ", size_,
           " without a STOP opcode");
    }
    op_pos_ = pos_;
    op_ = p_[pos_++];
    switch (op_) {
      case 0x80: {  // PROTO
        uint8_t proto = read_le<uint8_t>();
        if (proto > 5) error("unsupported pickle protocol ", int(proto));
        break;
      }
      case 0x95:  // FRAME: a length prefix for buffered reading; we already have every byte
        read_le<uint64_t>();
        break;
      case '.': {  // STOP
        NodePtr result = pop();
        return convert(*result, 0);
      }
      case '(':
        marks_.push_back(stack_.size());
        break;
      case '0':  // POP: with nothing above the mark, Python's unpickler drops the mark instead
        if (stack_.size() > base()) {
          stack_.pop_back();
        } else {
          pop_mark();
        }
        break;
      case '1':
        pop_mark();
        break;
      case '2': {
        NodePtr t = top();
        push(std::move(t));
        break;
      }
      case 'N':
        push(make(Node::Kind::none));
        break;
      case 0x88:
      case 0x89: {
        NodePtr n = make(Node::Kind::boolean);
        n->b = op_ == 0x88;
        push(std::move(n));
        break;
      }
      case 'I': {  // INT: decimal text; "01"/"00" are protocol 0's True/False
        std::string_view line = read_line();
        if (line == "01" || line == "00") {
          NodePtr n = make(Node::Kind::boolean);
          n->b = line == "01";
          push(std::move(n));
          break;
        }
        int64_t v = 0;
        auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
        if (ec != std::errc() || end != line.data() + line.size() || line.empty()) {
          error("bad INT '", printable(line), "'");
        }
        push(make_int(v));
        break;
      }
      case 'J':
        push(make_int(read_le<int32_t>()));
        break;
      case 'K':
        push(make_int(read_le<uint8_t>()));
        break;
      case 'M':
        push(make_int(read_le<uint16_t>()));
        break;
      case 0x8a: {
        uint8_t n = read_le<uint8_t>();
        push(decode_long(read_bytes(n)));
        break;
      }
      case 0x8b: {
        int32_t n = read_le<int32_t>();
        if (n < 0) error("negative LONG4 length ", n);
        push(decode_long(read_bytes(uint32_t(n))));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        uint64_t bits = __builtin_bswap64(read_le<uint64_t>());
        NodePtr n = make(Node::Kind::real);
        n->d = std::bit_cast<double>(bits);
        push(std::move(n));
        break;
      }
      // Strings. BINSTRING/SHORT_BINSTRING are Python 2 str, which torch.load decodes as text.
      case 0x8c:
      case 'U':
        push(make_string(read_bytes(read_le<uint8_t>())));
        break;
      case 'X':
        push(make_string(read_bytes(read_le<uint32_t>())));
        break;
      case 0x8d:
        push(make_string(read_bytes(read_le<uint64_t>())));
        break;
      case 'T': {
        int32_t n = read_le<int32_t>();
        if (n < 0) error("negative BINSTRING length ", n);
        push(make_string(read_bytes(uint32_t(n))));
        break;
      }
      case 'C':
        push(make_string(read_bytes(read_le<uint8_t>()), Node::Kind::bytes));
        break;
      case 'B':
        push(make_string(read_bytes(read_le<uint32_t>()), Node::Kind::bytes));
        break;
      case 0x8e:
        push(make_string(read_bytes(read_le<uint64_t>()), Node::Kind::bytes));
        break;
      case ']':
        push(make(Node::Kind::list));
        break;
      case 'l': {
        NodePtr n = make(Node::Kind::list);
        n->items = pop_mark();
        push(std::move(n));
        break;
      }
      case 'a': {
        NodePtr item = pop();
        Node& list = *top();
        if (list.kind != Node::Kind::list) error("APPEND to a ", kind_name(list), ", not a list");
        list.items.push_back(std::move(item));
        break;
      }
      case 'e': {
        std::vector<NodePtr> items = pop_mark();
        Node& list = *top();
        if (list.kind != Node::Kind::list) error("APPENDS to a ", kind_name(list), ", not a list");
        for (auto& item : items) list.items.push_back(std::move(item));
        break;
      }
      case ')':
        push(make_tuple({}));
        break;
      case 't':
        push(make_tuple(pop_mark()));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        size_t n = op_ - 0x84;
        if (stack_.size() < base() + n) error("pickle stack underflow");
        std::vector<NodePtr> items(std::make_move_iterator(stack_.end() - n),
                                   std::make_move_iterator(stack_.end()));
        stack_.resize(stack_.size() - n);
        push(make_tuple(std::move(items)));
        break;
      }
      case '}':
        push(make(Node::Kind::dict));
        break;
      case 'd': {
        std::vector<NodePtr> items = pop_mark();
        if (items.size() % 2) error("DICT with an odd number of items (", items.size(), ")");
        NodePtr d = make(Node::Kind::dict);
        for (size_t k = 0; k < items.size(); k += 2) set_item(*d, items[k], items[k + 1]);
        push(std::move(d));
        break;
      }
      case 's': {
        NodePtr value = pop();
        NodePtr key = pop();
        Node& d = *top();
        check_dict(d, "SETITEM");
        set_item(d, std::move(key), std::move(value));
        break;
      }
      case 'u': {
        std::vector<NodePtr> items = pop_mark();
        Node& d = *top();
        check_dict(d, "SETITEMS");
        if (items.size() % 2) error("SETITEMS with an odd number of items (", items.size(), ")");
        for (size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
        break;
      }
      case 'c': {
        std::string_view module = read_line();
        std::string_view name = read_line();
        push(global(module, name));
        break;
      }
      case 0x93: {
        NodePtr name = pop();
        NodePtr module = pop();
        if (name->kind != Node::Kind::string || module->kind != Node::Kind::string) {
          error("STACK_GLOBAL needs two strings, found ", kind_name(*module), " and ",
                kind_name(*name));
        }
        push(global(module->s, name->s));
        break;
      }
      case 'R': {
        NodePtr args = pop();
        NodePtr& callable = top();
        callable = reduce(*callable, *args);
        break;
      }
      case 'b': {
        NodePtr state = pop();
        Node& inst = *top();
        // OrderedDict state is its __dict__, i.e. _metadata: not data we keep.
        if (inst.kind != Node::Kind::ordered_dict) {
          error("BUILD on a ", kind_name(inst), " (only an OrderedDict's metadata is accepted)");
        }
        if (state->kind != Node::Kind::dict && state->kind != Node::Kind::ordered_dict &&
            state->kind != Node::Kind::none && state->kind != Node::Kind::tuple) {
          error("BUILD of an OrderedDict with a ", kind_name(*state), " state");
        }
        break;
      }
      case 'q':
        memo_[read_le<uint8_t>()] = top();
        break;
      case 'r':
        memo_[read_le<uint32_t>()] = top();
        break;
      case 0x94: {
        NodePtr t = top();
        memo_[memo_.size()] = std::move(t);
        break;
      }
      case 'h':
      case 'j': {
        uint64_t index = op_ == 'h' ? read_le<uint8_t>() : read_le<uint32_t>();
        auto it = memo_.find(index);
        if (it == memo_.end()) error("memo key ", index, " was never stored");
        push(it->second);
        break;
      }
      case 'Q': {
        NodePtr pid = pop();
        push(persistent_load(*pid));
        break;
      }
      case 'P': {
        NodePtr pid = make_string(read_line());
        push(persistent_load(*pid));
        break;
      }
      default: {
        const char* known = opcode_name(op_);
        if (known) {
          error("pickle opcode ", known, " (", hex_byte(op_), ") is not supported in .pth data");
        }
        fail(ErrorKind::format, name_, ": unknown pickle opcode ", hex_byte(op_), " at offset ",
             op_pos_);
      }
    }
  }
}

}  // namespace

py::ObjectPtr unpickle(const void* data, size_t size, const StorageLoader& load_storage,
                       const std::string& name_for_errors) {
  static const uint8_t kEmpty = 0;
  Unpickler u(data ? data : &kEmpty, data ? size : 0, load_storage, name_for_errors);
  return u.run();
}

}  // namespace nnx::pickle
