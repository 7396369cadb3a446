// safetensors files: an 8-byte little-endian header length, a JSON header mapping names to
// {dtype, shape, data_offsets}, then the bytes.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nnx/tensor.h"

namespace nnx {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

NamedTensors read_safetensors(const std::string& path);
// The same from bytes in memory; messages name `name_for_errors`.
NamedTensors parse_safetensors(const void* data, size_t size, const std::string& name_for_errors);
// Written atomically (temporary name, then rename); keys in the given order.
void write_safetensors(const std::string& path, const NamedTensors& tensors);

}  // namespace nnx
