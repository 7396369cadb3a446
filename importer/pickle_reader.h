// The unpickler of .pth data.pkl files: protocol 2 (and the data opcodes of protocols 3-5),
// restricted to the globals of ARCH_FORMAT.md section 1. It builds data, never executes code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "importer/pyobject.h"

namespace nnx::pickle {

// Supplies the bytes of persistent id ('storage', <type>, key, location, numel): a CPU storage
// of exactly numel * dtype_size(dtype) bytes, or an Error. Called once per key.
using StorageLoader =
    std::function<std::shared_ptr<Storage>(const std::string& key, DType dtype, int64_t numel)>;

// Throws Error(format) naming `name_for_errors`, the opcode offset and what is wrong.
py::ObjectPtr unpickle(const void* data, size_t size, const StorageLoader& load_storage,
                       const std::string& name_for_errors);

}  // namespace nnx::pickle
