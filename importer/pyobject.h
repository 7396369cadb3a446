// The data subset of Python objects a .pth pickle may hold: what the reader produces and the
// writer consumes. Nothing is ever executed; tensors are materialised from the archive.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nnx/tensor.h"

namespace nnx::py {

struct Object;
using ObjectPtr = std::shared_ptr<const Object>;

struct Object {
  enum class Kind {
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
    tensor
  };
  Kind kind = Kind::none;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string s;                                         // string / bytes
  std::vector<ObjectPtr> items;                          // list / tuple
  std::vector<std::pair<ObjectPtr, ObjectPtr>> entries;  // dict / ordered_dict, in insertion order
  Tensor tensor;
  bool requires_grad = false;  // a torch.nn.Parameter (written back as _rebuild_parameter)

  static ObjectPtr none();
  static ObjectPtr boolean(bool v);
  static ObjectPtr integer(int64_t v);
  static ObjectPtr real(double v);
  static ObjectPtr string(std::string v);
  static ObjectPtr list(std::vector<ObjectPtr> v);
  static ObjectPtr tuple(std::vector<ObjectPtr> v);
  static ObjectPtr dict(std::vector<std::pair<ObjectPtr, ObjectPtr>> v, bool ordered = false);
  static ObjectPtr make_tensor(Tensor t, bool requires_grad = false);

  bool is_dict() const { return kind == Kind::dict || kind == Kind::ordered_dict; }
  bool is_sequence() const { return kind == Kind::list || kind == Kind::tuple; }
  // For a dict with string keys: the value under `key`, or nullptr.
  const Object* get(std::string_view key) const;
  const char* kind_name() const;
};

}  // namespace nnx::py
