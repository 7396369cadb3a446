// Pickles py::Object trees the way torch.save does (protocol 2, tensors as _rebuild_tensor_v2
// over persistent storages), using only opcodes torch.load(weights_only=True) understands.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "importer/pyobject.h"

namespace nnx::pickle {

// One storage to write as data/<key>: `nbytes` bytes of `storage` from `byte_offset` on.
struct StorageRecord {
  std::string key;
  std::shared_ptr<Storage> storage;  // on the CPU
  size_t byte_offset = 0;
  size_t nbytes = 0;
  DType dtype = DType::f32;
};

struct Pickled {
  std::string bytes;                    // data.pkl
  std::vector<StorageRecord> storages;  // in key order "0", "1", ...
};

// Tensors viewing one nnx::Storage (with one dtype) share one record, which covers only the
// elements they view. Throws Error(usage) for what cannot be pickled (strings that are not
// UTF-8, nesting deeper than 1000, tensors of more than 8 dims...).
Pickled pickle(const py::Object& top);

}  // namespace nnx::pickle
