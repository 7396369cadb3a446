// The JSON dialect (importer/json.h), then the description reader (build_graph) on what it
// parsed. Also checks that json::dump writes what json::parse reads back to the same document.
#include "fuzz_util.h"
#include "importer/description.h"
#include "importer/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Layers of any declared size are legitimate in a description: past this, the allocator
  // throws Error(device) instead of libFuzzer reporting the malloc.
  nnx::fuzz_allocation_limit = size_t(64) << 20;
  nnx::json::Value doc;
  try {
    doc = nnx::json::parse(nnx::fuzz::as_text(data, size), "fuzz.json");
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
    return 0;
  }
  std::string written = nnx::json::dump(doc);
  try {
    std::string rewritten = nnx::json::dump(nnx::json::parse(written, "dump"));
    if (rewritten != written) {
      nnx::fuzz::violated("json::dump output reads back differently",
                          written + "\n--- then ---\n" + rewritten);
    }
  } catch (const nnx::Error& e) {
    nnx::fuzz::violated("json::dump output does not parse", e.message() + "\n" + written);
  }
  try {
    nnx::build_graph(doc, "fuzz.json");
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
