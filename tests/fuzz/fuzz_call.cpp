// Constructor strings (parse_call), then the op they name built from them (make_op: argument
// binding and checking), and channel expressions (eval_int_expr), over a few locals.
#include "fuzz_util.h"
#include "importer/call_parser.h"
#include "nnx/registry.h"

namespace {

const nnx::Locals& locals() {
  static const nnx::Locals table = [] {
    using nnx::Value;
    nnx::Locals l;
    l["C"] = Value::integer(64);
    l["n"] = Value::integer(3);
    l["ratio"] = Value::real(0.5);
    l["mode"] = Value::string("nearest");
    l["ks"] = Value::tuple({Value::integer(3), Value::integer(3)});
    l["flag"] = Value::boolean(true);
    l["nothing"] = Value();
    return l;
  }();
  return table;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Layers of any declared size are legitimate: past this, the allocator throws Error(device).
  nnx::fuzz_allocation_limit = size_t(64) << 20;
  std::string_view text = nnx::fuzz::as_text(data, size);
  try {
    nnx::Call call = nnx::parse_call(text, locals());
    for (const nnx::Value& v : call.args) (void)v.repr();
    for (const auto& [k, v] : call.kwargs) (void)v.repr();
    try {
      std::shared_ptr<nnx::Op> op = nnx::make_op(call);
      (void)op->repr();
    } catch (const nnx::Error& e) {
      nnx::fuzz::refused(e);
    }
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  try {
    (void)nnx::eval_int_expr(text, locals());
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
