// .pth files: ties the zip archive (importer/zip.h) to the restricted unpickler and pickler, and
// turns persistent storage ids into nnx::Storage blocks shared by the tensors that view them.
#include "importer/pth.h"

#include <cstring>
#include <filesystem>

#include "importer/pickle_reader.h"
#include "importer/pickle_writer.h"
#include "importer/zip.h"
#include "nnx/error.h"
#include "runtime/mapped_file.h"

namespace nnx {

namespace {

void byteswap_elements(uint8_t* p, size_t nbytes, size_t elem) {
  for (size_t k = 0; k + elem <= nbytes; k += elem) {
    for (size_t a = 0, b = elem - 1; a < b; ++a, --b) std::swap(p[k + a], p[k + b]);
  }
}

}  // namespace

py::ObjectPtr parse_pth(const void* data, size_t size, const std::string& name,
                        std::shared_ptr<const void> owner) {
  static const uint8_t kEmpty = 0;
  if (!data) data = &kEmpty, size = 0;
  const auto* bytes = static_cast<const uint8_t*>(data);
  // Files from torch.save before PyTorch 1.6 are bare pickles (magic number, then metadata).
  if (size >= 2 && bytes[0] == 0x80 && bytes[1] <= 5) {
    fail(ErrorKind::format, name,
         ": this is a legacy (pre-1.6, non-zip) torch.save file; load it with PyTorch and save "
         "it again with a current version");
  }
  zip::Reader archive(data, size, name);
  if (archive.entries().empty()) fail(ErrorKind::format, name, ": the zip archive is empty");
  // The top folder is whatever the first entry lives in: torch.save names it after the file.
  const std::string& first = archive.entries().front().name;
  size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) {
    fail(ErrorKind::format, name, ": the archive's first entry '", first,
         "' is not inside a top folder; a .pth holds <top>/data.pkl");
  }
  const std::string top = first.substr(0, slash);
  const zip::Entry* pkl = archive.find(top + "/data.pkl");
  if (!pkl) {
    fail(ErrorKind::format, name, ": no '", top, "/data.pkl' in the archive (",
         archive.entries().size(), " entries, the first is '", first, "')");
  }

  bool big_endian = false;
  if (const zip::Entry* order = archive.find(top + "/byteorder")) {
    if (order->uncompressed_size > 16) {
      fail(ErrorKind::format, name, ": '", order->name, "' has ", order->uncompressed_size,
           " bytes; expected 'little' or 'big'");
    }
    std::string value = archive.read(*order);
    if (value == "big") {
      big_endian = true;
    } else if (value != "little") {
      fail(ErrorKind::format, name, ": '", order->name, "' says '", value,
           "'; expected 'little' or 'big'");
    }
  }

  pickle::StorageLoader loader = [&](const std::string& key, DType dtype, int64_t numel) {
    std::string entry_name = top + "/data/" + key;
    const zip::Entry* e = archive.find(entry_name);
    if (!e) {
      fail(ErrorKind::format, name, ": the pickle refers to storage '", key,
           "' but the archive has no '", entry_name, "'");
    }
    size_t elem = dtype_size(dtype);
    uint64_t expected = 0;
    if (__builtin_mul_overflow(uint64_t(numel), uint64_t(elem), &expected) ||
        expected != e->uncompressed_size) {
      fail(ErrorKind::format, name, ": '", entry_name, "' holds ", e->uncompressed_size,
           " bytes, but the pickle declares it as ", numel, " ", dtype_name(dtype), " elements (",
           elem, " bytes each)");
    }
    // In place: the bytes as they lie in the archive, when nothing has to change in them.
    const uint8_t* stored = archive.stored_bytes(*e);
    if (owner && e->method == 0 && (!big_endian || elem == 1) && dtype != DType::boolean &&
        reinterpret_cast<uintptr_t>(stored) % elem == 0) {
      archive.check_crc(*e, stored, size_t(expected));
      return borrowed_storage(stored, size_t(expected), owner);
    }
    std::shared_ptr<Storage> storage = Storage::allocate(size_t(expected), Device::cpu());
    auto* p = static_cast<uint8_t*>(storage->data());
    archive.extract(*e, p, size_t(expected));
    if (big_endian && elem > 1) byteswap_elements(p, size_t(expected), elem);
    // Bytes other than 0 and 1 are not valid C++ bools.
    if (dtype == DType::boolean) {
      for (size_t k = 0; k < expected; ++k) p[k] = p[k] != 0;
    }
    return storage;
  };

  std::string pkl_bytes = archive.read(*pkl);
  return pickle::unpickle(pkl_bytes.data(), pkl_bytes.size(), loader,
                          name + " (" + pkl->name + ")");
}

py::ObjectPtr read_pth(const std::string& path, bool in_place) {
  std::shared_ptr<const MappedFile> file = MappedFile::open(path);
  return parse_pth(file->data(), file->size(), path,
                   in_place ? std::shared_ptr<const void>(file) : nullptr);
}

void write_pth(const std::string& path, const py::Object& top) {
  pickle::Pickled pickled = pickle::pickle(top);
  std::string stem = std::filesystem::path(path).stem().string();
  if (stem.empty()) stem = "archive";
  zip::write_file_atomically(path, [&](const zip::Writer::Sink& sink) {
    zip::Writer archive(sink, 64);
    archive.add(stem + "/data.pkl", pickled.bytes.data(), pickled.bytes.size());
    archive.add(stem + "/byteorder", "little", 6);
    for (const pickle::StorageRecord& r : pickled.storages) {
      const char* base = static_cast<const char*>(r.storage->data());
      archive.add(stem + "/data/" + r.key, r.nbytes ? base + r.byte_offset : "", r.nbytes);
    }
    archive.add(stem + "/version", "3\n", 2);
    archive.finish();
  });
}

}  // namespace nnx
