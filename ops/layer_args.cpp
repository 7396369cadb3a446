// Argument helpers shared by the layer ops (see layer_args.h).
#include "ops/layer_args.h"

#include "nnx/error.h"
#include "nnx/op.h"

namespace nnx::layer_args {

std::array<int64_t, 2> int_pair(const Args& args, std::string_view name, int64_t fallback,
                                bool accept_single) {
  const Value* value = args.get(name);
  if (value == nullptr || value->is_none()) return {fallback, fallback};
  if (value->is_int()) return {value->as_int(), value->as_int()};
  if (accept_single && value->is_sequence() && value->items().size() == 1 &&
      value->items()[0].is_int())
    return {value->items()[0].as_int(), value->items()[0].as_int()};
  if (value->is_sequence() && value->items().size() == 2 && value->items()[0].is_int() &&
      value->items()[1].is_int())
    return {value->items()[0].as_int(), value->items()[1].as_int()};
  args.bad_type(
      name, accept_single ? "an int or a tuple of one or two ints" : "an int or a pair of ints");
}

void expect_at_least(std::string_view op, std::string_view name, std::array<int64_t, 2> values,
                     int64_t minimum) {
  if (values[0] >= minimum && values[1] >= minimum) return;
  fail(ErrorKind::format, op, ": ", name, " must be at least ", minimum, ", got ",
       op_util::tuple_repr(values));
}

void check_factory_kwargs(const Args& args, std::string_view op) {
  if (const Value* device = args.get("device"); device != nullptr && !device->is_none())
    fail(ErrorKind::unsupported, op, ": device=", device->repr(),
         " is not supported: the executor places every op on its device; leave device unset");
  if (const Value* dtype = args.get("dtype"); dtype != nullptr && !dtype->is_none()) {
    bool float32 =
        dtype->is_text() && (dtype->as_text() == "torch.float32" ||
                             dtype->as_text() == "torch.float" || dtype->as_text() == "float32");
    if (!float32)
      fail(ErrorKind::unsupported, op, ": dtype=", dtype->repr(),
           " is not supported: parameters are float32 (dtype=torch.float32 or None)");
  }
}

}  // namespace nnx::layer_args
