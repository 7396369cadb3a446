// Shared by the libFuzzer targets: each feeds the fuzzer's bytes to one parser and catches
// nnx::Error, the expected outcome for bad input. Anything else (another exception, a crash, a
// sanitizer report, a hang, an allocation over -malloc_limit_mb) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "nnx/error.h"

namespace nnx {
// runtime/allocator.cpp, fuzz builds only: the largest single CPU allocation allowed; above it
// the allocator throws Error(device), as it does when memory runs out.
extern size_t fuzz_allocation_limit;
}  // namespace nnx

namespace nnx::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// With NNX_FUZZ_VERBOSE=1 in the environment, prints why an input was refused: for checking
// that seeds get past the first checks (`fuzz_json corpus/fuzz_json/*` runs each file once).
inline void refused(const Error& e) {
  static const bool verbose = [] {
    const char* v = std::getenv("NNX_FUZZ_VERBOSE");
    return v && *v && std::string_view(v) != "0";
  }();
  if (verbose) std::fprintf(stderr, "refused: %s\n", e.message().c_str());
}

// A property that must hold for every input: a failure is a finding.
[[noreturn]] inline void violated(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz property violated: %s\n%s\n", what, detail.c_str());
  std::abort();
}

}  // namespace nnx::fuzz
