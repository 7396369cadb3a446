// Maps class names in model descriptions to op factories. Built-in ops are found by class name
// under the prefixes of the format (torch.nn., nn_executor.models., nnx., none); any other
// prefix names a user op that an application registers here before loading.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nnx/op.h"
#include "nnx/value.h"

namespace nnx {

using OpFactory = std::function<std::shared_ptr<Op>(const Call& call)>;

// Registers a user op under its qualified name ("own_module.YOLO"); replaces an earlier one.
NNX_API void register_op(const std::string& qualified_name, OpFactory factory);
NNX_API bool unregister_op(const std::string& qualified_name);

// Creates the op a call names. Throws Error(unsupported) for an unknown class, a refused class
// of the original package, or an unregistered user op; Error(format) for bad arguments.
NNX_API std::shared_ptr<Op> make_op(const Call& call);

// Names of the built-in ops (canonical class names), for documentation and tests.
NNX_API std::vector<std::string> builtin_op_names();

// Loads a user-op plugin: a shared library built against these headers with NNX_PLUGIN
// (nnx/plugin.h), whose entry point registers its ops here. It stays loaded for the life of the
// process (its ops' code must outlive every model that uses them). Throws Error(io) if it
// cannot be loaded, Error(unsupported) if it is not an nnx plugin or was built for another
// version of the library.
NNX_API void load_plugin(const std::string& path);

}  // namespace nnx
