// The restricted unpickler (importer/pickle_reader.h) on the bytes as a data.pkl, with a storage
// loader that hands out zeroed storages as a .pth would, refusing what no small file could hold.
#include <cstring>

#include "fuzz_util.h"
#include "importer/pickle_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nnx::pickle::StorageLoader loader = [](const std::string& key, nnx::DType dtype, int64_t numel) {
    // A real archive must hold the bytes: the .pth loader checks numel against the entry.
    uint64_t nbytes = 0;
    if (numel < 0 || __builtin_mul_overflow(uint64_t(numel), nnx::dtype_size(dtype), &nbytes) ||
        nbytes > (uint64_t(1) << 20)) {
      nnx::fail(nnx::ErrorKind::format, "fuzz.pkl: no storage '", key, "' of ", numel,
                " elements in the archive");
    }
    auto storage = nnx::Storage::allocate(size_t(nbytes), nnx::Device::cpu());
    if (nbytes > 0) std::memset(storage->data(), 0, size_t(nbytes));
    return storage;
  };
  try {
    nnx::py::ObjectPtr top = nnx::pickle::unpickle(data, size, loader, "fuzz.pkl");
    (void)top->kind_name();
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
