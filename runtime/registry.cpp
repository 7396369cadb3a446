// The op registry: built-in classes found by name under the format's prefixes, user ops by
// their qualified name.
#include "nnx/registry.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "nnx/error.h"
#include "ops/builtin_ops.h"

namespace nnx {
namespace {

std::mutex user_mutex;
std::map<std::string, OpFactory, std::less<>>& user_ops() {
  static auto* ops = new std::map<std::string, OpFactory, std::less<>>();
  return *ops;
}

// Classes of the original package that this runtime does not implement.
constexpr std::string_view kRefusedPackageClasses[] = {"ModuleWithConstArgs", "MultiWithConst",
                                                       "WithBatchNorm2d",     "Parallel",
                                                       "StaticPruner",        "ResidualPruner"};

// Is `prefix` one under which built-in ops are found (ARCH_FORMAT.md section 6)?
bool is_builtin_prefix(std::string_view prefix) {
  if (prefix.empty() || prefix == "torch.nn" || prefix == "nn_executor.models" ||
      prefix == "nn_executor.pruning.pruners" || prefix == "nnx" || prefix == "nn")
    return true;
  constexpr std::string_view modules = "torch.nn.modules.";
  return prefix.starts_with(modules) && prefix.size() > modules.size() &&
         prefix.find('.', modules.size()) == std::string_view::npos;
}

const BuiltinOp* find_builtin(std::string_view name) {
  for (const auto& op : builtin_ops())
    if (op.name == name) return &op;
  return nullptr;
}

}  // namespace

void register_op(const std::string& qualified_name, OpFactory factory) {
  NNX_CHECK(!qualified_name.empty() && factory, ErrorKind::usage,
            "register_op needs a name and a factory");
  std::lock_guard<std::mutex> lock(user_mutex);
  user_ops()[qualified_name] = std::move(factory);
}

bool unregister_op(const std::string& qualified_name) {
  std::lock_guard<std::mutex> lock(user_mutex);
  return user_ops().erase(qualified_name) > 0;
}

std::shared_ptr<Op> make_op(const Call& call) {
  std::string_view cls = call.class_name();
  std::string_view prefix = call.prefix();
  OpFactory user;
  {
    std::lock_guard<std::mutex> lock(user_mutex);
    auto it = user_ops().find(call.name);
    if (it != user_ops().end()) user = it->second;
  }
  if (user) {
    std::shared_ptr<Op> op = user(call);
    NNX_CHECK(op != nullptr, ErrorKind::usage, "the factory of user op '", call.name,
              "' returned no op");
    return op;
  }
  if (is_builtin_prefix(prefix)) {
    if (const BuiltinOp* op = find_builtin(cls)) return op->make(call);
    for (auto refused : kRefusedPackageClasses)
      NNX_CHECK(cls != refused, ErrorKind::unsupported, "'", call.name,
                "' is a class of the original package that this runtime does not support");
    fail(ErrorKind::unsupported, "unknown op '", call.name, "'");
  }
  fail(ErrorKind::unsupported, "user op '", call.name,
       "' is not registered (register it with nnx::register_op before loading)");
}

std::vector<std::string> builtin_op_names() {
  std::vector<std::string> names;
  for (const auto& op : builtin_ops()) names.emplace_back(op.name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace nnx
