// Mapping files read-only, with read() as the fallback, and storages that borrow their bytes.
#include "runtime/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "nnx/error.h"

namespace nnx {
namespace {

// Closes the descriptor on every path out of the constructor.
struct FileDescriptor {
  int fd;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

// The live mappings, [begin, end), for release_mapped_pages.
struct Mappings {
  std::mutex mutex;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
};
Mappings& mappings() {
  static Mappings* m = new Mappings;  // never destroyed: files may outlive static destruction
  return *m;
}

}  // namespace

MappedFile::MappedFile(const std::string& path, Mode mode) {
  FileDescriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) fail(ErrorKind::io, "cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(file.fd, &st) != 0)
    fail(ErrorKind::io, "cannot read '", path, "': ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(ErrorKind::io, "cannot read '", path, "': not a regular file");
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) return;
  if (mode == Mode::map) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd, 0);
    if (p != MAP_FAILED) {
      data_ = p;
      mapped_ = true;
      Mappings& m = mappings();
      std::lock_guard<std::mutex> lock(m.mutex);
      m.ranges.emplace_back(reinterpret_cast<uintptr_t>(p), reinterpret_cast<uintptr_t>(p) + size_);
      return;
    }
    // Some file systems cannot map: read the file instead.
  }
  size_t padded =
      (size_ + Allocator::kAlignment - 1) / Allocator::kAlignment * Allocator::kAlignment;
  void* buffer = std::aligned_alloc(Allocator::kAlignment, padded);
  if (buffer == nullptr)
    fail(ErrorKind::device, "cannot read '", path, "': out of memory for its ", size_, " bytes");
  size_t done = 0;
  while (done < size_) {
    ssize_t n = ::read(file.fd, static_cast<char*>(buffer) + done, size_ - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      std::free(buffer);
      if (n == 0)
        fail(ErrorKind::io, "cannot read '", path, "': it ended after ", done, " of ", size_,
             " bytes (changed while read?)");
      fail(ErrorKind::io, "cannot read '", path, "': ", std::strerror(err));
    }
    done += size_t(n);
  }
  data_ = buffer;
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path, Mode mode) {
  return std::make_shared<const MappedFile>(path, mode);
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  if (mapped_) {
    {
      Mappings& m = mappings();
      std::lock_guard<std::mutex> lock(m.mutex);
      const auto begin = reinterpret_cast<uintptr_t>(data_);
      std::erase_if(m.ranges, [begin](const auto& r) { return r.first == begin; });
    }
    ::munmap(data_, size_);
  } else {
    std::free(data_);
  }
}

size_t release_mapped_pages(const void* data, size_t nbytes) {
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t end = begin + nbytes;
  Mappings& m = mappings();
  std::lock_guard<std::mutex> lock(m.mutex);  // the mapping stays while its pages go
  for (const auto& r : m.ranges) {
    if (begin < r.first || end > r.second) continue;
    // Whole pages only: a neighbour's bytes on a shared page stay resident.
    const uintptr_t lo = (begin + page - 1) / page * page, hi = end / page * page;
    if (hi <= lo) return 0;
    // A private read-only file mapping is never written: its dropped pages read back the file.
    if (::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) != 0) return 0;
    return hi - lo;
  }
  return 0;
}

std::shared_ptr<Storage> borrowed_storage(const void* data, size_t nbytes,
                                          std::shared_ptr<const void> owner) {
  NNX_CHECK(owner != nullptr, ErrorKind::usage, "borrowed_storage needs the owner of the bytes");
  static const char kEmpty = 0;
  if (data == nullptr) data = &kEmpty;  // an empty tensor at the end of a file
  return Storage::wrap(const_cast<void*>(data), nbytes, Device::cpu(),
                       [owner = std::move(owner)](void*) {});
}

}  // namespace nnx
