// The registry lines of the built-in ops: canonical class name -> factory. Adding an op adds
// its line here (and its declaration above the table).
#include "ops/builtin_ops.h"

namespace nnx {

// ---- layers: convolution, linear, normalisation, pooling, resampling
// ---- elementwise, activations, structure, constants, pruners

const std::vector<BuiltinOp>& builtin_ops() {
  static const std::vector<BuiltinOp> table = {
      // ---- layers
      // ---- elementwise and the rest
  };
  return table;
}

}  // namespace nnx
