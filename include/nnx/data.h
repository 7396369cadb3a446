// Training data in memory: arrays from .npy files or the IDX format of MNIST-style data sets
// (optionally gzip-compressed), paired into samples and targets and cut into batches.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "nnx/tensor.h"

namespace nnx {

// Reads an IDX file (magic 0x0000TTNN: type ubyte/sbyte/short/int/float/double, NN dims,
// big-endian sizes), plain or gzip-compressed (.gz, told by content). Keeps the element type
// (u8 data stays u8 where the dtype exists, else widened to i32/i64); throws Error(format)
// naming the file on a bad magic, a truncated body or trailing bytes.
NNX_API Tensor read_idx(const std::string& path);
// The same from bytes in memory (gzip-compressed or not); messages name `name`.
NNX_API Tensor parse_idx(const void* data, size_t size, const std::string& name);

// A .npy or IDX file, told apart by content.
NNX_API Tensor read_array(const std::string& path);

// Samples and their targets: `x` float32 with the sample index first (N,C,H,W; N,H,W images
// get C=1), `y` int64 class labels (N or N,H,W) or float32 targets.
struct Dataset {
  Tensor x, y;
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
};

// Loads X and Y (.npy or IDX). X becomes float32 (IDX bytes are scaled to [0, 1]); Y stays
// int64 when it is integral (class labels), else float32. Throws Error naming the files when
// their first dimensions differ or X has fewer than 3 or more than 4 dims.
NNX_API Dataset load_dataset(const std::string& x_path, const std::string& y_path);

// Rows `index` of `t` (along dim 0), in that order, as a new contiguous tensor.
NNX_API Tensor gather_rows(const Tensor& t, std::span<const int64_t> index);

}  // namespace nnx
