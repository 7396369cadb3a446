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
// Written atomically (temporary name, then rename); keys in the given order.
void write_safetensors(const std::string& path, const NamedTensors& tensors);

}  // namespace nnx
