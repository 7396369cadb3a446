// The zip reader (importer/zip.h) over the bytes: the central directory, then every entry
// extracted (inflate, CRC). Sizes are bounded by the reader itself (deflate's ratio).
#include "fuzz_util.h"
#include "importer/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nnx::zip::Reader archive(data, size, "fuzz.zip");
    for (const nnx::zip::Entry& e : archive.entries()) {
      if (archive.find(e.name) != &e) nnx::fuzz::violated("find() misses an entry", e.name);
      try {
        std::string bytes = archive.read(e);
        if (bytes.size() != e.uncompressed_size) {
          nnx::fuzz::violated("read() returned the wrong size", e.name);
        }
      } catch (const nnx::Error& e) {
        nnx::fuzz::refused(e);
      }
    }
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
