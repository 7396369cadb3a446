// PyTorch .pth files: a zip archive (stored or deflated, zip64) holding <top>/data.pkl, a
// protocol-2 pickle restricted to the data subset of ARCH_FORMAT.md section 1, and the tensor
// bytes in <top>/data/<key>. The writer produces files torch.load(weights_only=True) accepts.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "importer/pyobject.h"

namespace nnx {

// Reads a .pth file. Throws Error(io) if it cannot be read, Error(format) naming the path and
// what is wrong (truncated archive, unknown opcode, global outside the allowed set, storage
// past its end, an element count that overflows...). Tensors sharing a storage share memory.
py::ObjectPtr read_pth(const std::string& path);
py::ObjectPtr parse_pth(const void* data, size_t size, const std::string& name_for_errors);

// Writes `top` (tensors anywhere inside dicts, lists, tuples) as a .pth that torch.load reads,
// atomically: a temporary file renamed when complete. The archive's top folder is named after
// the file's stem, as torch.save does.
void write_pth(const std::string& path, const py::Object& top);

}  // namespace nnx
