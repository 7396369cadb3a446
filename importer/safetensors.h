// safetensors files: an 8-byte little-endian header length, a JSON header mapping names to
// {dtype, shape, data_offsets}, then the bytes.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nnx/tensor.h"

namespace nnx {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// `in_place`: the file is mapped and each tensor aligned for its dtype (and not bool) views it,
// keeping the mapping alive; the bytes are read-only (runtime/mapped_file.h says what a file
// changed under a mapping does). Otherwise every tensor is copied and the file closed on return.
NamedTensors read_safetensors(const std::string& path, bool in_place = false);
// The same from bytes in memory; messages name `name_for_errors`. With an `owner` that keeps the
// bytes alive, tensors view them in place where they can and hold `owner`; without, they copy.
NamedTensors parse_safetensors(const void* data, size_t size, const std::string& name_for_errors,
                               std::shared_ptr<const void> owner = nullptr);
// Written atomically (temporary name, then rename); keys in the given order.
void write_safetensors(const std::string& path, const NamedTensors& tensors);

}  // namespace nnx
