// NumPy .npy (nnx/npy.h): magic, version, the header dict literal, dtype, shape, data length.
#include "fuzz_util.h"
#include "nnx/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nnx::Tensor t = nnx::parse_npy(data, size, "fuzz.npy");
    if (t.nbytes() > size) nnx::fuzz::violated("an array larger than the file", t.shape().str());
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
