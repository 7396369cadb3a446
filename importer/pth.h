// PyTorch .pth files: a zip archive (stored or deflated, zip64) holding <top>/data.pkl, a
// protocol-2 pickle restricted to the data subset of ARCH_FORMAT.md section 1, and the tensor
// bytes in <top>/data/<key>. The writer produces files torch.load(weights_only=True) accepts.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "importer/pyobject.h"

namespace nnx {

// Reads a .pth file. Throws Error(io) if it cannot be read, Error(format) naming the path and
// what is wrong (truncated archive, unknown opcode, global outside the allowed set, storage
// past its end, an element count that overflows...). Tensors sharing a storage share memory.
//
// `in_place`: the file is mapped and the tensors view it where they can (entries stored, not
// deflated, aligned for their dtype, little-endian, not bool); each storage keeps the mapping
// alive, and the bytes are read-only (see runtime/mapped_file.h for what a file changed under a
// mapping does). Otherwise every tensor is copied out and the file is closed on return.
py::ObjectPtr read_pth(const std::string& path, bool in_place = false);
// The same from bytes in memory. With an `owner` that keeps the bytes alive, storages view them
// in place where they can, as above, and hold `owner`; without one, every storage is a copy.
// Either way every offset is checked against [data, data + size) and every CRC is verified.
py::ObjectPtr parse_pth(const void* data, size_t size, const std::string& name_for_errors,
                        std::shared_ptr<const void> owner = nullptr);

// Writes `top` (tensors anywhere inside dicts, lists, tuples) as a .pth that torch.load reads,
// atomically: a temporary file renamed when complete. The archive's top folder is named after
// the file's stem, as torch.save does.
void write_pth(const std::string& path, const py::Object& top);

}  // namespace nnx
