// CUDA data movement the ops share: gathering a strided tensor into a contiguous one (Permute,
// non-contiguous inputs) and copying blocks of rows (Cat, Split).
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnx::cuda {

inline constexpr int kMaxCopyDims = 8;

// dst (contiguous, `shape`) = the elements of src at element strides `strides` (src points at
// the first element, offset applied), for elements of 1, 2, 4 or 8 bytes; ndim <= kMaxCopyDims.
// Throws Error(unsupported) for other element sizes or ranks.
void strided_copy(const void* src, const int64_t* shape, const int64_t* strides, int ndim,
                  size_t element_size, void* dst, void* stream);

// `rows` rows of row_bytes each: dst + r * dst_pitch <- src + r * src_pitch (bytes), device to
// device on `stream` (cudaMemcpy2DAsync; one cudaMemcpyAsync when the rows are
// back to back on both sides).
void copy_rows(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch, int64_t rows,
               int64_t row_bytes, void* stream);

}  // namespace nnx::cuda
