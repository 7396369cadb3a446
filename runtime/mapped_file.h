// A file's bytes for the importers, read-only: memory-mapped (MAP_PRIVATE, PROT_READ) where the
// system allows, else read into memory. Tensors may view the bytes in place: their storage
// holds the file alive (borrowed_storage), so a model's weights outlive every other reference.
//
// A mapped file that another process truncates or rewrites in place while mapped makes the
// next access to a vanished page raise SIGBUS: load with LoadOptions::map_weights = false
// (which copies the weights and unmaps the file before returning) where that can happen.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "nnx/allocator.h"

namespace nnx {

class MappedFile {
 public:
  enum class Mode {
    map,   // mmap, falling back to read() where the file cannot be mapped
    read,  // read() into memory: no mapping, so nothing can change under it
  };

  // Throws Error(io) naming the path if it cannot be opened, is not a regular file, or cannot
  // be read.
  explicit MappedFile(const std::string& path, Mode mode = Mode::map);
  static std::shared_ptr<const MappedFile> open(const std::string& path, Mode mode = Mode::map);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const void* data() const { return data_; }  // null for an empty file
  size_t size() const { return size_; }
  bool mapped() const { return mapped_; }  // false: read into memory (64-byte aligned)

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
};

// Hands back to the kernel the resident pages of [data, data + nbytes) that lie wholly inside a
// live read-only file mapping (a MappedFile's), so they stop counting toward the process's
// memory; a later read faults them in again from the file, unchanged. Bytes anywhere else
// (memory that is not a mapped file's, or a file read into memory) are left as they are.
// Returns the bytes released. For weights a model keeps but an executor no longer reads (a
// convolution's, once folded with its BatchNorm and rearranged for the kernels).
size_t release_mapped_pages(const void* data, size_t nbytes);

// A CPU storage over [data, data + nbytes), bytes that `owner` keeps alive; the storage holds
// `owner` until it dies. The bytes are never written through it (a mapping is read-only) and
// never go back to any allocator.
std::shared_ptr<Storage> borrowed_storage(const void* data, size_t nbytes,
                                          std::shared_ptr<const void> owner);

}  // namespace nnx
