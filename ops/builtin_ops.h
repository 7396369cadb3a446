// The table of built-in ops (ops/builtin_ops.cpp), read by the registry.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "nnx/op.h"
#include "nnx/value.h"

namespace nnx {

struct BuiltinOp {
  std::string_view name;  // canonical class name, e.g. "Conv2d"
  std::shared_ptr<Op> (*make)(const Call& call);
};

const std::vector<BuiltinOp>& builtin_ops();

}  // namespace nnx
