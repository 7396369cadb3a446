// IDX arrays (nnx/data.h): magic, element type, dimensions, body length; gzip-compressed too.
#include "fuzz_util.h"
#include "nnx/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nnx::Tensor t = nnx::parse_idx(data, size, "fuzz.idx");
    bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    if (!gz && t.nbytes() > size)
      nnx::fuzz::violated("an array larger than the file", t.shape().str());
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
