// NumPy .npy files (format 1.0-3.0): read any little-endian C- or Fortran-order array of a
// supported dtype; write C order. Writing goes to a temporary name renamed when complete.
#pragma once

#include <string>

#include "nnx/tensor.h"

namespace nnx {

NNX_API Tensor read_npy(const std::string& path);
NNX_API Tensor parse_npy(const void* data, size_t size, const std::string& name_for_errors);
NNX_API void write_npy(const std::string& path, const Tensor& tensor);

}  // namespace nnx
