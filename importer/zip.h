// Zip archives as PyTorch uses them: a bounds-checked reader over a buffer (stored and deflated
// entries, zip64, CRC checked) and a writer of stored entries aligned as torch.save aligns them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/mapped_file.h"

namespace nnx::zip {

struct Entry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // where the (compressed) bytes start, from the local header
};

// Parses the central directory on construction. The buffer must outlive the reader. Every
// problem is an Error(format) whose message starts with `name_for_errors`.
class Reader {
 public:
  Reader(const void* data, size_t size, std::string name_for_errors);

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(std::string_view name) const;
  const std::string& name_for_errors() const { return name_; }

  // Decompresses `entry` into dst (exactly entry.uncompressed_size bytes) and checks its CRC.
  void extract(const Entry& entry, void* dst, size_t dst_size) const;
  std::string read(const Entry& entry) const;
  // The entry's bytes as the archive holds them (compressed if deflated): inside the buffer,
  // compressed_size of them, checked when the directory was parsed.
  const uint8_t* stored_bytes(const Entry& entry) const { return data_ + entry.data_offset; }
  // Checks the CRC of bytes of `entry` held elsewhere (its stored bytes, used in place).
  void check_crc(const Entry& entry, const void* bytes, size_t size) const;

 private:
  [[noreturn]] void fail_format(const std::string& what) const;
  void parse();
  const uint8_t* data_;
  size_t size_;
  std::string name_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// Writes an archive through `sink`, which receives the bytes in order (a file, a buffer).
class Writer {
 public:
  using Sink = std::function<void(const void* data, size_t size)>;
  enum class Method { stored, deflated };

  // `alignment`: the data of every entry starts at a multiple of it (torch.save uses 64);
  // `force_zip64`: write zip64 records even where 32-bit fields would do (for tests).
  explicit Writer(Sink sink, size_t alignment = 64, bool force_zip64 = false);

  void add(const std::string& name, const void* data, size_t size, Method method = Method::stored);
  // Writes the central directory; no entry can be added afterwards.
  void finish();
  uint64_t bytes_written() const { return offset_; }

 private:
  void emit(const void* data, size_t size);
  Sink sink_;
  size_t alignment_;
  bool force_zip64_;
  bool finished_ = false;
  uint64_t offset_ = 0;
  std::vector<Entry> entries_;
};

// Files are read through runtime/mapped_file.h; the old name stays for existing callers.
using MappedFile = nnx::MappedFile;

// CRC-32 as zip uses it (zlib's).
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

// Writes `path` atomically: `produce` writes the content through the sink into
// "<path>.tmp-<pid>", which is renamed to `path` when complete and removed on any failure.
void write_file_atomically(const std::string& path,
                           const std::function<void(const Writer::Sink&)>& produce);
// The same for bytes already in memory.
void write_file_atomically(const std::string& path, std::string_view bytes);

}  // namespace nnx::zip
