// safetensors (importer/safetensors.h): the header length, the JSON header, offsets and shapes.
#include "fuzz_util.h"
#include "importer/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nnx::NamedTensors tensors = nnx::parse_safetensors(data, size, "fuzz.safetensors");
    for (const auto& [name, t] : tensors) {
      if (t.nbytes() > size) nnx::fuzz::violated("a tensor larger than the file", name);
    }
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
