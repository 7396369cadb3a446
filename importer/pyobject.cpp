// Constructors and lookups of the data-only Python objects read from and written to .pth files.
#include "importer/pyobject.h"

namespace nnx::py {

namespace {
std::shared_ptr<Object> make(Object::Kind kind) {
  auto o = std::make_shared<Object>();
  o->kind = kind;
  return o;
}
}  // namespace

ObjectPtr Object::none() {
  // One shared None: it is immutable, and state dicts hold many.
  static const ObjectPtr kNone = make(Kind::none);
  return kNone;
}

ObjectPtr Object::boolean(bool v) {
  auto o = make(Kind::boolean);
  o->b = v;
  return o;
}

ObjectPtr Object::integer(int64_t v) {
  auto o = make(Kind::integer);
  o->i = v;
  return o;
}

ObjectPtr Object::real(double v) {
  auto o = make(Kind::real);
  o->d = v;
  return o;
}

ObjectPtr Object::string(std::string v) {
  auto o = make(Kind::string);
  o->s = std::move(v);
  return o;
}

ObjectPtr Object::list(std::vector<ObjectPtr> v) {
  auto o = make(Kind::list);
  o->items = std::move(v);
  return o;
}

ObjectPtr Object::tuple(std::vector<ObjectPtr> v) {
  auto o = make(Kind::tuple);
  o->items = std::move(v);
  return o;
}

ObjectPtr Object::dict(std::vector<std::pair<ObjectPtr, ObjectPtr>> v, bool ordered) {
  auto o = make(ordered ? Kind::ordered_dict : Kind::dict);
  o->entries = std::move(v);
  return o;
}

ObjectPtr Object::make_tensor(Tensor t, bool requires_grad) {
  auto o = make(Kind::tensor);
  o->tensor = std::move(t);
  o->requires_grad = requires_grad;
  return o;
}

const Object* Object::get(std::string_view key) const {
  if (!is_dict()) return nullptr;
  for (const auto& [k, v] : entries) {
    if (k && k->kind == Kind::string && k->s == key) return v.get();
  }
  return nullptr;
}

const char* Object::kind_name() const {
  switch (kind) {
    case Kind::none:
      return "None";
    case Kind::boolean:
      return "bool";
    case Kind::integer:
      return "int";
    case Kind::real:
      return "float";
    case Kind::string:
      return "str";
    case Kind::bytes:
      return "bytes";
    case Kind::list:
      return "list";
    case Kind::tuple:
      return "tuple";
    case Kind::dict:
      return "dict";
    case Kind::ordered_dict:
      return "OrderedDict";
    case Kind::tensor:
      return "Tensor";
  }
  return "?";
}

}  // namespace nnx::py
