// The environment switches that turn a kernel path off for measuring against it
// (NNX_CONV_WINOGRAD=0, NNX_CONV_STEM=0, ...): on unless set to "0". Callers read them once.
#pragma once

#include <cstdlib>
#include <string_view>

namespace nnx::cpu {

inline bool env_switch(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || std::string_view(v) != "0";
}

}  // namespace nnx::cpu
